"""Measure a toy training run's peak memory in this (child) process, for the estimator test.

``python -m loralab_testkit.train_rss DATA CACHE MODE_JSON`` builds the dataset, trains a
width-8 toy one step in the mode (so torch's kernels and runtime buffers are paged in), reads the
resident memory then (the baseline: Python, torch, its runtime and the dataset) and resets the
high-water mark to it (Linux ``/proc/self/clear_refs``), builds the toy transformer and its run,
trains two steps in the memory mode and prints JSON with the peak increase in bytes and the
estimator's prediction for the same configuration (measured as :mod:`loralab_testkit.rss` says)."""
from __future__ import annotations

import contextlib
import json
import sys

import torch

from loralab.train.base_weights import stored_in_fp8
from loralab.train.block_swap import block_swap
from loralab.train.grad_checkpoint import gradient_checkpointing
from loralab.train.memory import MemoryMode, estimate

from .rss import high_water, start_peak
from .train_blocks import BlockModel, ToyTransformer, block_run, toy_cost
from .train_toys import make_dataset

WIDTH, DEPTH, SIZE, BATCH, RANK = 512, 8, 128, 2, 4


def main(data: str, cache: str, mode_json: str) -> None:
    torch.set_num_threads(1)
    mode = MemoryMode(**json.loads(mode_json))
    ds = make_dataset(data, cache, size=SIZE)
    _train(ToyTransformer(width=8, depth=DEPTH), ds, mode, 1)  # pages torch's kernels and runtime in
    baseline = start_peak()
    net = ToyTransformer(width=WIDTH, depth=DEPTH)
    run = _train(net, ds, mode, 2)
    peak = high_water() - baseline
    tokens = (SIZE // 8) ** 2
    est = estimate(toy_cost(net, tokens, RANK), mode, batch=BATCH, trained_params=sum(p.numel() for p in run.params()),
                   optimizer="adamw", compute_itemsize=4, offload_to_device=True)
    print(json.dumps({"measured": peak, "estimate": est.total, "parts": dict(est.parts), "baseline": baseline}))


def _train(net: ToyTransformer, ds, mode: MemoryMode, steps: int):
    run = block_run(net, ds, batch_size=BATCH, rank=RANK, alpha=float(RANK))
    with (stored_in_fp8(net) if mode.base_dtype == "fp8" else contextlib.nullcontext()), \
            gradient_checkpointing(net, mode.checkpointing, mode.offload_activations), \
            block_swap(list(net.blocks), mode.swap_blocks, "cpu", "cpu"):
        run.train(BlockModel(net), steps)
    return run


if __name__ == "__main__":
    main(*sys.argv[1:4])
