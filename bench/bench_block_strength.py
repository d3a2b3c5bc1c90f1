"""Benchmark: block strengths from the factors vs building ΔW per module (target: >= 20x faster).

Writes a full-size kohya Flux LoRA (304 modules, rank 16 by default, bf16) to a temp folder (or
--dir), then times, on the warm file:
  factors: loralab.ops.block_strength.block_strengths (reads each module, Gram-trick norms), and
  dense:   the same modules read the same way, ΔW = scale·up@down built in float32, ‖ΔW‖ taken.
Both include reading the tensors; the compute-only times (tensors already in memory) are printed
too. The two results are checked to agree within 1e-4 relative.

    python bench/bench_block_strength.py [--dir DIR] [--rank 16]
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
from lora_files import write_lora

from loralab.ops.block_strength import block_strengths
from loralab.blocks.map import block_of
from loralab.lora import Lora


def dense_blocks(lora: Lora, adapters=None) -> dict[str, float]:
    sums: dict[str, float] = {}
    for m in lora.mapped():
        a = adapters[m.entry.module] if adapters is not None else lora.adapter(m.entry)
        d = a.delta_flat(torch.float32)
        b = block_of(m.target.key, lora.layout.arch.family)
        sums[b] = sums.get(b, 0.0) + float(torch.linalg.vector_norm(d, dtype=torch.float64)) ** 2
    return {b: math.sqrt(v) for b, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the file (kept); default: a temp folder, removed")
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(args.dir or tmp, f"kohya_flux_lora_r{args.rank}.safetensors")
        if not os.path.exists(path):
            write_lora("kohya_flux_lora", path, args.rank)
        with Lora.open(path) as lora:
            print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB, {len(lora.entries)} modules")
            block_strengths(lora)  # warm the page cache
            t = time.perf_counter()
            ours = {b.block: b.norm for b in block_strengths(lora) if b.modules}
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            dense = dense_blocks(lora)
            t_dense = time.perf_counter() - t
            adapters = {m.entry.module: lora.adapter(m.entry) for m in lora.mapped()}
            t = time.perf_counter()
            for a in adapters.values():
                a.fro_norm()
            c_ours = time.perf_counter() - t
            t = time.perf_counter()
            dense_blocks(lora, adapters)
            c_dense = time.perf_counter() - t
        worst = max(abs(ours[b] - dense[b]) / dense[b] for b in dense)
        assert set(ours) == set(dense) and worst < 1e-4, worst
        print(f"with reads:   factors {t_ours:.2f} s, dense {t_dense:.2f} s -> {t_dense / t_ours:.0f}x faster")
        print(f"compute only: factors {c_ours:.3f} s, dense {c_dense:.2f} s -> {c_dense / c_ours:.0f}x faster")
        print(f"{len(ours)} blocks agree within {worst:.1e} relative")


if __name__ == "__main__":
    main()
