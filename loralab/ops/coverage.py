"""The coverage doctor: how much of a LoRA lands on a model and its CLIP, the rest grouped by
reason with counts, and the likely cause in plain words with its fix ("an SD1.x LoRA on an SDXL
model": pick a LoRA made for SDXL, or load an SD1.x model).

The LoRA is mapped onto the model's layout: the loaded model's own (the loader, after a run), or
the released layout of the architecture a model file's header shows, checked against the weights
that file holds (the panel, before a run). The loader's report and the panel read the same
:class:`Coverage`, so every wording lives here.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

from ..files.safetensors import read_header
from ..formats.canonical import resolve_module
from ..formats.detect import Detection
from ..formats.host_keys import NEWEST, HostRules
from ..formats.model_weights import canonical_shapes, model_arch
from ..formats.not_lora import not_a_lora, use_instead
from ..layouts import STANDARD_CONFIGS, ModelLayout, layout_for
from ..layouts.archs import ARCHS
from ..lora import Lora, MappedEntry

#: what keeps an entry off the model (``NotApplied.kind``)
MALFORMED = "malformed"  # the entry's tensors are incomplete or inconsistent
LONE = "lone"  # a tensor whose partner tensors are missing
UNRECOGNIZED = "unrecognized"  # a tensor of no LoRA format LoRA Lab reads
UNMAPPED = "unmapped"  # names no module of the model
UNFIT = "unfit"  # names a module whose weight has another size, or lacks the parameter
ABSENT = "absent"  # the model (or its file) lacks the weight
IMAGE_ATTENTION = "image_attention"  # Wan I2V's image cross-attention, on a Wan model without it (T2V)
NO_CLIP = "no_clip"  # a text-encoder entry with no CLIP connected
PATCH_FAILED = "patch_failed"  # ComfyUI's patch system could not take it
#: the kinds of entries that name weights the model lacks or has at another size
UNPLACED = (UNMAPPED, UNFIT, ABSENT, IMAGE_ATTENTION)

#: example modules a group names
EXAMPLES = 3

#: producer formats whose keys are diffusers names
_DIFFUSERS_FORMATS = {"diffusers_peft", "diffusers_dreambooth", "diffusers_attn_processor", "aitoolkit"}


@dataclass(frozen=True)
class NotApplied:
    """An entry (or a tensor that belongs to none) that changes nothing, and why: ``reason`` for
    this entry, ``group`` the same reason without what is particular to the entry (groups are
    counted), ``kind`` which of the module constants above it is."""

    module: str  # the module name in the file, or the tensor key where no entry holds it
    param: str  # "weight", "bias", or "" for a lone tensor
    reason: str
    group: str = ""
    kind: str = UNMAPPED

    @property
    def why(self) -> str:
        """The reason as groups count it."""
        return self.group or self.reason

    @property
    def label(self) -> str:
        """The module, with its parameter where that is not the weight."""
        return self.module + ("" if self.param in ("weight", "") else f" ({self.param})")


@dataclass(frozen=True)
class ReasonGroup:
    """The entries kept off for one reason: how many, a few of them, and the first one's own
    reason where it says more than the group's."""

    reason: str
    kind: str
    count: int
    examples: tuple[str, ...]
    detail: str | None

    def line(self) -> str:
        """``  72 × text encoder clip_l: no CLIP connected, e.g. a, b, c and 69 more``."""
        more = f" and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        detail = f" ({self.examples[0]}: {self.detail})" if self.detail else ""
        return f"  {self.count} × {self.reason}, e.g. {', '.join(self.examples)}{more}{detail}"

    def to_dict(self) -> dict:
        return {"reason": self.reason, "kind": self.kind, "count": self.count, "examples": list(self.examples),
                "detail": self.detail}


def group_reasons(not_applied: list[NotApplied]) -> list[ReasonGroup]:
    """The entries grouped by reason, the largest group first (file order on ties)."""
    groups: dict[str, list[NotApplied]] = {}
    for n in not_applied:
        groups.setdefault(n.why, []).append(n)
    out = []
    for why, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        first = items[0]
        out.append(ReasonGroup(why, first.kind, len(items), tuple(n.label for n in items[:EXAMPLES]),
                               first.reason if first.reason != why else None))
    return out


