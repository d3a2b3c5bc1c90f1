"""Apply an engine :class:`~..loralab.ops.apply.ApplyPlan` through ComfyUI's own patch system.

ComfyUI's ``comfy.lora.load_lora`` parses the tensors (so alpha, DoRA, LoHa, LoKr and diffs mean
exactly what they mean in core), fed with a key map built from the engine's canonical targets
instead of ComfyUI's name tables. Patches are added lazily with one ``add_patches`` call per
(patcher, distinct strength), so they stay reversible and work with fp8 weights and low-VRAM
offload like core's.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Mapping

import comfy.lora
import comfy.utils
import torch

from ...loralab.layouts import Target
from ...loralab.ops.apply import CLIP, MODEL, ApplyPlan, Planned
from ...loralab.ops.coverage import ABSENT

#: role -> the key suffix ComfyUI's adapters read, for tensors whose own name they do not read
_COMFY_NAMES = {"up": ".lora_up.weight", "down": ".lora_down.weight", "diff_b": ".diff_b"}


def comfy_target(target: Target) -> Any:
    """The key-map value ComfyUI uses for a target: the key, ``(key, (0, start, length))`` for a row
    slice, ``(key, offset, swap_scale_shift)`` where the halves of the rows swap."""
    offset = None if target.rows is None else (0, *target.rows)
    if target.swap_halves:
        return (target.key, offset, comfy.utils.swap_scale_shift)
    return target.key if offset is None else (target.key, offset)


def _patch_key(p: Planned) -> tuple[str, Any, Any]:
    """(module, key-map value, key of the patch load_lora makes) of a planned entry."""
    e, t = p.item.entry, p.item.target
    if e.param == "weight":
        value = comfy_target(t)
        return e.module, value, value
    # load_lora puts a module's bias diff at "<weight key minus .weight>.bias"
    stem = t.key[: -len(".bias")] if t.key.endswith(".bias") else t.key
    return e.module, stem + ".weight", stem + ".bias"


def _readable(plan: ApplyPlan, tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """The tensors, plus aliases in names ComfyUI reads for those it does not (XLabs ``.up.weight``
    / ``.down.weight``, PEFT ``lora_B.bias``)."""
    aliases = {}
    for p in plan.patches:
        e = p.item.entry
        for role, key in e.keys.items():
            unread = (e.style == "xlabs" and role in ("up", "down")) or key.endswith(".lora_B.bias")
            if unread:
                aliases[e.module + _COMFY_NAMES[role]] = tensors[key]
    return {**tensors, **aliases} if aliases else tensors


def _unique_dicts(pairs: Iterable[tuple[Any, Any]]) -> list[dict]:
    """Spread (key, value) pairs over as few dicts as possible with no key twice in one dict."""
    out: list[dict] = []
    for k, v in pairs:
        for d in out:
            if k not in d:
                d[k] = v
                break
        else:
            out.append({k: v})
    return out


def _adapters(plan: ApplyPlan, tensors: Mapping[str, torch.Tensor]) -> dict[Planned, Any]:
    """ComfyUI's parsed patch (adapter or diff) for every planned entry it could read; the others
    are dropped from the plan with the reason."""
    sd = _readable(plan, tensors)
    keyed = [(p, *_patch_key(p)) for p in plan.patches]
    batches = _unique_dicts((module, value) for _, module, value, _ in keyed)
    found: dict[Planned, Any] = {}
    parsed = [comfy.lora.load_lora(sd, batch, log_missing=False) for batch in batches]
    seen: set[tuple[str, Any]] = set()
    for p, module, value, patch_key in keyed:
        if (module, patch_key) in seen:  # load_lora keeps one adapter per module and weight
            plan.drop(p, "a second adapter for the same weight in one module (ComfyUI reads one)")
            continue
        seen.add((module, patch_key))
        for batch, patches in zip(batches, parsed):
            if batch.get(module) == value and patch_key in patches:
                found[p] = patches[patch_key]
                break
        else:
            plan.drop(p, "ComfyUI's LoRA loader could not read this module's tensors")
    return found


@contextlib.contextmanager
def _state_dict_once(module: torch.nn.Module) -> Iterator[None]:
    """While adding several patch groups, let ``module.state_dict()`` (which every add_patches call
    builds only to check which keys exist) be built once; the module is not changed meanwhile."""
    if "state_dict" in vars(module):  # someone else already replaced it: leave it alone
        yield
        return
    cached: dict[str, torch.Tensor] = {}
    original = module.state_dict

    def state_dict(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return original(*args, **kwargs)
        if not cached:
            cached.update(original())
        return cached

    module.state_dict = state_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.state_dict


def _add(plan: ApplyPlan, patcher: Any, which: str, adapters: dict[Planned, Any]) -> None:
    """One add_patches call per distinct strength (more only where two entries patch the very same
    target); entries the patcher has no weight for are dropped from the plan."""
    with _state_dict_once(patcher.model):
        for strength, planned in plan.groups(which):
            for group in _unique_dicts((_patch_key(p)[2], p) for p in planned if p in adapters):
                added = set(patcher.add_patches({k: adapters[p] for k, p in group.items()}, strength))
                for k, p in group.items():
                    if k not in added:
                        plan.drop(p, f"the {which} has no weight {p.key}", f"the {which} has no such weight", ABSENT)


def apply_plan(plan: ApplyPlan, tensors: Mapping[str, torch.Tensor], model: Any, clip: Any) -> tuple[Any, Any]:
    """Patched clones of ``model`` and ``clip`` (the inputs themselves where nothing lands on them)."""
    if plan.refused:
        return model, clip
    adapters = _adapters(plan, tensors)
    if plan.groups(MODEL):
        model = model.clone()
        _add(plan, model, MODEL, adapters)
    if clip is not None and plan.groups(CLIP):
        clip = clip.clone()
        _add(plan, clip.patcher, CLIP, adapters)
    return model, clip
