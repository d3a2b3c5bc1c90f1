"""Bake LoRAs into a model's weights, one weight at a time, so the result can be saved as a
checkpoint by any tool."""
from __future__ import annotations

from typing import Iterator, MutableMapping, Sequence

import torch

from ..errors import ArchMismatchError, LoraFormatError
from ..formats.model_weights import ModelWeights
from ..layouts import ModelLayout
from ..lora import MappedEntry
from .inputs import MergeInput
from .lowrank import WORK
from .results import Progress, non_finite


def baked_weights(weights: ModelWeights, inputs: Sequence[MergeInput], *,
                  progress: Progress | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(canonical key, new weight) for every weight the inputs change: each input applied in turn
    at its weight × block weight (DoRA through its own normalisation), computed in float64 and
    returned in the weight's dtype. Inputs must be mapped onto ``weights.layout``'s arch."""
    layout = weights.layout
    for inp in inputs:
        if inp.lora.layout is None or inp.lora.layout.arch.id != layout.arch.id:
            raise ArchMismatchError(f"{inp.title} is not a LoRA for {layout.arch.name}", path=inp.lora.path)
    blocks = [inp.blocks(layout.arch.id, layout) for inp in inputs]
    by_key: dict[str, list[tuple[int, MappedEntry]]] = {}
    for i, inp in enumerate(inputs):
        for m in inp.lora.mapped():
            by_key.setdefault(m.target.key, []).append((i, m))
    order = {k: n for n, k in enumerate(layout.shapes)}
    keys = sorted((k for k in by_key if k in weights), key=lambda k: order.get(k, len(order)))
    for done, key in enumerate(keys, 1):
        original = weights.get(key)
        w = original.to(WORK).clone()
        changed = False
        for i, m in by_key[key]:
            strength = inputs[i].weight * blocks[i].for_key(key)
            if strength == 0:
                continue
            if inputs[i].lora.layout.shapes.get(key) != tuple(original.shape):
                raise ArchMismatchError(f"{inputs[i].title} was mapped onto a model of another size "
                                        f"({key}: {list(original.shape)} here)", path=inputs[i].lora.path,
                                        hint="open the LoRA with this model's layout")
            target = m.target
            part = w if target.rows is None else w[target.rows[0]:target.rows[0] + target.rows[1]]
            if target.swap_halves:
                half = part.shape[0] // 2
                part = torch.cat([part[half:], part[:half]])
            new = inputs[i].lora.adapter(m.entry).apply_to(part, strength)
            if not bool(torch.isfinite(new).all()):
                raise LoraFormatError(non_finite(m.entry), path=inputs[i].lora.path, key=m.entry.module,
                                      hint="the file is damaged (or the weight is): nothing was baked")
            if target.swap_halves:
                half = new.shape[0] // 2
                new = torch.cat([new[half:], new[:half]])
            if target.rows is None:
                w = new
            else:
                w[target.rows[0]:target.rows[0] + target.rows[1]] = new
            changed = True
        if changed:
            yield key, w.to(original.dtype)
        if progress is not None:
            progress(done, len(keys))


def bake(state_dict: MutableMapping[str, torch.Tensor], inputs: Sequence[MergeInput], *,
         layout: ModelLayout | None = None, progress: Progress | None = None) -> list[str]:
    """Apply the inputs to a model state dict in place (keys in any layout
    :class:`~loralab.formats.model_weights.ModelWeights` reads); returns the state-dict keys changed."""
    weights = ModelWeights.from_state_dict(state_dict, layout)
    changed = []
    for key, value in baked_weights(weights, inputs, progress=progress):
        name = weights.file_key(key)
        state_dict[name] = value
        changed.append(name)
    return changed
