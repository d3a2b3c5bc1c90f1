"""Run one API prompt in a fresh ComfyUI process on an existing host base folder (the training
resume test uses it). Usage: python run_fresh.py BASE_DIR PROMPT.json"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

import torch  # noqa: E402

from host import train_kit  # noqa: E402
from host.conftest import Host  # noqa: E402

torch.set_num_threads(1)
base, prompt_file = sys.argv[1:3]
host = Host(base)
host.nodes.NODE_CLASS_MAPPINGS["LoRALabTestTinyEncoders"] = train_kit.LoRALabTestTinyEncoders
with open(prompt_file, encoding="utf-8") as f:
    ok, _, messages = host.run_prompt(json.load(f))
print("RESULT " + json.dumps({"ok": ok, "errors": [m[1] for m in messages if m[0] == "execution_error"]}, default=str))
