"""``loralab inspect``: the command-line side of :mod:`loralab.ops.inspect`."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import LoRALabError
from .terminal import terminal_safe


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..formats.host_keys import host_rules
    from ..ops.inspect import inspect_lora
    try:
        host = host_rules(args.host)
    except ValueError as e:
        print(terminal_safe(f"error: --host: {e}"), file=sys.stderr)
        return 2
    status = 0
    reports = []
    for path in args.files:
        try:
            report = inspect_lora(path, blocks=args.blocks, hashes=args.hashes, host=host)
        except (LoRALabError, OSError) as e:
            print(terminal_safe(f"error: {e}"), file=sys.stderr)
            status = 1
            continue
        if args.json:
            reports.append(report.to_dict())
        else:
            print(terminal_safe(report.to_text()))
            print()
    if args.json:
        print(json.dumps(reports, indent=1, ensure_ascii=False, allow_nan=False))
    return status


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="what a LoRA is for, what it changes, how it was trained, what is wrong")
    p.add_argument("files", nargs="+", help="LoRA .safetensors files")
    p.add_argument("--json", action="store_true", help="print a JSON list (one report per file) instead of text")
    p.add_argument("--blocks", action="store_true",
                   help="read the tensors: per-block strength and NaN/Inf/all-zero checks")
    p.add_argument("--hashes", action="store_true", help="hash the files (sha256, AutoV2, AutoV3/addnet, legacy)")
    p.add_argument("--host", metavar="VERSION",
                   help="the ComfyUI version whose LoRA loader the dropped-key count emulates (0.3.64, 0.33.0; "
                        "default: the newest known; other versions use the nearest older one)")
    p.set_defaults(func=_cmd_inspect)
