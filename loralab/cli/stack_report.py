"""``loralab stack-report``: the command-line side of :mod:`loralab.ops.interference`."""
from __future__ import annotations

import argparse
import json

from .merge import _base, _guarded, _layout, _per_input
from .terminal import ProgressPrinter, terminal_safe


@_guarded
def _cmd_stack_report(args: argparse.Namespace) -> int:
    from ..files.atomic import atomic_write
    from ..lora import Lora
    from ..ops.inputs import MergeInput
    from ..ops.interference import Thresholds, stack_report
    thresholds = Thresholds(args.samples, args.seed, args.energy, args.cos_threshold, args.overlap_threshold,
                            args.balance, args.lower)
    layout = _layout(args)
    weights = _per_input(args.weight, len(args.loras), 1.0, "weight")
    specs = _per_input(args.blocks, len(args.loras), "", "blocks")
    inputs = [MergeInput(Lora.open(p, layout), w, s) for p, w, s in zip(args.loras, weights, specs)]
    base = _base(args, layout or inputs[0].lora.layout)
    try:
        report = stack_report(inputs, base=base, thresholds=thresholds,
                              progress=ProgressPrinter("stack-report", args.quiet))
    finally:
        if base is not None:
            base.close()
    if args.chart:
        with atomic_write(args.chart, overwrite=True) as f:
            report.heat_map().save(f, format="PNG")
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, ensure_ascii=False, allow_nan=False))
    else:
        print(terminal_safe(report.to_text()))
    return 0


def add_stack_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack-report", help="how the LoRAs of a stack interfere, per block, and block weights "
                                            "that separate the ones that fight")
    p.add_argument("loras", nargs="+", help="LoRA .safetensors files (one base model)")
    p.add_argument("-w", "--weight", type=float, action="append",
                   help="weight of each LoRA, in order (repeat once per LoRA; negative allowed; default 1)")
    p.add_argument("-b", "--blocks", action="append",
                   help="block-weight spec of each LoRA, in order (repeat once per LoRA; '' for none)")
    p.add_argument("--base", help="base model .safetensors: adds relative strength ‖ΔW‖/‖W‖")
    p.add_argument("--arch", help="base model architecture (sd1, sd2, sdxl, sdxl_refiner, flux) when it cannot "
                                  "be detected")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the text summary")
    p.add_argument("--chart", metavar="PNG", help="write the heat map of pairwise block cosines to this file")
    p.add_argument("--samples", type=int, default=4096,
                   help="entries per weight the sign-conflict estimate reads (every entry of smaller weights)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled entries")
    p.add_argument("--energy", type=float, default=0.9,
                   help="dominant subspace: the fewest singular directions holding this fraction of ‖ΔW‖²")
    p.add_argument("--cos-threshold", dest="cos_threshold", type=float, default=0.1,
                   help="a pair fights on a block whose cosine is ≤ −this")
    p.add_argument("--overlap-threshold", dest="overlap_threshold", type=float, default=0.5,
                   help="... or whose subspace overlap is ≥ this, with strengths within --balance")
    p.add_argument("--balance", type=float, default=0.25,
                   help="overlap fights need the weaker LoRA's block strength ≥ this × the stronger one's")
    p.add_argument("--lower", type=float, default=0.0,
                   help="the proposal multiplies the weaker LoRA's block weight by this where it fights")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_stack_report)
