"""How a LoRA lands on a loaded model under block weights.

A plan gives every entry of the file one fate: patched into the model or the CLIP with
``strength × weight of its absolute block``, left out because its block weight makes that 0, or
not applied with the reason (wrong architecture, no such weight, no CLIP connected...). The host
layer turns the patched entries into one patch group per (patcher, distinct strength).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..blocks.map import block_of
from ..blocks.spec import BlockWeights
from ..formats.detect import Detection
from ..formats.not_lora import not_a_lora, use_instead
from ..layouts.archs import ARCHS
from ..lora import Lora, MappedEntry

MODEL = "model"
CLIP = "clip"


@dataclass(frozen=True, eq=False)
class Planned:
    """A mapped entry, the absolute block of its model key, that block's weight, and the final
    strength its patch gets (strength_model or strength_clip times the weight)."""

    item: MappedEntry
    block: str
    weight: float
    strength: float

    @property
    def patcher(self) -> str:
        """``"model"`` for diffusion-model keys, ``"clip"`` for text-encoder keys."""
        return MODEL if self.item.component == "unet" else CLIP

    @property
    def key(self) -> str:
        return self.item.target.key


#: example modules a report names per reason
EXAMPLES = 3


@dataclass(frozen=True)
class NotApplied:
    """An entry (or a tensor that belongs to none) that changes nothing, and why: ``reason`` for
    this entry, ``group`` the same reason without what is particular to the entry (the report
    counts entries per group)."""

    module: str  # the module name in the file, or the tensor key where no entry holds it
    param: str  # "weight", "bias", or "" for a lone tensor
    reason: str
    group: str = ""

    @property
    def why(self) -> str:
        """The reason as the report groups it."""
        return self.group or self.reason

    @property
    def label(self) -> str:
        """The module, with its parameter where that is not the weight."""
        return self.module + ("" if self.param in ("weight", "") else f" ({self.param})")


def arch_mismatch(detection: Detection, model_arch: str) -> str | None:
    """Why a LoRA must not be applied to a model of ``model_arch`` (None if it may): it is no LoRA
    at all, or its weights fit another architecture better than this one. Wan I2V and T2V models
    of one width share every block but the image cross-attention, so a LoRA of one applies to the
    other where anything fits (what does not, ``k_img``/``v_img`` on a T2V model, is listed as not
    applied)."""
    if detection.not_lora is not None:
        return f"{not_a_lora(detection.not_lora)}: {use_instead(detection.not_lora)}"
    if detection.arch is None or detection.arch == model_arch:
        return None
    scores = {s.arch: s.fitting for s in detection.scores}
    if scores.get(model_arch, 0) >= scores.get(detection.arch, 0):
        return None
    if ARCHS[detection.arch].family == ARCHS[model_arch].family == "wan" and scores.get(model_arch, 0) > 0:
        return None
    return (f"this LoRA is for {ARCHS[detection.arch].name}, the model is {ARCHS[model_arch].name} "
            "(use a LoRA made for this model)")


def _unmapped_group(item: MappedEntry) -> str:
    """What keeps an unmapped entry off the model, without the entry's particulars."""
    if item.entry.problem is not None:
        return "incomplete or malformed"
    if item.target is None:
        return item.reason or "not mapped"  # names no weight: the reason names the model only
    return "does not fit its weight in this model"


