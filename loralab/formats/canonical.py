"""The one key canonicalizer: a LoRA module name, in any producer's naming, to the ComfyUI model
key it modifies (and the row slice of a fused weight, where the producer split one)."""
from __future__ import annotations

import functools
import math
import re

from ..layouts import ModelLayout, Resolved, Target
from .keys import Entry

_KOHYA_TE = re.compile(r"^lora_te(\d?)_(.+)$")
_DIFFUSERS_TE = re.compile(r"^(text_encoder(?:_\d)?)\.(.+)$")
_UNDERSCORE_UNET_PREFIXES = ("lora_unet_", "lycoris_", "lora_transformer_")
_DOTTED_UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "unet.")
_PEFT_WRAPPERS = ("base_model.model.",)


def _dotted_unet(layout: ModelLayout, name: str) -> Resolved | None:
    hit = layout.resolve_unet(name)
    if hit is not None:
        return hit
    if ".processor." in name:  # diffusers attention-processor names: attn1.processor.to_q
        cleaned = name.replace(".processor.", ".")
        hit = layout.resolve_unet(cleaned) or (layout.resolve_unet(cleaned + ".0") if cleaned.endswith(".to_out") else None)
    return hit


@functools.lru_cache(maxsize=16384)
def parse_module_name(name: str) -> tuple[str, str, str]:
    """How a module name addresses a model, independent of any architecture:
    (kind, selector, rest) with kind one of ``unet_u`` (underscored), ``unet`` (dotted),
    ``kohya_te`` (selector: the prefix index), ``diffusers_te`` (selector: the component),
    ``comfy_te`` (selector: the ComfyUI TE name, or "" where the name leaves it out:
    ``text_encoders.transformer.<key>``, ComfyUI's name for a key of its non-CLIP encoder)."""
    for wrapper in _PEFT_WRAPPERS:
        if name.startswith(wrapper):
            return parse_module_name(name[len(wrapper):])
    m = _KOHYA_TE.match(name)
    if m:
        return "kohya_te", m.group(1), m.group(2)
    for prefix in _UNDERSCORE_UNET_PREFIXES:
        if name.startswith(prefix):
            return "unet_u", "", name[len(prefix):]
    m = _DIFFUSERS_TE.match(name)
    if m:
        return "diffusers_te", m.group(1), m.group(2)
    if name.startswith("text_encoders."):  # ComfyUI's generic form: text_encoders.<clip state-dict key>
        rest = name[len("text_encoders."):]
        if rest.startswith("transformer."):
            return "comfy_te", "", rest[len("transformer."):]
        te, _, inner = rest.partition(".transformer.")
        return "comfy_te", te, inner
    for prefix in _DOTTED_UNET_PREFIXES:
        if name.startswith(prefix):
            return "unet", "", name[len(prefix):]
    return "unet", "", name


def resolve_module(name: str, layout: ModelLayout) -> Resolved | None:
    """Where the LoRA module ``name`` lands in ``layout``, or None if nowhere."""
    kind, selector, rest = parse_module_name(name)
    if kind == "unet":
        return _dotted_unet(layout, rest)
    if kind == "unet_u":
        return layout.resolve_unet(rest, underscore=True)
    if kind == "kohya_te":
        te = layout.arch.kohya_te.get(selector)
        return layout.resolve_te(te, rest, underscore=True) if te else None
    if kind == "diffusers_te":
        te = layout.arch.diffusers_te.get(selector)
        return layout.resolve_te(te, rest) if te else None
    if not rest:
        return None
    if not selector:  # ComfyUI maps the name to every non-CLIP encoder's key; the last one wins
        for te in reversed(layout.arch.text_encoders):
            if not te.startswith("clip_"):
                hit = layout.resolve_te(te, rest)
                if hit is not None:
                    return hit
        return None
    return layout.resolve_te(selector, rest)


def target_for(entry: Entry, layout: ModelLayout) -> tuple[Target | None, Resolved | None]:
    """The model weight an entry writes (None if the module or its parameter is not in the model)."""
    res = resolve_module(entry.module, layout)
    if res is None:
        return None, None
    key = layout.key_for(res, entry.param)
    if key is None:
        return None, res
    return Target(key, res.rows if entry.param == "weight" else None, res.swap_halves), res


def target_shape(target: Target, layout: ModelLayout) -> tuple[int, ...]:
    """The shape of the part of the model weight a target covers."""
    shape = layout.shapes[target.key]
    if target.rows is not None:
        return (target.rows[1], *shape[1:])
    return shape


def shape_fits(entry: Entry, shape: tuple[int, ...]) -> bool:
    """Whether an entry's ΔW has the size of the target weight (conv kernels may be flattened); for
    OFT, BOFT and GLoRA, whether they can act on it."""
    if entry.needs_base:
        return entry.base_problem(shape) is None
    ds = entry.delta_shape()
    if ds is None:
        return False
    if entry.param == "bias" or len(shape) < 2:
        if entry.algorithm_spec.whole_tensor:
            return math.prod(entry.shapes[next(iter(entry.shapes))]) == math.prod(shape)
        return ds[0] * ds[1] == math.prod(shape)
    return ds == (shape[0], math.prod(shape[1:]))
