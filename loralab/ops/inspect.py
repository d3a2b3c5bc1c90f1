"""Inspect a LoRA: what it is for, what it changes, how it was trained, and what is wrong with it.

:func:`summarize` reads the header and the 0-d alpha scalars only (no weight data);
:func:`inspect_lora` adds what needs the tensors (block strengths, NaN/Inf and all-zero checks)
and the file hashes, on request.

JSON shape of :meth:`Summary.to_dict` (``schema`` 1; the ``/loralab/lora_info?details=1`` route
returns it, with ``path`` replaced by the name relative to the ``loras`` folder). Values are JSON
types; a number that does not exist is ``null``::

    schema: 1
    verdict: str                                         # one line: what it is for and how much maps,
                                                         # or "not a LoRA (looks like a checkpoint): ..."
    not_lora: str | null                                 # no LoRA tensor in it and it looks like a "checkpoint",
                                                         # "textual-inversion embedding", "VAE" or "text encoder"
    name, path: str; file_size: int (bytes); tensor_count: int; dtypes: {dtype: tensors}
    format: {id, name}                                   # producer, e.g. {"kohya", "kohya sd-scripts"}
    arch: {id, name, variant, metadata_claim,            # ids: sd1 sd2 sdxl sdxl_refiner flux ... | null; variant: a
           also_fits: [{id, name}]}                      # release's label ("Kontext"); also_fits: the archs the keys
                                                         # fit as well where the metadata does not decide
    algorithms: {name: modules}                          # "LoRA", "LoCon", "LoHa", "LoKr", "... + DoRA", "Full diff",
                                                         # "OFT", "BOFT", "GLoRA"
    rank, alpha, scale: {summary: "16 ×304", values: [{value, count}], varies: bool,
                         by_group: [{group, summary}]}   # scale = alpha/rank as applied; alpha value
                                                         # null = no alpha tensor (alpha = rank)
    coverage: {modules, mapped, unmapped, unet, text_encoder, components: {unet|clip_l|clip_g|clip_h|t5xxl: n},
               blocks: [block ids touched]}
    layers: {linear, conv, other}                        # conv = k×k convolutions, other = 1-D (norms, biases)
    modules: [{module, param, algorithm, component, target, rows, block, layer, rank, alpha, scale}]
    unmapped: [{module, param, reason}]; unrecognized_keys: [str]
    host: {name: "ComfyUI 0.33.0", dropped_keys: int, dropped_we_map: int, modules_we_map: [module]}
    training: {trainer, title, base_model, base_model_version, steps, max_steps, epochs, max_epochs,
               resolution, images, train_images, reg_images, batch_size, optimizer, optimizer_args,
               learning_rate, unet_lr, text_encoder_lr, lr_scheduler, network_module, network_algo,
               network_dim, network_alpha, network_args, mixed_precision, seed, started_at, finished_at}
    triggers: [{word, kind, source, count, images, likely}]; trigger_words: [str]
    tags: {top: [{tag, count}], distinct, folders, skipped, problem}   # ss_tag_frequency's 8 most frequent
                                                         # tags over all folders; problem: why it is unreadable
    tag_frequency: [{folder, images, tags: [{tag, count}]}]
    metadata: {kohya: {...typed}, modelspec: {...}, aitoolkit: {...}, diffusers: {...}, other: {...},
               errors: {key: why}}
    warnings: [{code, message, count, items}]            # header-level health warnings; codes:
        not_a_lora, arch_mismatch, unknown_arch, alpha_nonfinite, alpha_not_positive, alpha_far_above_rank,
        alpha_ignored, rank_vs_metadata, alpha_vs_metadata, split_qkv, duplicate_target, unknown_keys,
        unmapped_modules, size_mismatch, broken_module

:meth:`Report.to_dict` is the same plus ``blocks`` ({family, measure, relative: bool, items:
[{block, norm, modules, base_norm, relative, inexact, nonfinite, unmeasured}]}, or null),
``hashes`` ({sha256, autov2, addnet, autov3, legacy, stored_addnet, stored_legacy, stored_spec,
addnet_matches, legacy_matches, spec_matches}, or null), and ``warnings`` including the tensor-level
ones (nonfinite_values, all_zero).

:meth:`Summary.panel_dict` is the metadata panel's answer (the route's default, a few KB whatever
the number of modules): ``schema``, ``verdict``, ``not_lora``, ``name``, ``path``, ``file_size``,
``format``, ``arch``, ``algorithms``, ``rank``, ``alpha``, ``coverage``, ``training`` (without
``network_args``), ``tags``, ``trigger_words``, ``triggers`` (the caption tags among them only where
likely) and ``warnings`` with their first 3 items; the module lists, the metadata and the tag table
are in :meth:`Summary.to_dict` only.
"""
from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from ..blocks.map import OTHER, block_of, block_sort_key
from ..files.hashes import Hashes, file_hashes
from ..files.safetensors import gc_paused
from ..formats.host_keys import NEWEST, HostRules
from ..formats.keys import Entry
from ..formats.metadata import Metadata, Training, folder_images, parse_metadata, training_summary
from ..formats.not_lora import not_a_lora, use_instead
from ..formats.triggers import (TagFolders, TagSummary, Trigger, find_triggers, tag_folders, tag_frequency, tag_summary,
                                trigger_words)
