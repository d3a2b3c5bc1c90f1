"""The memory estimator: its parts by hand on a small description, the modes a budget picks, the
refusal, and its prediction against the measured peak resident memory of real toy runs.

The measurement runs training in a child process (``loralab_testkit.train_rss``): the baseline is
the resident memory after Python, torch, one warm-up step of a width-8 toy and the dataset; the
peak is the high-water mark over it after two training steps of the width-512 toy
(:mod:`loralab_testkit.rss`)."""
import json
import os

import pytest

from loralab.errors import TrainingError
from loralab_testkit.rss import run_child
from loralab.train.memory import (GIB, BlockCost, MemoryMode, ModelCost, choose_mode, estimate, ladder, resolve,
                                  usable_memory)

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.dirname(TESTS)


def _cost(n=10):
    block = BlockCost(weight_numel=100 * 2 ** 20, weight_bytes=200 * 2 ** 20, other_bytes=2 ** 20,
                      target_numel=50 * 2 ** 20, largest_target=2 ** 20, activations=10 * 2 ** 20,
                      boundary=2 ** 20)
    return ModelCost((block,) * n, 64 * 2 ** 20, 2)


def _parts(est):
    return dict(est.parts)


def test_estimate_parts_by_hand():
    kw = dict(batch=2, trained_params=2 ** 20, optimizer="adamw", compute_itemsize=2)
    mib = 2 ** 20
    plain = _parts(estimate(_cost(), MemoryMode(), **kw))
    assert plain["base weights"] == 64 * mib + 10 * 201 * mib
    assert plain["LoRA, gradients and optimizer state"] == mib * 16  # param, grad, two moments: fp32
    # bf16 as loaded, bf16 compute: only the 50 Mi targets' patched copies; 2 samples × 10 Mi activations
    assert plain["activations and patched weights"] == 10 * (2 * 10 + 50) * mib * 2
    assert plain["working memory"] == mib * 10 + 2 * 10 * mib * 2
    ck = _parts(estimate(_cost(), MemoryMode(checkpointing=True), **kw))
    assert ck["activations and patched weights"] == 10 * 2 * mib * 2 + (2 * 10 + 50) * mib * 2
    fp8 = _parts(estimate(_cost(), MemoryMode("fp8", checkpointing=True), **kw))
    assert fp8["base weights"] == 64 * mib + 10 * 101 * mib
    # fp8 storage casts: the untargeted weights' upcast copies are kept too (for the block recomputed)
    assert fp8["activations and patched weights"] == 10 * 2 * mib * 2 + (2 * 10 + 100) * mib * 2
    swap = _parts(estimate(_cost(), MemoryMode("fp8", 6, True, True), **kw))
    assert swap["base weights"] == 64 * mib + 6 * 101 * mib  # 4 resident + 2 in flight
    assert swap["activations and patched weights"] == (2 * 10 + 100) * mib * 2  # inputs on the CPU
    same_device = _parts(estimate(_cost(), MemoryMode("fp8", 6, True, True), offload_to_device=True, **kw))
    assert same_device["base weights"] == 64 * mib + 10 * 101 * mib + 10 * 200 * mib
    # the weights outside the blocks are stored in fp8 too: 30 Mi elements of the 64 MiB
    outside = ModelCost(_cost().blocks, 64 * mib, 2, other_weight_numel=30 * mib, other_weight_bytes=60 * mib)
    assert _parts(estimate(outside, MemoryMode("fp8", 6, True), **kw))["base weights"] == 34 * mib + 6 * 101 * mib
    assert _parts(estimate(outside, MemoryMode(checkpointing=True), **kw))["base weights"] == 64 * mib + 10 * 201 * mib
    assert _parts(estimate(outside, MemoryMode("fp8", 6, True), offload_to_device=True, **kw))["base weights"] == \
        34 * mib + 10 * 101 * mib + 10 * 200 * mib + 60 * mib
    assert _parts(estimate(_cost(), MemoryMode(), **{**kw, "optimizer": "adamw8bit"}))[
        "LoRA, gradients and optimizer state"] == mib * 10


def test_ladder_and_the_mode_a_budget_picks():
    assert ladder(57) == [MemoryMode(), MemoryMode(checkpointing=True), MemoryMode("fp8", 0, True),
                          MemoryMode("fp8", 14, True), MemoryMode("fp8", 28, True), MemoryMode("fp8", 42, True),
                          MemoryMode("fp8", 55, True), MemoryMode("fp8", 55, True, True)]
    kw = dict(batch=1, trained_params=2 ** 20, optimizer="adamw", compute_itemsize=2)
    totals = [estimate(_cost(), m, **kw).total for m in ladder(10)]
    assert all(a > b for a, b in zip(totals, totals[1:]))  # each rung needs less
    for i, mode in enumerate(ladder(10)):
        assert choose_mode(_cost(), totals[i], **kw)[0] == mode
    assert choose_mode(_cost(), 1, **kw)[0] == ladder(10)[-1]  # nothing fits: the leanest


