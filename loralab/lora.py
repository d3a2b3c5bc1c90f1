"""A LoRA parsed, detected and mapped onto a model layout: the entry point every feature uses."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from .adapters import ALGORITHMS, Adapter, dora
from .errors import BaseWeightsNeededError, LoraFormatError
from .files.sources import DictSource, FileSource, TensorSource
from .formats import split_qkv as _split_qkv
from .formats.canonical import shape_fits, target_for, target_shape
from .formats.detect import Detection, detect
from .formats.host_keys import HostRules, host_targets
from .formats.keys import Entry, group_keys
from .layouts import ModelLayout, Target, layout_for

if TYPE_CHECKING:
    import torch


@dataclass
class MappedEntry:
    """An entry with the model weight it writes, or the reason it writes none."""

    entry: Entry
    target: Target | None
    component: str | None  # "unet" or a text-encoder name; None when unmapped
    reason: str | None = None  # why it is not applied (None when mapped)

    @property
    def mapped(self) -> bool:
        return self.target is not None and self.reason is None

    def algorithm(self, layout: ModelLayout | None) -> str:
        """The algorithm's name, knowing the target: a LoRA on a k×k convolution (k > 1) is LoCon,
        also when its producer flattened the kernel."""
        name = self.entry.algorithm()
        if (name.startswith("LoRA") and "Tucker" not in name and layout is not None
                and self.target is not None):
            shape = layout.shapes.get(self.target.key, ())
            if len(shape) == 4 and shape[2] * shape[3] > 1:
                return "LoCon" + name[len("LoRA"):]
        return name


def build_adapter(entry: Entry, get: Callable[[str], torch.Tensor]) -> Adapter:
    """Load an entry's tensors and build its :class:`~loralab.adapters.Adapter`."""
    if entry.problem is not None:
        raise LoraFormatError(entry.problem, key=entry.module)
    if entry.needs_base:
        raise BaseWeightsNeededError(f"{entry.algorithm()} needs the base weights: LoRA Lab applies it in the loader "
                                     "but cannot compute its ΔW (merge, resize, convert and bake refuse it)",
                                     key=entry.module, hint="apply this LoRA with the loader, or leave it out")
    tensors = {role: get(key) for role, key in entry.keys.items() if role != "alpha"}
    return ALGORITHMS[entry.kind].build(tensors, entry.alpha)