from ..layouts import ModelLayout
from ..layouts.archs import ARCHS
from ..lora import Lora, MappedEntry
from .health import HealthWarning, TensorChecks, adapter_tensors, header_warnings

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .block_strength import BlockStrength

SCHEMA = 1
#: items per warning in :meth:`Summary.panel_dict` (the panel shows as many, then "… and N more")
PANEL_ITEMS = 3

_block_of = functools.lru_cache(maxsize=1 << 16)(block_of)


def _num(v: float | int | None) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def _label(v: float | int | None, none: str = "none") -> str:
    if v is None:
        return none
    return f"{v:g}" if isinstance(v, float) else str(v)


def _counted(values: Iterable[float | int | None]) -> list[tuple[float | int | None, int]]:
    return sorted(Counter(values).items(), key=lambda kv: (-kv[1], _label(kv[0])))


def _summary(values: list[tuple[float | int | None, int]], none: str = "none") -> str:
    return ", ".join(f"{_label(v, none)} ×{n}" for v, n in values)


@dataclass
class Distribution:
    """How a per-module number is spread: value -> modules, most common first."""

    values: list[tuple[float | int | None, int]]
    by_group: list[tuple[str, str]] = field(default_factory=list)  # (group, summary) where it varies
    none: str = "none"  # how a missing value reads

    @classmethod
    def of(cls, pairs: list[tuple[str, float | int | None]], none: str = "none") -> "Distribution":
        """From (group, value) pairs; groups are listed only when the value varies."""
        dist = cls(_counted(v for _, v in pairs), none=none)
        if len(dist.values) > 1:
            groups: dict[str, list] = {}
            for g, v in pairs:
                groups.setdefault(g, []).append(v)
            dist.by_group = [(g, _summary(_counted(vs), none)) for g, vs in groups.items()]
        return dist

    @property
    def summary(self) -> str:
        return _summary(self.values, self.none)

    @property
    def varies(self) -> bool:
        return len(self.values) > 1

    def to_dict(self) -> dict:
        return {"summary": self.summary, "values": [{"value": _num(v), "count": n} for v, n in self.values],
                "varies": self.varies, "by_group": [{"group": g, "summary": s} for g, s in self.by_group]}


def _layer(m: MappedEntry, layout: ModelLayout | None) -> str:
    """``conv`` (k×k convolution, k > 1), ``linear`` (matrices and 1×1 convolutions) or ``other``
    (1-D weights and biases), from the target weight where the entry has one."""
    e = m.entry
    if layout is not None and m.target is not None and m.target.key in layout.shapes:
        shapes = [layout.shapes[m.target.key]]
    elif e.param == "bias":
        return "other"
    else:
        shapes = [s for r, s in e.shapes.items() if r not in ("alpha", "dora_scale")]
    if any(len(s) == 4 and s[2] * s[3] > 1 for s in shapes) or "mid" in e.shapes or "t1" in e.shapes:
        return "conv"
    return "other" if all(len(s) < 2 for s in shapes) else "linear"


