"""``loralab`` command line: scripting LoRA Lab without ComfyUI."""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Callable, Sequence

from .. import __version__
from ..errors import LoRALabError
from .merge import MERGE_COMMANDS


#: what a terminal acts on or shows deceptively: C0/C1 controls (not newline, tab), bidi controls, lone surrogates
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape: key names,
    metadata and file names come from strangers' files."""
    return _TERMINAL_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..ops.inspect import inspect_lora
    status = 0
    reports = []
    for path in args.files:
        try:
            report = inspect_lora(path, blocks=args.blocks, hashes=args.hashes)
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


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="what a LoRA is for, what it changes, how it was trained, what is wrong")
    p.add_argument("files", nargs="+", help="LoRA .safetensors files")
    p.add_argument("--json", action="store_true", help="print a JSON list (one report per file) instead of text")
    p.add_argument("--blocks", action="store_true",
                   help="read the tensors: per-block strength and NaN/Inf/all-zero checks")
    p.add_argument("--hashes", action="store_true", help="hash the files (sha256, AutoV2, AutoV3/addnet, legacy)")
    p.set_defaults(func=_cmd_inspect)


#: every sub-command registers itself here
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_inspect, *MERGE_COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loralab", description="LoRA Lab: inspect, apply, merge and train LoRAs.")
    parser.add_argument("--version", action="version", version=f"loralab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
