"""Measure a toy training run's peak memory in this (child) process, for the estimator test.

``python -m loralab_testkit.train_rss DATA CACHE MODE_JSON`` builds the dataset, trains a
width-8 toy one step in the mode (so torch's kernels and runtime buffers are paged in), reads the
resident memory then (the baseline: Python, torch, its runtime and the dataset) and resets the
high-water mark to it (Linux ``/proc/self/clear_refs``), builds the toy transformer and its run,
trains two steps in the memory mode and prints JSON with the peak increase in bytes and the
estimator's prediction for the same configuration: the increase is the high-water mark
(``VmHWM``) at the end minus the baseline. (``ru_maxrss`` will not do: a child starts with its
parent's, so a test process grown large would set it.) glibc is told (by the parent's environment)
to serve large allocations with mmap, so freed tensors leave the resident set at once and the
peak is the tensors' peak, not heap fragmentation."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import sys

import torch

from loralab.train.base_weights import stored_in_fp8
from loralab.train.block_swap import block_swap
from loralab.train.grad_checkpoint import gradient_checkpointing
from loralab.train.memory import MemoryMode, estimate

from .train_blocks import BlockModel, ToyTransformer, block_run, toy_cost
from .train_toys import make_dataset

WIDTH, DEPTH, SIZE, BATCH, RANK = 512, 8, 128, 2, 4


def main(data: str, cache: str, mode_json: str) -> None:
    torch.set_num_threads(1)
    mode = MemoryMode(**json.loads(mode_json))
    ds = make_dataset(data, cache, size=SIZE)
    _train(ToyTransformer(width=8, depth=DEPTH), ds, mode, 1)  # pages torch's kernels and runtime in
    gc.collect()
    baseline = _resident()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # the high-water mark starts again at the resident set
    net = ToyTransformer(width=WIDTH, depth=DEPTH)
    run = _train(net, ds, mode, 2)
    peak = _high_water() - baseline
    tokens = (SIZE // 8) ** 2
    est = estimate(toy_cost(net, tokens, RANK), mode, batch=BATCH, trained_params=sum(p.numel() for p in run.params()),
                   optimizer="adamw", compute_itemsize=4, offload_to_device=True)
    print(json.dumps({"measured": peak, "estimate": est.total, "parts": dict(est.parts), "baseline": baseline}))


def _resident() -> int:
    """This process's resident memory now (Linux: /proc/self/statm), in bytes."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _high_water() -> int:
    """This process's peak resident memory since the last reset (Linux: VmHWM), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _train(net: ToyTransformer, ds, mode: MemoryMode, steps: int):
    run = block_run(net, ds, batch_size=BATCH, rank=RANK, alpha=float(RANK))
    with (stored_in_fp8(net) if mode.base_dtype == "fp8" else contextlib.nullcontext()), \
            gradient_checkpointing(net, mode.checkpointing, mode.offload_activations), \
            block_swap(list(net.blocks), mode.swap_blocks, "cpu", "cpu"):
        run.train(BlockModel(net), steps)
    return run


if __name__ == "__main__":
    main(*sys.argv[1:4])
