"""``loralab merge``, ``loralab resize`` and ``loralab extract``: the command-line side of
:mod:`loralab.ops.merge` and :mod:`loralab.ops.extract`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

from ..errors import LoRALabError, SpecError
from .terminal import ProgressPrinter, terminal_safe

DTYPE_NAMES = ("fp16", "bf16", "fp32")


def _dtype(name: str | None):
    import torch
    return None if name is None else {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _rule(args: argparse.Namespace, default_max: int | None = None):
    from ..ops.lowrank import RankRule
    return RankRule.from_options(args.rank, max_rank=args.max_rank, default_max=default_max, sv_ratio=args.sv_ratio,
                                 sv_fro=args.sv_fro, sv_cumulative=args.sv_cumulative)


def _add_rank_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("rank (one of)")
    ex = g.add_mutually_exclusive_group()
    ex.add_argument("--rank", type=int, help=f"fixed rank of {what}")
    ex.add_argument("--sv-ratio", dest="sv_ratio", type=float, metavar="R",
                    help="per module, keep singular values σ ≥ σ₁ / R")
    ex.add_argument("--sv-fro", dest="sv_fro", type=float, metavar="F",
                    help="per module, the smallest rank whose kept Frobenius energy Σσ² is ≥ F (0..1); "
                         "kohya's sv_fro value v is a norm fraction, our F = v²")
    ex.add_argument("--sv-cumulative", dest="sv_cumulative", type=float, metavar="C",
                    help="per module, the smallest rank whose Σσ is ≥ C of the total (0..1)")
    g.add_argument("--max-rank", type=int, help="cap on the rank of any module (dynamic modes)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--title", help="the title written into the metadata (default: the output's name; resize "
                                  "keeps the input's title)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="dtype of the written tensors")
    p.add_argument("--arch", help="base model architecture (sd1, sd2, sdxl, sdxl_refiner, flux) when it "
                                  "cannot be detected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _add_split_qkv_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split-qkv", dest="split_qkv", choices=("as-loaded", "as-trained"), default="as-loaded",
                   help="kohya split_qkv Flux LoRAs: keep the strength every loader gives their fused q/k/v and "
                        "linear1 modules (as-loaded, 1/3 and 1/4 of the trained one) or write the trained strength "
                        "(as-trained)")


def _split_qkv(args: argparse.Namespace, inputs: list) -> None:
    if args.split_qkv == "as-trained":
        for inp in inputs:
            inp.split_qkv_as_trained()


def _title(args: argparse.Namespace) -> str:
    return args.title or os.path.splitext(os.path.basename(args.output))[0]


def _layout(args: argparse.Namespace):
    from ..layouts import layout_for
    return layout_for(args.arch) if args.arch else None


def _base(args: argparse.Namespace, layout):
    from ..formats.model_weights import ModelWeights
    return ModelWeights.open(args.base, layout) if getattr(args, "base", None) else None


def _finish(result, args: argparse.Namespace, started: float) -> int:
    path = result.save(args.output, overwrite=args.overwrite)
    print(terminal_safe(result.report()))  # module names and titles come from strangers' files
    print(terminal_safe(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {time.monotonic() - started:.1f} s"))
    return 0


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except LoRALabError as e:
            print(terminal_safe(f"error: {e}"), file=sys.stderr)
            return 1
    return wrapped


def _per_input(values: list | None, n: int, default, name: str) -> list:
    if not values:
        return [default] * n
    if len(values) != n:
        raise SpecError(f"{len(values)} {name} given for {n} LoRAs; give one per LoRA, in order", key=f"--{name}")
    return values


@_guarded
def _cmd_merge(args: argparse.Namespace) -> int:
    from ..ops.merge import MergeInput, merge
    started = time.monotonic()
    layout = _layout(args)
    weights = _per_input(args.weight, len(args.loras), 1.0, "weight")
    specs = _per_input(args.blocks, len(args.loras), "", "blocks")
    inputs = [MergeInput.open(p, w, s, layout) for p, w, s in zip(args.loras, weights, specs)]
    _split_qkv(args, inputs)
    result = merge(inputs, args.method, _rule(args), density=args.density, seed=args.seed,
                   base=_base(args, layout or inputs[0].lora.layout), dtype=_dtype(args.dtype), title=_title(args),
                   progress=ProgressPrinter("merge", args.quiet))
    return _finish(result, args, started)


@_guarded
def _cmd_resize(args: argparse.Namespace) -> int:
    from ..ops.merge import MergeInput, resize
    started = time.monotonic()
    rule = _rule(args)
    if rule is None:
        raise SpecError("give the new rank: --rank N, or --sv-ratio / --sv-fro / --sv-cumulative", key="rank")
    layout = _layout(args)
    inp = MergeInput.open(args.lora, layout=layout)
    _split_qkv(args, [inp])
    result = resize(inp, rule, base=_base(args, layout or inp.lora.layout), dtype=_dtype(args.dtype),
                    title=args.title, progress=ProgressPrinter("resize", args.quiet))
    return _finish(result, args, started)


@_guarded
def _cmd_extract(args: argparse.Namespace) -> int:
    from ..ops.extract import extract
    from ..formats.model_weights import ModelWeights
    started = time.monotonic()
    rule = _rule(args, default_max=128)
    if rule is None:
        raise SpecError("give the rank: --rank N, or --sv-ratio / --sv-fro / --sv-cumulative", key="rank")
    layout = _layout(args)
    with ModelWeights.open(args.base, layout) as base, ModelWeights.open(args.tuned, layout or base.layout) as tuned:
        result = extract(tuned, base, rule, text_encoders=args.text_encoders, min_diff=args.min_diff,
                         bias_and_norms=args.bias_and_norms, exact=args.exact, power_iters=args.power_iters,
                         seed=args.seed, dtype=_dtype(args.dtype or "fp16"), title=_title(args),
                         progress=ProgressPrinter("extract", args.quiet))
    return _finish(result, args, started)


def add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge LoRAs into one (concat, svd, ties, dare, magnitude)")
    p.add_argument("loras", nargs="+", help="LoRA .safetensors files (one base model)")
    p.add_argument("-w", "--weight", type=float, action="append",
                   help="weight of each LoRA, in order (repeat once per LoRA; negative allowed; default 1)")
    p.add_argument("-b", "--blocks", action="append",
                   help="block-weight spec of each LoRA, in order (repeat once per LoRA; '' for none)")
    p.add_argument("-m", "--method", default="svd", choices=("concat", "svd", "ties", "dare", "magnitude"),
                   help="concat: exact, rank = sum of ranks (in fp16 too where a module's inputs share "
                        "weight·alpha/rank up to a power of two; otherwise exact only with --dtype fp32); svd: best "
                        "approximation at the target rank; ties/dare/magnitude: sparsifying merges on ΔW (lossy)")
    _add_rank_options(p, "the merged LoRA")
    p.add_argument("--density", type=float, default=0.5, help="ties/dare/magnitude: fraction of entries kept")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (dare)")
    p.add_argument("--base", help="base model .safetensors, needed for DoRA inputs")
    _add_split_qkv_option(p)
    _add_output_options(p)
    p.set_defaults(func=_cmd_merge)


def add_resize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resize", help="a LoRA at a smaller or dynamic rank (best approximation per module)")
    p.add_argument("lora", help="LoRA .safetensors file")
    _add_rank_options(p, "the resized LoRA")
    p.add_argument("--base", help="base model .safetensors, needed for DoRA inputs")
    _add_split_qkv_option(p)
    _add_output_options(p)
    p.set_defaults(func=_cmd_resize)


def add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="a LoRA from a fine-tuned model and its base model")
    p.add_argument("tuned", help="fine-tuned model: checkpoint or diffusion-model .safetensors")
    p.add_argument("base", help="the base model it was tuned from, same layout")
    _add_rank_options(p, "the extracted LoRA (dynamic modes default to --max-rank 128)")
    p.add_argument("--text-encoders", action="store_true", help="also extract the text encoders' layers")
    p.add_argument("--min-diff", type=float, default=1e-4,
                   help="skip weights whose difference is at most this fraction of the weight (Frobenius)")
    p.add_argument("--bias-and-norms", action="store_true",
                   help="also store bias and norm differences as full diffs (ComfyUI reads them; kohya does not)")
    p.add_argument("--exact", action="store_true", help="full SVD for every layer (slow) instead of randomized")
    p.add_argument("--power-iters", type=int, default=2, help="power iterations of the randomized SVD")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomized SVD")
    _add_output_options(p)
    p.set_defaults(func=_cmd_extract)


#: registered in loralab.cli.COMMANDS
MERGE_COMMANDS = [add_merge, add_resize, add_extract]
