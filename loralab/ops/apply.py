"""How a LoRA lands on a loaded model under block weights.

A plan gives every entry of the file one fate: patched into the model or the CLIP with
``strength × weight of its absolute block``, left out because its block weight makes that 0, or
not applied with the reason (wrong architecture, no such weight, no CLIP connected...: the
coverage doctor's classification, :mod:`.coverage`, which also words the report's reasons and
likely cause). The host layer turns the patched entries into one patch group per (patcher,
distinct strength).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..blocks.map import block_of
from ..blocks.spec import BlockWeights
from ..formats.host_keys import NEWEST, HostRules
from ..layouts.archs import ARCHS
from ..lora import Lora, MappedEntry
from .coverage import PATCH_FAILED, Cause, Coverage, NotApplied, classify, entry_count, host_dropped, refusal

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


@dataclass
class ApplyPlan:
    """What applying one LoRA to one model (and CLIP) does, entry by entry."""

    label: str
    format: str
    format_name: str
    lora_arch: str | None
    model_arch: str
    weights: BlockWeights
    strength_model: float
    strength_clip: float
    total: int = 0  # the file's modules, as the coverage doctor counts them
    clip_connected: bool = True
    refused: Cause | None = None
    patches: list[Planned] = field(default_factory=list)
    zero: list[Planned] = field(default_factory=list)
    not_applied: list[NotApplied] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    host_dropped: int = 0  # planned entries that the host's own loader would drop
    host_name: str = NEWEST.name

    def groups(self, patcher: str) -> list[tuple[float, list[Planned]]]:
        """The entries patched into ``patcher`` ("model" or "clip"), one group per distinct strength,
        groups and entries in file order."""
        out: dict[float, list[Planned]] = {}
        for p in self.patches:
            if p.patcher == patcher:
                out.setdefault(p.strength, []).append(p)
        return list(out.items())

    def drop(self, planned: Planned, reason: str, group: str = "", kind: str = PATCH_FAILED) -> None:
        """Record that the host could not apply a planned entry (``group``: the reason without the
        entry's particulars, as the report counts it; ``kind`` as :class:`.coverage.NotApplied`'s)."""
        self.patches.remove(planned)
        e = planned.item.entry
        self.not_applied.append(NotApplied(e.module, e.param, reason, group, kind))

    def block_table(self) -> list[tuple[str, float, int]]:
        """(block, weight, number of model keys this LoRA changes in it), in display order."""
        keys = {p.key for p in self.patches} | {p.key for p in self.zero}
        return self.weights.table(sorted(keys))

    def coverage(self) -> Coverage:
        """The coverage doctor's view of this plan: what lands (block weight 0 included), why the
        rest does not, the likely cause."""
        return Coverage(self.label, self.lora_arch, self.model_arch, self.format, self.format_name, self.total,
                        len(self.patches) + len(self.zero), list(self.not_applied), self.refused,
                        self.clip_connected, self.host_dropped, self.host_name)

    def verdict(self) -> str:
        """One line: how much of the LoRA landed, or why nothing did."""
        if self.refused:
            return f"nothing applied: {self.refused.text}"
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

    def report(self) -> str:
        """The plain-text summary the node shows: a one-line verdict, the reasons entries were not
        applied (counted, with examples) and the likely cause with its fix, then the details: file
        and model architectures, the weight of every block and what was applied where."""
        model_name = ARCHS[self.model_arch].name
        made_for = ARCHS[self.lora_arch].name if self.lora_arch else "no released model (sizes fit none)"
        lines = [self.verdict(), *self.coverage().lines(cause_in_verdict=True)]
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
                     split_qkv_as_trained: bool = False, host: HostRules = NEWEST) -> ApplyPlan:
    """Plan applying ``lora`` (opened on the model's own layout) to a model of ``model_arch``;
    ``split_qkv_as_trained``: modules of a kohya ``split_qkv`` file get the strength they were trained
    at (× their number of parts) instead of the one every loader gives them; ``host``: the ComfyUI
    version whose own loader the report compares with."""
    det = lora.detection
    plan = ApplyPlan(label or lora.source.label, det.format, det.format_name, det.arch, model_arch, weights,
                     strength_model, strength_clip, entry_count(lora), clip_connected, notes=list(det.warnings),
                     host_name=host.name)
    plan.refused = refusal(det, model_arch)
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
    landing, plan.not_applied = classify(lora, clip_connected=clip_connected)
    for item in landing:
        block = block_of(item.target.key, family)
        w = weights.weight(block)
        strength = (strength_model if item.component == "unet" else strength_clip) * w * factors.get(item.entry.module, 1)
        planned = Planned(item, block, w, strength)
        (plan.patches if planned.strength != 0 else plan.zero).append(planned)
    plan.host_dropped = host_dropped(lora, landing, host)
    return plan