def test_a_kept_mode_is_chosen_among_the_modes_that_compute_what_it_computes():
    assert ladder(57, MemoryMode(checkpointing=True)) == [
        MemoryMode(checkpointing=True), MemoryMode(swap_blocks=14, checkpointing=True),
        MemoryMode(swap_blocks=28, checkpointing=True), MemoryMode(swap_blocks=42, checkpointing=True),
        MemoryMode(swap_blocks=55, checkpointing=True), MemoryMode(swap_blocks=55, checkpointing=True,
                                                                   offload_activations=True)]
    assert ladder(10, MemoryMode("fp8", 8, False)) == [MemoryMode("fp8"), MemoryMode("fp8", 5), MemoryMode("fp8", 7),
                                                       MemoryMode("fp8", 8)]
    assert all(m.same_numbers(MemoryMode("fp8", 3, True, True)) for m in ladder(57, MemoryMode("fp8", 0, True)))
    assert not MemoryMode().same_numbers(MemoryMode(checkpointing=True))
    assert MemoryMode().same_numbers(MemoryMode(swap_blocks=4))
    kw = dict(batch=1, trained_params=2 ** 20, optimizer="adamw", compute_itemsize=2)
    # plain needs 3.24 GiB; 2.5 GiB usable takes checkpointing, or, keeping plain training's numbers,
    # 7 blocks swapped (5 off the card, 1005 MiB less)
    assert resolve("auto", MemoryMode(), _cost(), int(3.5 * GIB), "cuda", **kw)[0] == MemoryMode(checkpointing=True)
    kept, est = resolve("auto", MemoryMode(), _cost(), int(3.5 * GIB), "cuda", MemoryMode(), **kw)
    assert kept == MemoryMode(swap_blocks=7) and est.total <= 2.5 * GIB
    with pytest.raises(TrainingError, match="would need about"):
        resolve("auto", MemoryMode(), _cost(), int(1.5 * GIB), "cuda", MemoryMode(), **kw)
    mode = MemoryMode("fp8", 5, True, False)
    assert MemoryMode.from_json(mode.to_json()) == mode
    for bad in ({**mode.to_json(), "base_dtype": "fp4"}, {**mode.to_json(), "swap_blocks": "5"},
                {"base_dtype": "fp8"}, ["fp8"], {**mode.to_json(), "checkpointing": 1}):
        with pytest.raises(ValueError, match="not a memory mode"):
            MemoryMode.from_json(bad)


def test_resolve_refuses_what_does_not_fit_naming_what_to_change():
    kw = dict(batch=1, trained_params=2 ** 20, optimizer="adamw", compute_itemsize=2)
    assert usable_memory(24 * GIB, "cuda") == 23 * GIB and usable_memory(8 * GIB, "cpu") == 8 * GIB
    mode, est = resolve("auto", MemoryMode(), _cost(), 80 * GIB, "cuda", **kw)
    assert mode == MemoryMode() and 3 * GIB < est.total < 4 * GIB
    mode, _ = resolve("8 GB", MemoryMode(), _cost(40), 80 * GIB, "cuda", **kw)
    assert mode.base_dtype == "fp8" and mode.checkpointing  # 8 GB of an 80 GB card: the budget decides
    with pytest.raises(TrainingError, match=r"would need about 3\.24 GiB but the device has 1\.00 GiB") as e:
        resolve("manual", MemoryMode(), _cost(), 2 * GIB, "cuda", **kw)
    assert "fp8 base weights, gradient checkpointing and more swapped blocks (up to 9)" in e.value.hint
    with pytest.raises(TrainingError, match="lower batch_size") as e:
        resolve("auto", MemoryMode(), _cost(), GIB + 100 * 2 ** 20, "cuda", **kw)
    assert "fp8 base weights, 8 blocks swapped" in str(e.value)
    with pytest.raises(TrainingError, match="unknown fits_in '6 GB'"):
        resolve("6 GB", MemoryMode(), _cost(), GIB, "cuda", **kw)


@pytest.mark.parametrize("mode", [{}, {"checkpointing": True},
                                  {"base_dtype": "fp8", "checkpointing": True, "swap_blocks": 4,
                                   "offload_activations": True}])
def test_estimate_is_within_15_percent_of_measured_peak_rss(tmp_path, mode):
    result = run_child(["-m", "loralab_testkit.train_rss", str(tmp_path / "data"), str(tmp_path / "cache"),
                        json.dumps(mode)], [ROOT, TESTS], timeout=300)
    ratio = result["estimate"] / result["measured"]
    assert result["measured"] > 80 * 2 ** 20  # tensors dominate what is measured
    assert 0.85 <= ratio <= 1.15, result
