"""``loralab convert``: the command-line side of :mod:`loralab.ops.convert` (one file, many, or folders)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import SpecError
from .merge import DTYPE_NAMES, _add_split_qkv_option, _dtype, _guarded, _layout
from .terminal import terminal_safe


@_guarded
def _cmd_convert(args: argparse.Namespace) -> int:
    from ..ops.convert import convert_file, convert_folder
    started = time.monotonic()
    as_trained = args.split_qkv == "as-trained"
    single = len(args.sources) == 1 and not os.path.isdir(args.sources[0])
    if args.output and not single:
        raise SpecError("-o names one output file: give --out-dir for several files or a folder", key="output")
    if not args.output and not args.out_dir:
        raise SpecError("give -o OUTPUT.safetensors (one file) or --out-dir FOLDER", key="output")
    if args.output:
        result = convert_file(args.sources[0], _layout(args), split_qkv_as_trained=as_trained, dtype=_dtype(args.dtype))
        path = result.save(args.output, overwrite=args.overwrite)
        print(terminal_safe(f"{args.sources[0]} -> {path}: {len(result.modules)} modules"))
        return 0
    done = failed = 0
    for c in convert_folder(args.sources, args.out_dir, recursive=args.recursive, suffix=args.suffix,
                            overwrite=args.overwrite, layout=_layout(args), split_qkv_as_trained=as_trained,
                            dtype=_dtype(args.dtype)):
        if c.error is None:
            done += 1
            if not args.quiet:
                print(terminal_safe(f"{c.source} -> {c.output}: {c.modules} modules"))
        else:
            failed += 1
            print(terminal_safe(f"{c.source}: not converted: {c.error}"), file=sys.stderr)
    print(f"converted {done} file(s), {failed} not converted, in {time.monotonic() - started:.1f} s")
    return 1 if failed or not done else 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="rewrite LoRAs of any format into ComfyUI-native kohya keys (files or folders)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="LoRA .safetensors files, or folders of them")
    p.add_argument("-o", "--output", help="the .safetensors file to write (one source file)")
    p.add_argument("--out-dir", help="folder for the converted files (same names; several sources or folders)")
    p.add_argument("-r", "--recursive", action="store_true", help="also convert the files in sub-folders")
    p.add_argument("--suffix", default="", help="added to each output file's name (e.g. _comfy)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="dtype of the written tensors (default: the source's)")
    p.add_argument("--arch", help="base model architecture when the file does not tell")
    _add_split_qkv_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the total")
    p.set_defaults(func=_cmd_convert)
