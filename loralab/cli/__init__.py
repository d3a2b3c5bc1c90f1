"""``loralab`` command line: scripting LoRA Lab without ComfyUI."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .. import __version__
from .convert import add_convert
from .demo import add_demo
from .inspect import add_inspect
from .library import add_library
from .merge import MERGE_COMMANDS
from .stack_report import add_stack_report
from .train import add_train


#: every sub-command registers itself here
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_demo, add_inspect, *MERGE_COMMANDS, add_convert,
                                                                  add_stack_report, add_library, add_train]


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
