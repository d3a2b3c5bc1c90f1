"""How strongly a LoRA changes each absolute block of its base model, from the factors.

A module's strength is ‖scale·ΔW‖_F (Frobenius norm, strength 1), computed by the adapter without
building ΔW (Gram trick for LoRA, closed forms for LoHa/LoKr). A block's strength is the *block
norm* sqrt(Σ‖scale·ΔW_i‖²) over the modules whose target weights lie in it (by
:func:`loralab.blocks.map.block_of` on the target's canonical key): the Frobenius norm of all the
block's weight updates taken together. Row slices of one fused weight (to_q/to_k/to_v of a qkv)
therefore add up to the norm of the fused update.

With base weights, each block also gets its relative strength ‖ΔW‖/‖W‖: the block norm divided by
sqrt(Σ‖W_j‖²) over the distinct weights (or row slices) its modules write. DoRA and ``set_weight``
modules need the base weight for their true update; without it a DoRA module counts with its
low-rank ΔW (``exact`` false) and a ``set_weight`` module is left out. OFT, BOFT and GLoRA modules
(an update that is a function of the base weight, which only the loader applies) are counted in
their block as ``unmeasured`` and add nothing to its norm.

Tensors are read one module at a time; memory stays bounded by the largest module.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import torch

from ..adapters import Adapter
from ..blocks.map import OTHER, block_of, block_sort_key, layout_blocks
from ..files.safetensors import SafetensorsFile
from ..formats.keys import Entry
from ..layouts import DIFFUSION_PREFIX, Target
from ..lora import Lora, MappedEntry
from .lowrank import WORK, one_thread

#: what a block's number is, stated in reports
MEASURE = "block norm: sqrt of the sum of squared Frobenius norms of scale·ΔW over the block's modules"


class BaseWeights:
    """Base-model weights by ComfyUI key (``diffusion_model.…``, ``clip_l.transformer.…``), read on
    demand from a mapping (a model's state dict) or a safetensors file (a full checkpoint with
    ``model.diffusion_model.`` keys or a diffusion-model-only file without the prefix)."""

    def __init__(self, source: Mapping[str, torch.Tensor] | str | os.PathLike) -> None:
        self._file: SafetensorsFile | None = None
        self._map: Mapping[str, torch.Tensor] | None = None
        if isinstance(source, (str, os.PathLike)):
            self._file = SafetensorsFile(source)
        else:
            self._map = source

    def _lookup(self, key: str) -> str | None:
        names = [key, "model." + key]
        if key.startswith(DIFFUSION_PREFIX):
            names.append(key[len(DIFFUSION_PREFIX):])
        have = self._map if self._map is not None else self._file  # type: ignore[assignment]
        return next((n for n in names if n in have), None)  # type: ignore[operator]

    def get(self, target: Target) -> torch.Tensor | None:
        """The base weight a target writes (its row slice, where it has one), or None if absent."""
        name = self._lookup(target.key)
        if name is None:
            return None
        w = self._map[name] if self._map is not None else self._file.get(name)  # type: ignore[union-attr]
        w = w.detach().to("cpu")
        if target.rows is not None:
            w = w.narrow(0, target.rows[0], target.rows[1])
        return w

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class ModuleStrength:
    """One module's update size."""

    module: str
    target: str
    rows: tuple[int, int] | None
    block: str
    norm: float
    base_norm: float | None = None
    exact: bool = True  # False: a DoRA module measured without its base weight
    measured: bool = True  # False: an OFT, BOFT or GLoRA module (no ΔW of its own)


@dataclass
class BlockStrength:
    """One absolute block's update size (see the module docstring for the measure)."""

    block: str
    norm: float
    modules: int
    base_norm: float | None = None
    relative: float | None = None
    inexact: int = 0  # DoRA modules measured without base weights
    nonfinite: int = 0  # modules left out because their update has NaN/Inf values
    unmeasured: int = 0  # OFT, BOFT and GLoRA modules left out: their update depends on the base weights

    def to_dict(self) -> dict:
        return asdict(self)