class Lora:
    """A LoRA's entries, its detected format and architecture, and where each entry lands.

    Opening reads the header and the alpha scalars only; :meth:`adapter` reads an entry's tensors.
    """

    def __init__(self, source: TensorSource, layout: ModelLayout | None = None) -> None:
        self.source = source
        keys = source.keys()
        parsed = group_keys({k: source.shape(k) for k in keys}, {k: source.dtype(k) for k in keys})
        for e in parsed.entries:
            if e.alpha_key is not None:
                if math.prod(e.shapes["alpha"]) != 1:
                    e.problem = e.problem or f"alpha has shape {list(e.shapes['alpha'])}, not a scalar"
                else:
                    e.alpha = source.scalar(e.alpha_key)
        self.entries: list[Entry] = parsed.entries
        self.unrecognized: list[str] = parsed.unrecognized
        self.orphans: list[str] = parsed.orphans
        self.detection: Detection = detect(parsed.entries, keys, source.metadata)
        if layout is None and self.detection.arch is not None:  # a Wan LoRA that trained VACE's modules: VACE's layout
            layout = layout_for(self.detection.arch, vace=any("vace_" in e.module for e in parsed.entries))
        self.layout = layout
        self.items: list[MappedEntry] = [self._map(e) for e in self.entries]
        self._host_dropped: dict[HostRules, frozenset[str]] = {}

    @classmethod
    def open(cls, path: str | os.PathLike, layout: ModelLayout | None = None) -> "Lora":
        """Open a LoRA safetensors file (header and alphas only)."""
        return cls(FileSource(path), layout)

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                        layout: ModelLayout | None = None, label: str | None = None) -> "Lora":
        """Wrap tensors already in memory (a LORA_MODEL, a merge result)."""
        return cls(DictSource(tensors, metadata, label), layout)

    def _map(self, e: Entry) -> MappedEntry:
        if e.problem is not None:
            return MappedEntry(e, None, None, e.problem)
        if self.layout is None:
            return MappedEntry(e, None, None, "the architecture could not be determined")
        target, res = target_for(e, self.layout)
        where = self.layout.arch.name
        if res is None:
            return MappedEntry(e, None, None, f"no module of {where} has this name")
        if target is None:
            return MappedEntry(e, None, res.component, f"{res.module} has no {e.param} in {where}")
        shape = target_shape(target, self.layout)
        if e.needs_base:
            problem = e.base_problem(shape)
            if problem is not None:
                return MappedEntry(e, target, res.component, f"{problem} ({target.key} of {where})")
        elif not shape_fits(e, shape):
            got = e.delta_shape()
            return MappedEntry(e, target, res.component,
                               f"size {list(got) if got else '?'} does not fit {target.key} {list(shape)} of {where}")
        if e.has_dora and not dora.fits(e.shapes[dora.ROLE], shape):
            return MappedEntry(e, target, res.component, f"dora_scale {list(e.shapes['dora_scale'])} fits neither "
                               f"the rows nor the columns of {target.key} {list(shape)}")
        return MappedEntry(e, target, res.component)

    @property
    def path(self) -> str | None:
        return self.source.path

    @property
    def metadata(self) -> dict[str, str]:
        return self.source.metadata

    def mapped(self) -> Iterator[MappedEntry]:
        """Entries that land on a weight of the layout."""
        return (m for m in self.items if m.mapped)

    def unmapped(self) -> Iterator[MappedEntry]:
        """Entries that land nowhere, each with its reason."""
        return (m for m in self.items if not m.mapped)

    def split_qkv(self, verify: bool = False) -> dict[str, int]:
        """Modules kohya trained as ``split_qkv`` parts (module name -> number of parts): declared in the
        metadata, with rank = parts × ``ss_network_dim``; ``verify`` also reads each up matrix and keeps
        only the block-diagonal ones (a file resized since is no longer split)."""
        if self.layout is None or not _split_qkv.declared(self.metadata):
            return {}
        dim = _split_qkv.network_dim(self.metadata)
        found: dict[str, int] = {}
        for m in self.mapped():
            e = m.entry
            if e.kind != "lora" or m.target.rows is not None or "up" not in e.keys:
                continue
            rows = _split_qkv.part_rows(m.target.key, self.layout.shapes.get(m.target.key, ()))
            r = e.rank()
            if rows is None or not r or r % len(rows) or (dim is not None and r != dim * len(rows)):
                continue
            if verify and not _split_qkv.block_diagonal(self.source.get(e.keys["up"]), rows):
                continue
            found[e.module] = len(rows)
        return found

    def as_trained(self, parts: Mapping[str, int]) -> int:
        """Scale the alpha of each module in ``parts`` (from :meth:`split_qkv`) by its number of parts, so
        its ΔW is the one kohya trained; returns how many modules changed."""
        changed = 0
        for e in self.entries:
            n = parts.get(e.module)
            if n and e.alpha is not None:
                e.alpha *= n
                changed += 1
        return changed
    def host_dropped(self, rules: HostRules) -> frozenset[str]:
        """The tensor keys that the ComfyUI version of ``rules`` drops when its own loader loads this
        file onto a model of this layout (every key where the layout is unknown)."""
        if rules not in self._host_dropped:  # a plan asks on every run of a loader: once per file and host
            keys = self.source.keys()
            if self.layout is None:
                self._host_dropped[rules] = frozenset(keys)
            else:
                modules = {k: e.module for e in self.entries for k in e.keys.values()}
                targets = host_targets(keys, self.layout, modules, rules)
                self._host_dropped[rules] = frozenset(k for k, target in targets.items() if target is None)
        return self._host_dropped[rules]

    def adapter(self, entry: Entry) -> Adapter:
        """Read an entry's tensors and build its adapter."""
        try:
            return build_adapter(entry, self.source.get)
        except LoraFormatError as e:
            raise type(e)(e.problem, path=self.source.label, key=entry.module, hint=e.hint) from None

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "Lora":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
