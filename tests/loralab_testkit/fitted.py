"""LoRA tensors with a fixture's real key names, sized for any model layout (tiny ones included):
each module the layout has gets tensors of its shapes at a small rank; the others are left out.

(A minimal stand-in for the testkit helper the loader work adds; kept local to the merge tests.)
"""
from __future__ import annotations

import math

import torch

from loralab.formats.canonical import target_for, target_shape
from loralab.layouts import ModelLayout
from loralab.formats.keys import group_keys
from loralab_testkit import fixture


def fitted_lora(name: str, layout: ModelLayout, rank: int = 2, seed: int = 0, std: float = 0.1,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """LoRA (and full diff) entries of fixture ``name`` that land in ``layout``, with their shapes."""
    d = fixture("loras", name)
    shapes = {k: tuple(v["shape"]) for k, v in d["tensors"].items()}
    parsed = group_keys(shapes, {k: v["dtype"] for k, v in d["tensors"].items()})
    scalars = d.get("scalar_values", {})
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}

    def rnd(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    for e in parsed.entries:
        if e.kind not in ("lora", "diff"):
            continue
        target, _ = target_for(e, layout)
        if target is None:
            continue
        shape = target_shape(target, layout)
        if e.kind == "diff":
            out[e.keys[next(r for r in e.keys)]] = rnd(*shape)
            continue
        r = min(rank, e.shapes["down"][0])
        if len(e.shapes["down"]) == 4 and len(shape) == 4:
            out[e.keys["down"]] = rnd(r, *shape[1:])
            out[e.keys["up"]] = rnd(shape[0], r, 1, 1)
        else:
            out[e.keys["down"]] = rnd(r, math.prod(shape[1:]))
            out[e.keys["up"]] = rnd(shape[0], r)
        if "alpha" in e.keys:
            out[e.keys["alpha"]] = torch.tensor(float(scalars.get(e.keys["alpha"], r))).to(dtype)
    return out