@dataclass(frozen=True)
class Cause:
    """The likely cause of what does not land, in plain words, and what to do about it. ``id``:
    ``not_lora``, ``other_arch``, ``unknown_arch``, ``i2v_on_t2v``, ``other_build``, ``no_clip``,
    ``malformed``, ``patch_failed``, ``empty`` or ``host_drops`` (everything lands in LoRA Lab, but
    ComfyUI's own loader would drop part of it: a note, not a problem)."""

    id: str
    text: str
    fix: str

    @property
    def blocking(self) -> bool:
        """Whether it keeps modules off the model (every cause but ``host_drops``)."""
        return self.id != "host_drops"

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "fix": self.fix}


def _a(name: str) -> str:
    """``an SDXL``, ``an LTX-2``, ``a Flux.1``: the article as the name is read out."""
    return ("an " if name.startswith(("SD", "LTX")) or name[:1].upper() in "AEIOU" else "a ") + name


def _name(arch_id: str) -> str:
    return ARCHS[arch_id].name


def refusal(detection: Detection, model_arch: str) -> Cause | None:
    """Why a LoRA must not be applied to a model of ``model_arch`` at all (None if it may): it is no
    LoRA, or its weights fit another architecture better than this one. Wan I2V and T2V models of
    one width share every block but the image cross-attention, so a LoRA of one applies to the
    other where anything fits (what does not, ``k_img``/``v_img`` on a T2V model, is not applied)."""
    if detection.not_lora is not None:
        return Cause("not_lora", not_a_lora(detection.not_lora), use_instead(detection.not_lora))
    if detection.arch is None or detection.arch == model_arch:
        return None
    scores = {s.arch: s.fitting for s in detection.scores}
    if scores.get(model_arch, 0) >= scores.get(detection.arch, 0):
        return None
    if ARCHS[detection.arch].family == ARCHS[model_arch].family == "wan" and scores.get(model_arch, 0) > 0:
        return None
    return other_arch(detection.arch, model_arch)


def other_arch(lora_arch: str, model_arch: str) -> Cause:
    """``an SD1.x LoRA on an SDXL model``."""
    lora, model = _name(lora_arch), _name(model_arch)
    return Cause("other_arch", f"{_a(lora)} LoRA on {_a(model)} model",
                 f"pick a LoRA made for {model}, or load {_a(lora)} model")


def _is_i2v(arch_id: str | None) -> bool:
    """Whether the released model of an arch has Wan's image cross-attention (I2V)."""
    return arch_id is not None and STANDARD_CONFIGS.get(arch_id, {}).get("model_type") == "i2v"


def _unplaced(lora_arch: str | None, model_arch: str, kinds: Counter) -> Cause:
    """Why modules name weights the model lacks or has at another size (``kinds``: how many of
    each kind of not-applied entry)."""
    model = _name(model_arch)
    unplaced = sum(kinds[k] for k in UNPLACED)
    if kinds[IMAGE_ATTENTION] * 2 >= unplaced:
        i2v = _a(_name(lora_arch)) if _is_i2v(lora_arch) else "a Wan I2V"
        return Cause("i2v_on_t2v", "an I2V LoRA on a T2V model: its image cross-attention (k_img, v_img) has "
                     "nothing to land on", f"load {i2v} model for all of it; on this model the rest of the LoRA "
                     "applies")
    if lora_arch is None:
        return Cause("unknown_arch", "the weights fit no base model LoRA Lab knows",
                     "check the file with Inspect LoRA: it may be for a model LoRA Lab has no layout for "
                     "(ComfyUI's own LoraLoader may apply it)")
    if lora_arch != model_arch:
        return other_arch(lora_arch, model_arch)
    if kinds[ABSENT] == unplaced:
        return Cause("other_build", f"the model file lacks weights this {model} LoRA changes (a pruned or "
                     "distilled model?)", "load the model the LoRA was trained on; on this one the rest applies")
    return Cause("other_build", f"modules for weights this {model} model lacks or has at another size (a model "
                 "built with other layers or widths)", "load the model the LoRA was trained on; on this one the "
                 "rest applies")