@dataclass
class ModuleInfo:
    """One entry of the file as the summary lists it."""

    module: str
    param: str
    algorithm: str
    component: str | None
    target: str | None
    rows: tuple[int, int] | None
    block: str | None
    layer: str
    rank: int | None
    alpha: float | None
    scale: float | None

    def to_dict(self) -> dict:
        return {"module": self.module, "param": self.param, "algorithm": self.algorithm,
                "component": self.component, "target": self.target, "rows": list(self.rows) if self.rows else None,
                "block": self.block, "layer": self.layer, "rank": self.rank, "alpha": _num(self.alpha),
                "scale": _num(self.scale)}


@dataclass
class Summary:
    """Everything known about a LoRA file from its header and alpha scalars."""

    path: str
    file_size: int
    tensor_count: int
    dtypes: dict[str, int]
    format: str
    format_name: str
    arch: str | None
    arch_name: str
    arch_variant: str | None
    metadata_arch: str | None
    family: str | None
    algorithms: dict[str, int]
    rank: Distribution
    alpha: Distribution
    scale: Distribution
    modules: list[ModuleInfo]
    unmapped: list[dict[str, str]]
    unrecognized_keys: list[str]
    host_dropped: int
    host_dropped_we_map: list[str]
    host_name: str  # the ComfyUI version host_dropped is for ("ComfyUI 0.33.0")
    metadata: Metadata
    training: Training
    triggers: list[Trigger]
    tags: TagSummary
    tag_folders: TagFolders
    warnings: list[HealthWarning]
    not_lora: str | None = None
    also_fits: list[str] = field(default_factory=list)  # Detection.also_fits

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def components(self) -> dict[str, int]:
        return dict(Counter(m.component for m in self.modules if m.target is not None and m.component))

    @property
    def layers(self) -> dict[str, int]:
        c = Counter(m.layer for m in self.modules)
        return {k: c.get(k, 0) for k in ("linear", "conv", "other")}

    @property
    def blocks_touched(self) -> list[str]:
        found = {m.block for m in self.modules if m.block is not None}
        if self.family is None:
            return sorted(found)
        return sorted(found, key=lambda b: (b == OTHER, block_sort_key(b, self.family)))  # type: ignore[arg-type]

    @property
    def trigger_words(self) -> list[str]:
        return trigger_words(self.triggers)

    @property
    def arch_label(self) -> str:
        """The base model's name, and the others its keys fit as well where the metadata does not
        say which it is: "Flux.1 (keys also fit Chroma)"."""
        if not self.also_fits:
            return self.arch_name
        return f"{self.arch_name} (keys also fit {', '.join(ARCHS[a].name for a in self.also_fits)})"

    def verdict(self, warnings: int | None = None) -> str:
        """One line: what the file is for and how much of it maps onto that model, or what it is
        instead of a LoRA; ``warnings`` (default: the header-level ones) are counted at the end."""
        if self.not_lora is not None:
            return f"{not_a_lora(self.not_lora)}: {use_instead(self.not_lora)}"
        if not self.modules:
            return "no LoRA tensors in this file: it changes nothing"
        mapped = sum(self.components.values())
        algorithms = " + ".join(self.algorithms)
        target = f"for {self.arch_label}" if self.arch else "for no known base model"
        line = f"{algorithms} {target}: {mapped} of {len(self.modules)} modules map onto it"
        if self.rank.values and not self.rank.varies:
            line += f"; rank {_label(self.rank.values[0][0])}"
        elif self.rank.values:
            ranks = [v for v, _ in self.rank.values if v is not None]
            line += f"; rank {min(ranks)}-{max(ranks)}" if ranks else ""
        n = len(self.warnings) if warnings is None else warnings
        return line + (f"; {n} warning(s) below" if n else "")

    def _arch(self) -> dict:
        return {"id": self.arch, "name": self.arch_name, "variant": self.arch_variant,
                "metadata_claim": self.metadata_arch, "also_fits": [{"id": a, "name": ARCHS[a].name} for a in self.also_fits]}

    def _coverage(self) -> dict:
        comps = self.components
        mapped = sum(comps.values())
        return {"modules": len(self.modules), "mapped": mapped, "unmapped": len(self.modules) - mapped,
                "unet": comps.get("unet", 0), "text_encoder": mapped - comps.get("unet", 0),
                "components": comps, "blocks": self.blocks_touched}

    def panel_dict(self) -> dict:
        """What the metadata panel shows (module docstring): the summary without its per-module
        lists, metadata and tag table."""
        training = self.training.to_dict()
        del training["network_args"]
        return {
            "schema": SCHEMA, "verdict": self.verdict(), "not_lora": self.not_lora, "name": self.name, "path": self.path,
            "file_size": self.file_size, "format": {"id": self.format, "name": self.format_name},
            "arch": self._arch(),
            "algorithms": self.algorithms, "rank": self.rank.to_dict(), "alpha": self.alpha.to_dict(),
            "coverage": self._coverage(), "training": training, "tags": self.tags.to_dict(),
            "triggers": [t.to_dict() for t in self.triggers if t.kind != "tag" or t.likely],
            "trigger_words": self.trigger_words,
            "warnings": [w.to_dict(PANEL_ITEMS) for w in self.warnings],
        }

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA, "verdict": self.verdict(), "not_lora": self.not_lora, "name": self.name, "path": self.path, "file_size": self.file_size,
            "tensor_count": self.tensor_count, "dtypes": self.dtypes,
            "format": {"id": self.format, "name": self.format_name},
            "arch": self._arch(),
            "algorithms": self.algorithms,
            "rank": self.rank.to_dict(), "alpha": self.alpha.to_dict(), "scale": self.scale.to_dict(),
            "coverage": self._coverage(),
            "layers": self.layers,
            "modules": [m.to_dict() for m in self.modules],
            "unmapped": self.unmapped, "unrecognized_keys": self.unrecognized_keys,
            "host": {"name": self.host_name, "dropped_keys": self.host_dropped, "dropped_we_map": len(self.host_dropped_we_map),
                     "modules_we_map": self.host_dropped_we_map},
            "training": self.training.to_dict(),
            "triggers": [t.to_dict() for t in self.triggers], "trigger_words": self.trigger_words,
            "tags": self.tags.to_dict(),
            "tag_frequency": tag_frequency(self.tag_folders, folder_images(self.metadata)),
            "metadata": self.metadata.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
        }

    def text_lines(self) -> list[str]:
        """The concise human-readable report (header part)."""
        mib = self.file_size / 2**20
        lines = [f"file: {self.name}  {mib:.1f} MiB, {self.tensor_count} tensors ("
                 + ", ".join(f"{k} ×{v}" for k, v in self.dtypes.items()) + ")"]
        claim = ""
        if self.metadata_arch and self.metadata_arch != self.arch:
            claim = f" (metadata claims {self.metadata_arch})"
        arch = self.arch_label + claim
        lines.append(f"format: {self.format_name}   base model: {arch}")
        lines.append("algorithm: " + ", ".join(f"{k} ×{v}" for k, v in self.algorithms.items()))
        for label, dist in (("rank", self.rank), ("alpha", self.alpha), ("scale alpha/rank", self.scale)):
            line = f"{label}: {dist.summary or '-'}"
            if dist.by_group:
                line += "   (" + "; ".join(f"{g}: {s}" for g, s in dist.by_group) + ")"
            lines.append(line)
        comps = self.components
        mapped = sum(comps.values())
        layers = self.layers
        lines.append(f"modules: {mapped} of {len(self.modules)} mapped ("
                     + ", ".join(f"{k} {v}" for k, v in comps.items()) + "); "
                     + ", ".join(f"{k} {v}" for k, v in layers.items() if v))
        if self.blocks_touched:
            lines.append("blocks: " + " ".join(self.blocks_touched))
        if self.host_dropped:
            we = len(self.host_dropped_we_map)
            lines.append(f"{self.host_name} drops {self.host_dropped} of {self.tensor_count} keys"
                         + (f"; LoRA Lab maps {we} of those modules" if we else ""))
        else:
            lines.append(f"{self.host_name} loads every key")
        lines += _training_lines(self.training)
        words = self.trigger_words
        lines.append("trigger words: " + (", ".join(words) if words else "none found"))
        sources: dict[str, tuple[str, list[str]]] = {}
        for t in self.triggers:
            if t.kind != "tag" or t.likely:
                where = t.source + (f" (in {t.count} of {t.images} captions)" if t.kind == "tag" else "")
                sources.setdefault(" ".join(t.word.lower().split()), (t.word, []))[1].append(where)
        lines += [f"  {word}  <- " + "; ".join(wheres) for word, wheres in sources.values()]
        if self.tags.top:
            lines.append("top tags: " + ", ".join(f"{t} ({n})" for t, n in self.tags.top))
        if self.tags.problem or self.tags.skipped:
            lines.append("tags: " + (self.tags.problem or f"{self.tags.skipped} ss_tag_frequency entries left out "
                                                          "(not a tag with a caption count)"))
        return lines

    def to_text(self) -> str:
        """The verdict, then the header report and the health warnings."""
        return "\n".join([self.verdict()] + self.text_lines() + _warning_lines(self.warnings))


