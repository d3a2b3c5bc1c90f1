"""Benchmark: the stack report from the factors vs the same numbers from dense ΔW (target: >= 100x).

Writes three full-size Flux LoRAs (two kohya with fused qkv, one ai-toolkit with split q/k/v;
rank 16 by default, bf16) to a temp folder (or --dir), then times, on the warm files:
  factors: loralab.ops.interference.stack_report over every weight (reads included), and
  dense:   on --sample weights spread over the model, each LoRA's ΔW built in float32 (pieces
           placed in their rows), norms, pairwise inner products, the exact sign conflict over
           every entry, and the dominant subspaces by an SVD of each ΔW (torch.linalg.svd;
           also timed without the SVDs); the time per weight entry, extrapolated to every
           weight the stack writes (as bench_block_strength.py does for its norms).
The report's cosines on the sampled weights are checked against the dense ones (1e-4 absolute).

    python bench/bench_stack_report.py [--dir DIR] [--rank 16] [--sample 6]
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
from lora_files import write_lora

from loralab.lora import Lora
from loralab.ops.inputs import MergeInput
from loralab.ops.interference import stack_report

FILES = (("kohya_flux_lora", 0), ("kohya_flux_lora", 1), ("aitoolkit_flux_lora", 2))


def dense_update(lora: Lora, key: str) -> torch.Tensor | None:
    """Σ of a LoRA's ΔW on ``key`` (float32), each piece placed in its rows."""
    shape = lora.layout.shapes[key]
    out = None
    for m in lora.mapped():
        if m.target.key != key:
            continue
        out = torch.zeros(shape[0], math.prod(shape[1:])) if out is None else out
        start, length = m.target.rows or (0, shape[0])
        out[start:start + length] += lora.adapter(m.entry).delta_flat(torch.float32)
    return out


def dense_module(loras: list[Lora], key: str, svd: bool) -> dict[tuple[int, int], float]:
    """The dense numbers of one weight; returns the pair cosines."""
    xs = {i: d for i, lo in enumerate(loras) if (d := dense_update(lo, key)) is not None}
    norms = {i: float(torch.linalg.vector_norm(d, dtype=torch.float64)) for i, d in xs.items()}
    if svd:
        for d in xs.values():
            torch.linalg.svd(d, full_matrices=False)
    cos = {}
    idx = sorted(xs)
    for a, i in enumerate(idx):
        for j in idx[a + 1:]:
            prod = xs[i] * xs[j]
            cos[(i, j)] = float(prod.sum(dtype=torch.float64)) / (norms[i] * norms[j])
            float((-prod).clamp_min(0).sum(dtype=torch.float64) / prod.abs().sum(dtype=torch.float64))
    return cos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the files (kept); default: a temp folder, removed")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--sample", type=int, default=6, help="weights timed densely")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, seed in FILES:
            path = os.path.join(args.dir or tmp, f"{name}_r{args.rank}_s{seed}.safetensors")
            if not os.path.exists(path):
                write_lora(name, path, args.rank, seed=seed)
            paths.append(path)
        inputs = [MergeInput(Lora.open(p), 1.0) for p in paths]
        for p, inp in zip(paths, inputs):
            print(f"{os.path.basename(p)}: {os.path.getsize(p) / 2**20:.0f} MiB, {len(inp.lora.entries)} modules")
        stack_report(inputs)  # warm the page cache
        t = time.perf_counter()
        report = stack_report(inputs)
        t_ours = time.perf_counter() - t
        loras = [inp.lora for inp in inputs]
        shapes = loras[0].layout.shapes
        writers = {m.key: sum(s is not None for s in m.strength) for m in report.modules}
        keys = sorted(writers, key=lambda k: (math.prod(shapes[k]), k))
        step = max(1, len(keys) // args.sample)
        sampled = keys[::step][:args.sample]
        timed = {True: 0.0, False: 0.0}
        worst = 0.0
        for key in sampled:
            for svd in (False, True):
                t = time.perf_counter()
                cos = dense_module(loras, key, svd)
                timed[svd] += time.perf_counter() - t
            mod = next(m for m in report.modules if m.key == key)
            for p in mod.pairs:
                worst = max(worst, abs(p.cos - cos[(p.i, p.j)]))
        assert worst < 1e-4, worst
        # dense cost scales with (entries × LoRAs writing them); extrapolate over every weight
        work = lambda ks: sum(math.prod(shapes[k]) * writers[k] for k in ks)  # noqa: E731
        factor = work(keys) / work(sampled)
        print(f"factors: {t_ours:.2f} s for {len(keys)} weights × {len(loras)} LoRAs (reads included)")
        for svd in (False, True):
            est = timed[svd] * factor
            what = "with SVDs" if svd else "no SVDs (cos + conflict only)"
            print(f"dense {what}: {timed[svd]:.2f} s on {len(sampled)} weights -> {est:.0f} s estimated for all "
                  f"-> {est / t_ours:.0f}x slower")
        print(f"sampled cosines agree within {worst:.1e}; fights: {len(report.fights)}")


if __name__ == "__main__":
    main()