NO_CLIP_CAUSE = Cause("no_clip", "text-encoder keys but no CLIP connected",
                      "connect the CLIP (from the checkpoint or CLIP loader) to this node's clip input")
MALFORMED_CAUSE = Cause("malformed", "incomplete or unreadable tensors in the file",
                        "download the file again, or ask its maker for a complete one")
PATCH_FAILED_CAUSE = Cause("patch_failed", "ComfyUI's patch system could not take some modules",
                           "report the file's Inspect LoRA output to LoRA Lab")
EMPTY_CAUSE = Cause("empty", "the file holds no LoRA tensors", "pick another file")


def _style(format_id: str, format_name: str) -> str:
    if format_id in _DIFFUSERS_FORMATS:
        return "diffusers-format"
    if format_id == "xlabs":
        return "XLabs-format"
    return format_name


def host_drops_cause(format_id: str, format_name: str, modules: int, host_name: str) -> Cause:
    """Everything lands in LoRA Lab, but ``host_name``'s own loader drops ``modules`` of them."""
    return Cause("host_drops", f"{_style(format_id, format_name)} keys: {host_name}'s own LoRA loader drops "
                 f"{modules} of these modules; LoRA Lab applies them",
                 "none needed here; to use the file with other loaders, convert it to kohya names (Merge LoRAs "
                 "with only this file, method concat, or loralab merge FILE -m concat -o NEW)")


@dataclass
class Coverage:
    """How much of one LoRA lands on one model (and its CLIP), why the rest does not, and the
    likely cause. ``landed`` counts the modules that map onto a weight (a block weight of 0 still
    counts: that is the user's choice, not a fault); ``host_dropped`` those of them that
    ``host_name``'s own loader would drop."""

    label: str
    lora_arch: str | None
    model_arch: str
    format: str
    format_name: str
    total: int
    landed: int
    not_applied: list[NotApplied] = field(default_factory=list)
    refused: Cause | None = None
    clip_connected: bool = True
    host_dropped: int = 0
    host_name: str = NEWEST.name

    @property
    def share(self) -> float:
        """The fraction of the modules that land (0 for a file without any)."""
        return self.landed / self.total if self.total else 0.0

    @property
    def percent(self) -> str:
        """The share as people read it: 100% and 0% only when all or none land."""
        if self.total == 0 or self.landed in (0, self.total):
            return "0%" if self.landed == 0 else "100%"
        return f"{min(99, max(1, round(100 * self.share)))}%"

    def groups(self) -> list[ReasonGroup]:
        return group_reasons(self.not_applied)

    @property
    def cause(self) -> Cause | None:
        """The one likely cause: the refusal, else the reason that keeps the most modules off, else
        (everything lands) the host's own loader dropping part of it; None when all is well."""
        if self.refused is not None:
            return self.refused
        if self.total == 0:
            return EMPTY_CAUSE
        kinds = Counter(n.kind for n in self.not_applied)
        unplaced = sum(kinds[k] for k in UNPLACED)
        count, which = max([(kinds[NO_CLIP], NO_CLIP), (unplaced, UNMAPPED),
                            (kinds[MALFORMED] + kinds[LONE] + kinds[UNRECOGNIZED], MALFORMED),
                            (kinds[PATCH_FAILED], PATCH_FAILED)], key=lambda c: c[0])  # the first of equal counts
        if which == UNMAPPED and count:
            return _unplaced(self.lora_arch, self.model_arch, kinds)
        if count:
            return {NO_CLIP: NO_CLIP_CAUSE, MALFORMED: MALFORMED_CAUSE, PATCH_FAILED: PATCH_FAILED_CAUSE}[which]
        if self.host_dropped:
            return host_drops_cause(self.format, self.format_name, self.host_dropped, self.host_name)
        return None

    @property
    def level(self) -> str:
        """``error`` (nothing lands), ``warn`` (part does not), ``info`` (all lands, with a note) or ``ok``."""
        cause = self.cause
        if self.refused is not None or self.landed == 0:
            return "error"
        if cause is None:
            return "ok"
        return "warn" if cause.blocking else "info"

    def headline(self) -> str:
        """One line: how much lands on the model."""
        model = f"the {_name(self.model_arch)} model"
        if self.refused is not None:
            return f"nothing lands on {model}: {self.refused.text}"
        if self.total == 0:
            return "the file holds no modules"
        if self.landed == self.total:
            return f"all {self.total} modules land on {model}"
        if self.landed == 0:
            return f"none of its {self.total} modules lands on {model}"
        return f"{self.landed} of {self.total} modules ({self.percent}) land on {model}"

    def lines(self, *, cause_in_verdict: bool = False) -> list[str]:
        """The reasons (counted, with examples) and the likely cause with its fix, one line each;
        ``cause_in_verdict``: a refusal's cause is already in the line above them."""
        out: list[str] = []
        if self.not_applied and self.refused is None:
            out.append(f"not applied: {len(self.not_applied)} modules")
            out += [g.line() for g in self.groups()]
        cause = self.cause
        if cause is not None:
            if not (cause_in_verdict and cause is self.refused):
                out.append(f"{'likely cause' if cause.blocking else 'note'}: {cause.text}")
            out.append(f"fix: {cause.fix}")
        return out

    def to_text(self) -> str:
        return "\n".join([self.headline(), *self.lines(cause_in_verdict=self.refused is not None)])

    def to_dict(self) -> dict:
        cause = self.cause
        return {
            "lora": {"label": self.label, "arch": self.lora_arch,
                     "arch_name": _name(self.lora_arch) if self.lora_arch else None,
                     "format": self.format, "format_name": self.format_name},
            "model": {"arch": self.model_arch, "name": _name(self.model_arch)},
            "clip_connected": self.clip_connected,
            "total": self.total, "landed": self.landed, "share": self.share, "percent": self.percent,
            "level": self.level, "headline": self.headline(),
            "groups": [g.to_dict() for g in self.groups()] if self.refused is None else [],
            "cause": cause.to_dict() if cause else None,
            "host": {"name": self.host_name, "dropped": self.host_dropped},
        }