def _training_lines(t: Training) -> list[str]:
    if t.is_empty():
        return ["training: no training metadata"]
    parts = []
    if t.trainer:
        parts.append(t.trainer)
    if t.base_model or t.base_model_version:
        parts.append("base " + " / ".join(str(x) for x in (t.base_model, t.base_model_version) if x))
    if t.steps is not None or t.epochs is not None:
        parts.append(", ".join(f"{v} {k}" for k, v in (("steps", t.steps), ("epochs", t.epochs)) if v is not None))
    if t.resolution:
        parts.append(t.resolution)
    if t.images is not None or t.train_images is not None:
        imgs = f"{t.images} images" if t.images is not None else ""
        if t.train_images is not None and t.train_images != t.images:
            imgs += f" ({t.train_images} per epoch with repeats)" if imgs else f"{t.train_images} images per epoch"
        parts.append(imgs)
    line2 = []
    if t.optimizer:
        line2.append(t.optimizer + (f"({t.optimizer_args})" if t.optimizer_args else ""))
    lrs = [f"{k} {v:g}" for k, v in (("lr", t.learning_rate), ("unet", t.unet_lr), ("te", t.text_encoder_lr))
           if v is not None]
    if lrs:
        line2.append(" ".join(lrs))
    if t.lr_scheduler:
        line2.append(t.lr_scheduler)
    if t.network_module:
        net = t.network_module + (f" ({t.network_algo})" if t.network_algo else "") + "".join(f" {k} {v}" for k, v in (("dim", t.network_dim), ("alpha", t.network_alpha))
                                         if v is not None)
        if t.network_args:
            net += " " + ", ".join(f"{k}={v}" for k, v in t.network_args.items())
        line2.append(net)
    out = ["training: " + " · ".join(parts)]
    if line2:
        out.append("          " + " · ".join(line2))
    return out


