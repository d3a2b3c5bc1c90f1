"""The engine's shape rules for OFT, BOFT and GLoRA say "fits" exactly where ComfyUI's own adapters
compute an update for the weight, and "does not fit" where they fail (ComfyUI logs the error and
leaves the weight unchanged)."""
import logging

import pytest
import torch

OFT = [((4, 8, 8), (32, 16), True), ((4, 8, 8), (24, 16), False), ((2, 16, 16), (32, 16, 3, 3), True),
       ((3, 8, 8), (32, 16), False)]
BOFT = [((3, 4, 8, 8), (32, 16), True), ((4, 4, 8, 8), (32, 16), False), ((2, 4, 8, 8), (32, 16), True),
        ((3, 2, 16, 16), (32, 16), False), ((1, 1, 32, 32), (32, 16), True), ((3, 4, 8, 8), (32, 16, 3, 3), True),
        ((2, 8, 4, 4), (24, 16), False)]
RESCALE = [((32, 1), (32, 16), True), ((32, 1, 1, 1), (32, 16, 3, 3), True), ((16, 1), (32, 16), False)]
NEW = {"a1": (16, 2), "a2": (2, 16), "b1": (32, 2), "b2": (2, 16)}
NEW_CONV = {"a1": (16, 2, 1, 1), "a2": (2, 16, 1, 1), "b1": (32, 2, 1, 1), "b2": (2, 16, 3, 3)}
OLD = {"a1": (2, 16), "a2": (16, 2), "b1": (2, 16), "b2": (32, 2)}
GLORA = [(NEW, (32, 16), True), (NEW, (32, 8), False), (NEW, (24, 16), False), (NEW_CONV, (32, 16, 3, 3), True),
         ({**NEW_CONV, "b2": (2, 16)}, (32, 16, 3, 3), False), (OLD, (32, 16), True), (OLD, (32, 8), False),
         (OLD, (16, 16), False)]


def _cases():
    for blocks, weight, fits in OFT + BOFT:
        yield {"oft_blocks": blocks, "alpha": ()}, weight, fits
    for rescale, weight, fits in RESCALE:
        yield {"oft_blocks": (2, 4, 8, 8), "rescale": rescale, "alpha": ()}, weight, fits
    for factors, weight, fits in GLORA:
        yield {**{f"{r}.weight": s for r, s in factors.items()}, "alpha": ()}, weight, fits
    yield {"oft_blocks": (4, 8, 8)}, (32, 16), True  # OFT reads no alpha as 0: no norm constraint


def _comfy_updates(tensors, weight, monkeypatch):
    """Whether ComfyUI's own adapter for module "m" changes a random weight of this shape (it logs
    the error and leaves the weight as it is where its math fails)."""
    import comfy.lora
    errors = []
    monkeypatch.setattr(logging, "error", lambda msg, *a, **k: errors.append(msg))
    (adapter,) = comfy.lora.load_lora(tensors, {"m": "w"}, log_missing=False).values()
    w = torch.randn(weight, generator=torch.Generator().manual_seed(1))
    out = adapter.calculate_weight(w.clone(), "w", 1.0, 1.0, None, lambda a: a)
    return not errors and not torch.equal(out, w)


def _entry(host, tensors):
    group_keys = host.module("loralab.formats.keys").group_keys
    (entry,) = group_keys({k: tuple(v.shape) for k, v in tensors.items()}, dict.fromkeys(tensors, "F32")).entries
    return entry


def _tensors(suffixes):
    g = torch.Generator().manual_seed(0)
    return {f"m.{s}": torch.tensor(1.0) if s == "alpha" else torch.randn(shape, generator=g) * 0.1
            for s, shape in suffixes.items()}


@pytest.mark.parametrize("suffixes,weight,fits", list(_cases()))
def test_fit_rule_agrees_with_comfy_adapters(host, monkeypatch, suffixes, weight, fits):
    tensors = _tensors(suffixes)
    entry = _entry(host, tensors)
    assert entry.problem is None
    assert (entry.base_problem(weight) is None) == fits, entry.base_problem(weight)
    assert _comfy_updates(tensors, weight, monkeypatch) == fits


def test_boft_without_alpha_is_a_problem_because_comfy_fails_on_it(host, monkeypatch):
    tensors = _tensors({"oft_blocks": (3, 4, 8, 8)})
    assert "BOFT without alpha" in _entry(host, tensors).problem
    assert not _comfy_updates(tensors, (32, 16), monkeypatch)