def _image_attention(name: str, layout: ModelLayout | None) -> bool:
    """Whether a module name that a Wan model's layout lacks is Wan I2V's image cross-attention."""
    if layout is None or layout.arch.family != "wan" or layout.config.get("model_type") == "i2v":
        return False
    res = resolve_module(name, layout_for("wan21_i2v_14b"))
    return res is not None and res.module not in layout.shapes and f"{res.module}.weight" not in layout.shapes


def _unmapped(item: MappedEntry, layout: ModelLayout | None) -> tuple[str, str]:
    """(group, kind) of an entry that maps onto no weight of ``layout``."""
    if item.entry.problem is not None:
        return "incomplete or malformed", MALFORMED
    if item.target is None and item.component is None:  # names no module: the reason names the model only
        if _image_attention(item.entry.module, layout):
            return "image cross-attention of Wan I2V (a T2V model has none)", IMAGE_ATTENTION
        return item.reason or "not mapped", UNMAPPED
    if item.target is None:
        return "names a parameter its module lacks in this model", UNFIT
    return "does not fit its weight in this model", UNFIT


def classify(lora: Lora, *, clip_connected: bool,
             present: Mapping[str, tuple[int, ...]] | None = None) -> tuple[list[MappedEntry], list[NotApplied]]:
    """(the entries that land, in file order; what does not, with why). ``present``: the shapes of
    the diffusion-model weights the model actually holds by canonical key, where the layout is the
    released one of its architecture and the model file may lack weights or size them otherwise."""
    not_applied = [NotApplied(k, "", "not a tensor of any LoRA format LoRA Lab reads", kind=UNRECOGNIZED)
                   for k in lora.unrecognized]
    not_applied += [NotApplied(k, "", "belongs to no adapter (its partner tensors are missing)", kind=LONE)
                    for k in lora.orphans]
    landing: list[MappedEntry] = []
    for item in lora.items:
        e = item.entry
        if not item.mapped:
            group, kind = _unmapped(item, lora.layout)
            not_applied.append(NotApplied(e.module, e.param, item.reason or "not mapped", group, kind))
            continue
        key = item.target.key
        if item.component != "unet":
            if not clip_connected:
                not_applied.append(NotApplied(e.module, e.param, f"text encoder {item.component}: no CLIP connected",
                                              kind=NO_CLIP))
                continue
        elif present is not None and present.get(key) != lora.layout.shapes[key]:
            if key not in present:
                not_applied.append(NotApplied(e.module, e.param, f"the model file has no weight {key}",
                                              "the model file lacks its weight", ABSENT))
            else:
                not_applied.append(NotApplied(e.module, e.param, f"{key} is {list(present[key])} in the model file",
                                              "does not fit its weight in this model", UNFIT))
            continue
        landing.append(item)
    return landing, not_applied