def _warning_lines(warnings: list[HealthWarning]) -> list[str]:
    if not warnings:
        return ["health: no problems found"]
    lines = [f"health: {len(warnings)} warning(s)"]
    for w in warnings:
        lines.append(f"  ! {w.message}")
        lines += [f"      {item}" for item in w.items[:3]]
        if len(w.items) > 3:
            lines.append(f"      ... and {len(w.items) - 3} more")
    return lines


def _block_lines(blocks: list[BlockStrength], relative: bool) -> list[str]:
    touched = [b for b in blocks if b.modules]
    if not touched:
        return ["block strength: no module maps onto a block"]
    measured = [b for b in touched if b.modules > b.unmeasured]
    strongest = f"; strongest {max(measured, key=lambda b: b.norm).block}" if measured else ""
    what = "‖ΔW‖/‖W‖" if relative else "‖ΔW‖"
    lines = [f"block strength {what} (block norm{strongest}), untouched blocks left out:"]
    cells = [f"{b.block:<5} {(b.relative if relative and b.relative is not None else b.norm):<9.3g}" for b in touched]
    lines += ["  " + " ".join(cells[i:i + 6]).rstrip() for i in range(0, len(cells), 6)]
    inexact = sum(b.inexact for b in touched)
    nonfinite = sum(b.nonfinite for b in touched)
    unmeasured = sum(b.unmeasured for b in touched)
    if inexact:
        lines.append(f"  ({inexact} DoRA module(s) counted without their magnitude: no base weights given)")
    if nonfinite:
        lines.append(f"  ({nonfinite} module(s) with NaN/Inf values left out)")
    if unmeasured:
        lines.append(f"  ({unmeasured} OFT/BOFT/GLoRA module(s) left out: their update depends on the base weights)")
    return lines