@dataclass
class ApplyPlan:
    """What applying one LoRA to one model (and CLIP) does, entry by entry."""

    label: str
    format_name: str
    lora_arch: str | None
    model_arch: str
    weights: BlockWeights
    strength_model: float
    strength_clip: float
    refused: str | None = None
    patches: list[Planned] = field(default_factory=list)
    zero: list[Planned] = field(default_factory=list)
    not_applied: list[NotApplied] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def groups(self, patcher: str) -> list[tuple[float, list[Planned]]]:
        """The entries patched into ``patcher`` ("model" or "clip"), one group per distinct strength,
        groups and entries in file order."""
        out: dict[float, list[Planned]] = {}
        for p in self.patches:
            if p.patcher == patcher:
                out.setdefault(p.strength, []).append(p)
        return list(out.items())

    def drop(self, planned: Planned, reason: str, group: str = "") -> None:
        """Record that the host could not apply a planned entry (``group``: the reason without the
        entry's particulars, as the report counts it)."""
        self.patches.remove(planned)
        e = planned.item.entry
        self.not_applied.append(NotApplied(e.module, e.param, reason, group))

    def block_table(self) -> list[tuple[str, float, int]]:
        """(block, weight, number of model keys this LoRA changes in it), in display order."""
        keys = {p.key for p in self.patches} | {p.key for p in self.zero}
        return self.weights.table(sorted(keys))

    def verdict(self) -> str:
        """One line: how much of the LoRA landed, or why nothing did."""
        if self.refused:
            return f"nothing applied: {self.refused}"
        total = len(self.patches) + len(self.zero) + len(self.not_applied)
        if not self.patches:
            if self.zero and not self.not_applied:
                return f"nothing applied: strength x block weight is 0 for all {total} modules"
            return f"nothing applied: none of its {total} modules lands on this model (reasons below)"
        line = f"applied {len(self.patches)} of {total} modules"
        if self.zero:
            line += f"; {len(self.zero)} left out at strength x block weight 0"
        if self.not_applied:
            line += f"; {len(self.not_applied)} not applied (reasons below)"
        return line

    def reason_lines(self) -> list[str]:
        """One line per reason: how many entries it kept off and a few of them, most first."""
        groups: dict[str, list[NotApplied]] = {}
        for n in self.not_applied:
            groups.setdefault(n.why, []).append(n)
        lines = []
        for why, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            first = items[0]
            more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
            detail = f" ({first.label}: {first.reason})" if first.reason != why else ""
            lines.append(f"  {len(items)} × {why}, e.g. {', '.join(n.label for n in items[:EXAMPLES])}{more}{detail}")
        return lines

    def report(self) -> str:
        """The plain-text summary the node shows: a one-line verdict, the reasons entries were not
        applied (counted, with examples), then the details: file and model architectures, the
        weight of every block and what was applied where."""
        model_name = ARCHS[self.model_arch].name
        made_for = ARCHS[self.lora_arch].name if self.lora_arch else "no released model (sizes fit none)"
        lines = [self.verdict()]
        if self.not_applied and not self.refused:
            lines.append(f"not applied: {len(self.not_applied)} modules")
            lines += self.reason_lines()
        lines += [f"LoRA: {self.label} ({self.format_name}; made for {made_for})", f"model: {model_name}"]
        lines += [f"note: {n}" for n in self.notes]
        if self.refused:
            return "\n".join(lines)
        spec = self.weights.source.strip() or "(empty: every block 1)"
        lines.append(f"block weights: {' '.join(spec.split())}")
        table = self.block_table()
        if table:
            width = max(5, *(len(b) for b, _, _ in table))
            lines.append(f"  {'block':<{width}}  {'weight':>8}  keys")
            lines += [f"  {b:<{width}}  {w:>8g}  {n}" for b, w, n in table]
        for patcher, strength in ((MODEL, self.strength_model), (CLIP, self.strength_clip)):
            groups = self.groups(patcher)
            modules = sum(len(g) for _, g in groups)
            keys = len({p.key for _, g in groups for p in g})
            strengths = ", ".join(f"{s:g}" for s, _ in groups)
            lines.append(f"applied to the {patcher}: {keys} keys from {modules} modules"
                         + (f" (strength {strength:g} x block weight = {strengths})" if groups else ""))
        return "\n".join(lines)


def _times(parts: dict[str, int]) -> str:
    """"3×" or "3× and 4×": the factors a split_qkv correction uses."""
    return " and ".join(f"{n}×" for n in sorted(set(parts.values())))


def plan_application(lora: Lora, weights: BlockWeights, strength_model: float, strength_clip: float, *,
                     model_arch: str, clip_connected: bool, label: str | None = None,
                     split_qkv_as_trained: bool = False) -> ApplyPlan:
    """Plan applying ``lora`` (opened on the model's own layout) to a model of ``model_arch``;
    ``split_qkv_as_trained``: modules of a kohya ``split_qkv`` file get the strength they were trained
    at (× their number of parts) instead of the one every loader gives them."""
    det = lora.detection
    plan = ApplyPlan(label or lora.source.label, det.format_name, det.arch, model_arch, weights,
                     strength_model, strength_clip, notes=list(det.warnings))
    plan.refused = arch_mismatch(det, model_arch)
    if plan.refused:
        return plan
    split = lora.split_qkv(verify=True)
    if split and split_qkv_as_trained:
        plan.notes.append(f"split_qkv as trained: {len(split)} fused modules at {_times(split)} the strength "
                          "ComfyUI gives them")
    elif split:
        plan.notes.append(f"kohya split_qkv file: {len(split)} fused modules get 1/3 or 1/4 of the strength they "
                          "were trained at, as in ComfyUI's loader; set split_qkv to 'as trained' for that strength")
    factors = split if split_qkv_as_trained else {}
    family = ARCHS[model_arch].family
    plan.not_applied += [NotApplied(k, "", "not a tensor of any LoRA format LoRA Lab reads") for k in lora.unrecognized]
    plan.not_applied += [NotApplied(k, "", "belongs to no adapter (its partner tensors are missing)")
                         for k in lora.orphans]
    for item in lora.items:
        e = item.entry
        if not item.mapped:
            plan.not_applied.append(NotApplied(e.module, e.param, item.reason or "not mapped", _unmapped_group(item)))
            continue
        to_model = item.component == "unet"
        if not to_model and not clip_connected:
            plan.not_applied.append(NotApplied(e.module, e.param, f"text encoder {item.component}: no CLIP connected"))
            continue
        block = block_of(item.target.key, family)
        w = weights.weight(block)
        strength = (strength_model if to_model else strength_clip) * w * factors.get(e.module, 1)
        planned = Planned(item, block, w, strength)
        (plan.patches if planned.strength != 0 else plan.zero).append(planned)
    return plan
