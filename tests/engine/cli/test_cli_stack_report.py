"""``loralab stack-report`` end to end: two SD1.5 LoRAs where the second undoes the first, text and
JSON output, the proposal read back by the spec parser, the heat map file, and the refusals."""
import json
import os
import subprocess
import sys

import torch
from PIL import Image

from loralab.blocks.spec import parse_block_weights
from loralab.files.safetensors import save_tensors
from loralab_testkit import REPO, fixture_tensors, materialize


def run(*args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "loralab", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_stack_report_text_json_chart_and_refusals(tmp):
    t = fixture_tensors("kohya_sd15_lora", rank=2, seed=1, dtype=torch.float32)
    a = save_tensors(os.path.join(tmp, "a.safetensors"), t)
    # b undoes a wherever a writes: same factors, up negated
    b = save_tensors(os.path.join(tmp, "b.safetensors"),
                     {k: -v if k.endswith("lora_up.weight") else v for k, v in t.items()})
    chart = os.path.join(tmp, "cos.png")
    r = run("stack-report", a, b, "-w", "1", "-w", "0.5", "-b", "", "-b", "M00=0", "--chart", chart, "-q")
    assert r.returncode == 0, r.stderr
    assert "stack report: 2 LoRAs for SD1.x" in r.stdout and "opposed (cos -1.000)" in r.stdout
    assert Image.open(chart).size[0] >= 480

    r = run("stack-report", a, b, "-w", "1", "-w", "0.5", "-b", "", "-b", "M00=0", "--json", "--lower", "0.1", "-q")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == 1 and d["arch"]["id"] == "sd1" and d["thresholds"]["lower"] == 0.1
    fought = {f["block"] for f in d["fights"]}
    assert "IN01" in fought and "M00" not in fought  # b is off on M00: nothing to fight there
    assert all(f["lowered"] == 1 and f["reason"] == "opposed" for f in d["fights"])
    spec = d["loras"][1]["proposed_block_weights"]
    parsed = parse_block_weights(spec, "sd1")
    assert parsed.weight("IN01") == 0.1 * 1.0 and parsed.weight("M00") == 0.0
    assert d["loras"][0]["proposed_block_weights"] == ""

    flux = materialize("kohya_flux_lora", os.path.join(tmp, "flux.safetensors"), rank=2)
    r = run("stack-report", a, flux, "-q")
    assert r.returncode == 1 and "flux.safetensors" in r.stderr and "a.safetensors" in r.stderr
    r = run("stack-report", a, b, "-w", "1", "-q")
    assert r.returncode == 1 and "1 weight given for 2 LoRAs" in r.stderr
    r = run("stack-report", a, b, "--energy", "0", "-q")
    assert r.returncode == 1 and "energy" in r.stderr