def _base_delta_norm(adapter: Adapter, w: torch.Tensor) -> float:
    return float((adapter.apply_to(w, 1.0) - w.to(WORK)).norm())


def module_strength(item: MappedEntry, adapter: Adapter, family: str,
                    base: BaseWeights | None = None) -> ModuleStrength | None:
    """The strength of one mapped module (None for ``set_weight`` without a base weight)."""
    target = item.target
    assert target is not None
    w = base.get(target) if base is not None else None
    if w is not None and adapter.needs_base:
        norm, exact = _base_delta_norm(adapter, w), True
    elif not adapter.has_delta:
        return None
    else:
        norm, exact = adapter.fro_norm(), adapter.dora_scale is None
    return ModuleStrength(item.entry.module, target.key, target.rows, block_of(target.key, family), norm,
                          None if w is None else float(w.to(WORK).norm()), exact)


def aggregate(modules: list[ModuleStrength], blocks: tuple[str, ...], family: str,
              with_base: bool = False) -> list[BlockStrength]:
    """Block norms of module strengths; every block of ``blocks`` is listed, touched or not."""
    acc: dict[str, BlockStrength] = {b: BlockStrength(b, 0.0, 0) for b in blocks}
    sums: dict[str, float] = {b: 0.0 for b in blocks}
    base_sums: dict[str, float | None] = {b: 0.0 for b in blocks}
    seen: set[tuple[str, tuple[int, int] | None]] = set()
    for m in modules:
        if m.block not in acc:
            acc[m.block] = BlockStrength(m.block, 0.0, 0)
            sums[m.block] = 0.0
            base_sums[m.block] = 0.0
        b = acc[m.block]
        b.modules += 1
        if not m.measured:
            b.unmeasured += 1
            continue
        if not math.isfinite(m.norm):
            b.nonfinite += 1
            continue
        sums[m.block] += m.norm * m.norm
        b.inexact += not m.exact
        if m.base_norm is None or base_sums[m.block] is None:
            base_sums[m.block] = None
        elif (m.target, m.rows) not in seen:
            seen.add((m.target, m.rows))
            base_sums[m.block] += m.base_norm * m.base_norm  # type: ignore[operator]
    out = []
    for name, b in acc.items():
        b.norm = math.sqrt(sums[name])
        if with_base and b.modules and base_sums[name] is not None:
            b.base_norm = math.sqrt(base_sums[name])  # type: ignore[arg-type]
            b.relative = b.norm / b.base_norm if b.base_norm > 0 else None
        out.append(b)
    return sorted(out, key=lambda b: (b.block == OTHER, block_sort_key(b.block, family)))


def block_strengths(lora: Lora, base: BaseWeights | None = None,
                    on_module: Callable[[Entry, Adapter, float | None], None] | None = None) -> list[BlockStrength]:
    """Strength of every absolute block of the LoRA's layout, streaming one module at a time.

    ``on_module(entry, adapter, norm)`` is called for every supported entry while its tensors are
    loaded (``norm`` is None where no norm exists without a base weight), so other checks can
    share the single read.
    """
    if lora.layout is None:
        return []
    family = lora.layout.arch.family
    modules: list[ModuleStrength] = []
    # one module's tensors are small: a second torch thread only adds contention (ten times slower on
    # a busy two-core machine)
    with one_thread():
        for item in lora.items:
            if item.mapped and item.entry.needs_base:
                target = item.target
                modules.append(ModuleStrength(item.entry.module, target.key, target.rows,
                                              block_of(target.key, family), 0.0, measured=False))
            if not item.entry.supported:
                continue
            adapter = lora.adapter(item.entry)
            ms = module_strength(item, adapter, family, base) if item.mapped else None
            if ms is not None:
                modules.append(ms)
            if on_module is not None:
                norm = ms.norm if ms is not None else (adapter.fro_norm() if adapter.has_delta else None)
                on_module(item.entry, adapter, norm)
    return aggregate(modules, layout_blocks(lora.layout), family, with_base=base is not None)