def host_dropped(lora: Lora, landing: list[MappedEntry], host: HostRules) -> int:
    """How many of the entries that land ``host``'s own LoRA loader would drop."""
    dropped = lora.host_dropped(host)
    return sum(1 for m in landing if any(k in dropped for k in m.entry.keys.values())) if dropped else 0


def entry_count(lora: Lora) -> int:
    """The modules of a file as coverage counts them: its entries and the tensors that belong to none."""
    return len(lora.items) + len(lora.unrecognized) + len(lora.orphans)


def diagnose(lora: Lora, model_arch: str, *, clip_connected: bool, host: HostRules = NEWEST,
             present: Mapping[str, tuple[int, ...]] | None = None, label: str | None = None) -> Coverage:
    """The coverage of ``lora`` (opened on the model's layout) on a model of ``model_arch``;
    ``present`` as for :func:`classify`."""
    det = lora.detection
    cov = Coverage(label or lora.source.label, det.arch, model_arch, det.format, det.format_name,
                   entry_count(lora), 0, refused=refusal(det, model_arch), clip_connected=clip_connected,
                   host_name=host.name)
    if cov.refused is None:
        landing, cov.not_applied = classify(lora, clip_connected=clip_connected, present=present)
        cov.landed = len(landing)
        cov.host_dropped = host_dropped(lora, landing, host)
    return cov


@dataclass(frozen=True)
class ModelFile:
    """What a model file's header shows: its architecture (None where LoRA Lab knows none that
    fits) and the shape of each weight of that architecture's layout it holds."""

    arch: str | None
    present: dict[str, tuple[int, ...]]

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ModelFile":
        """From a checkpoint or diffusion-model safetensors file's header (no tensor is read)."""
        shapes = {k: t.shape for k, t in read_header(path).tensors.items()}
        arch_id = model_arch(shapes)
        if arch_id is None:
            return cls(None, {})
        present = canonical_shapes(shapes, layout_for(arch_id))
        return cls(arch_id, {k: s for k, s in present.items() if k.startswith("diffusion_model.")})


def diagnose_files(lora_path: str | os.PathLike, model: ModelFile, *, clip_connected: bool,
                   host: HostRules = NEWEST, label: str | None = None) -> Coverage | None:
    """The coverage of a LoRA file on the model a header showed (None where the model's
    architecture is unknown)."""
    if model.arch is None:
        return None
    with Lora.open(lora_path, layout_for(model.arch)) as lora:
        return diagnose(lora, model.arch, clip_connected=clip_connected, host=host, present=model.present,
                        label=label)


def unknown_model_dict(label: str) -> dict:
    """:meth:`Coverage.to_dict`'s answer where a model file's header shows no architecture LoRA Lab
    knows: level ``unknown``, no cause."""
    return {"lora": {"label": label}, "model": {"arch": None, "name": None}, "level": "unknown",
            "headline": "the model file's header shows no architecture LoRA Lab knows: the loader's report "
                        "after a run says what lands", "groups": [], "cause": None}