def _group(m: MappedEntry, layer: str) -> str:
    return f"{m.component or 'unmapped'} {layer}"


def summary_of(lora: Lora, path: str, file_size: int, host: HostRules = NEWEST) -> Summary:
    """The header-level summary of an open :class:`Lora`; ``host``: the ComfyUI version whose
    loader the dropped-key count emulates."""
    src = lora.source
    keys = src.keys()
    det = lora.detection
    family = lora.layout.arch.family if lora.layout is not None else None
    modules: list[ModuleInfo] = []
    ranks, alphas, scales = [], [], []
    for m in lora.items:
        e = m.entry
        layer = _layer(m, lora.layout)
        rank = e.rank()
        weighted = e.algorithm_spec.weighted
        scale = e.scale() if weighted else None
        t = m.target if m.mapped else None
        block = _block_of(t.key, family) if t is not None and family else None
        modules.append(ModuleInfo(e.module, e.param, m.algorithm(lora.layout), m.component if t else None,
                                  t.key if t else None, t.rows if t else None, block, layer, rank, e.alpha, scale))
        if weighted:
            group = _group(m, layer)
            if rank is not None:
                ranks.append((group, rank))
            alphas.append((group, e.alpha))
            scales.append((group, scale))
    dropped = lora.host_dropped(host)
    dropped_we_map = [m.entry.module for m in lora.mapped() if any(k in dropped for k in m.entry.keys.values())]
    md = parse_metadata(src.metadata)
    tags = tag_folders(md)
    dtypes = Counter(src.dtype(k) for k in keys)
    return Summary(
        path=path, file_size=file_size, tensor_count=len(keys), dtypes=dict(dtypes),
        format=det.format, format_name=det.format_name, arch=det.arch, arch_name=det.arch_name,
        arch_variant=det.arch_variant, metadata_arch=det.metadata_arch, family=family,
        algorithms=dict(Counter(mi.algorithm for mi in modules)),
        rank=Distribution.of(ranks), alpha=Distribution.of(alphas, "none (= rank)"), scale=Distribution.of(scales),
        modules=modules,
        unmapped=[{"module": m.entry.module, "param": m.entry.param, "reason": m.reason or ""}
                  for m in lora.unmapped()],
        unrecognized_keys=list(lora.unrecognized) + list(lora.orphans),
        host_dropped=len(dropped), host_dropped_we_map=dropped_we_map, host_name=host.name,
        metadata=md, training=training_summary(md), triggers=find_triggers(md, tags),
        tags=tag_summary(md, read=tags), tag_folders=tags, warnings=header_warnings(lora, md), not_lora=det.not_lora,
        also_fits=det.also_fits,
    )


def summarize(path: str | os.PathLike, layout: ModelLayout | None = None, host: HostRules = NEWEST) -> Summary:
    """Summarise a LoRA file from its header and 0-d alpha tensors; no weight data is read."""
    with gc_paused(), Lora.open(path, layout) as lora:
        header = lora.source.file.header  # type: ignore[attr-defined]
        return summary_of(lora, os.fspath(path), header.file_size, host)


@dataclass
class Report:
    """A full inspection: the summary plus block strengths, tensor health and hashes where asked."""

    summary: Summary
    blocks: list[BlockStrength] | None = None
    relative: bool = False
    hashes: Hashes | None = None
    tensor_warnings: list[HealthWarning] = field(default_factory=list)

    @property
    def warnings(self) -> list[HealthWarning]:
        return self.summary.warnings + self.tensor_warnings

    def to_dict(self) -> dict:
        d = self.summary.to_dict()
        d["verdict"] = self.summary.verdict(len(self.warnings))
        d["warnings"] = [w.to_dict() for w in self.warnings]
        d["blocks"] = None
        if self.blocks is not None:
            from .block_strength import MEASURE
            d["blocks"] = {"family": self.summary.family, "measure": MEASURE, "relative": self.relative,
                           "items": [{**b.to_dict(), "norm": _num(b.norm), "base_norm": _num(b.base_norm),
                                      "relative": _num(b.relative)} for b in self.blocks]}
        d["hashes"] = None if self.hashes is None else self.hashes.to_dict()
        return d

    def chart(self) -> "Image.Image":
        """The block strengths as a labelled bar chart (relative strengths where base weights were given)."""
        from ..blocks.chart import bar_chart
        blocks = self.blocks or []
        rel = self.relative and any(b.relative is not None for b in blocks)
        values = [(b.relative or 0.0) if rel else b.norm for b in blocks]
        what = "relative strength |dW| / |W| per block" if rel else "strength |dW| per block (block norm)"
        if not blocks:
            what = ("no module of this LoRA maps onto a block" if self.blocks is not None
                    else "block strengths not computed")
        return bar_chart([b.block for b in blocks], values, f"{self.summary.name}", what)

    def to_text(self) -> str:
        """The verdict, the header report, block strengths and hashes where computed, then every warning."""
        lines = [self.summary.verdict(len(self.warnings))] + self.summary.text_lines()
        if self.blocks is not None:
            lines += _block_lines(self.blocks, self.relative)
        if self.hashes is not None:
            h = self.hashes
            lines.append(f"sha256 {h.sha256}  AutoV2 {h.autov2}")
            stored = {True: " (matches sshs_model_hash)", False: " (differs from the stored sshs_model_hash: the "
                      "tensor data is not what the trainer saved)", None: ""}[h.addnet_matches]
            lines.append(f"addnet {h.addnet}  AutoV3 {h.autov3}{stored}")
            if h.spec_matches is False:
                lines.append("modelspec.hash_sha256 differs from the addnet hash: the tensor data is not what the "
                             "writer hashed")
            lines.append(f"legacy {h.legacy}")
        return "\n".join(lines + _warning_lines(self.warnings))


def inspect_lora(path: str | os.PathLike, *, blocks: bool = True, hashes: bool = False,
                 base: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
                 layout: ModelLayout | None = None, host: HostRules = NEWEST,
                 progress: Callable[[int, int], None] | None = None) -> Report:
    """Inspect a LoRA file. ``blocks`` reads the tensors (one module at a time) for block
    strengths and the NaN/Inf and all-zero checks, calling ``progress(done, total)`` after each
    module (it may raise to stop); ``base`` (a state dict with ComfyUI keys or a safetensors path)
    adds relative strengths; ``hashes`` hashes the whole file; ``host`` is the ComfyUI version whose
    loader the dropped-key count emulates. Without ``blocks`` no tensor is read and torch is not
    imported."""
    with gc_paused():
        lora = Lora.open(path, layout)
    with lora:
        with gc_paused():
            size = lora.source.file.header.file_size  # type: ignore[attr-defined]
            report = Report(summary_of(lora, os.fspath(path), size, host))
        if blocks:
            from .block_strength import BaseWeights, block_strengths
            checks = TensorChecks()
            weights = BaseWeights(base) if base is not None else None
            total = sum(1 for item in lora.items if item.entry.supported)
            done = [0]

            def on_module(entry: Entry, adapter: object, norm: float | None) -> None:
                checks.check(entry, adapter_tensors(adapter), norm)
                done[0] += 1
                if progress is not None:
                    progress(done[0], total)
            try:
                report.blocks = block_strengths(lora, weights, on_module)
            finally:
                if weights is not None:
                    weights.close()
            report.relative = weights is not None
            report.tensor_warnings = checks.warnings()
    if hashes:
        report.hashes = file_hashes(path)
    return report
