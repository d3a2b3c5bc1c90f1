"""Producer format and base architecture of a LoRA, from its keys, shapes and metadata.

Metadata is evidence, not truth: the architecture comes from which model's weights the tensors
fit; a metadata claim that disagrees is reported, never followed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..layouts import layout_for
from ..layouts.archs import ARCHS, arch_from_metadata_string, arch_variant, variant_from_metadata
from .canonical import shape_fits, target_for, target_shape
from .keys import Entry
from .not_lora import looks_like, not_a_lora

FORMATS: dict[str, str] = {
    "kohya": "kohya sd-scripts",
    "lycoris": "LyCORIS (kohya-style names)",
    "aitoolkit": "ai-toolkit (diffusers/PEFT names)",
    "diffusers_peft": "diffusers/PEFT (lora_A/lora_B)",
    "diffusers_dreambooth": "diffusers dreambooth (.lora.down/.lora.up)",
    "diffusers_attn_processor": "diffusers attention processors (to_q_lora)",
    "comfyui": "ComfyUI trainer (diffusion_model.*, lora_up/lora_down, diff)",
    "bfl": "BFL-style (diffusion_model.*, lora_A/lora_B)",
    "xlabs": "XLabs x-flux",
    "simpletuner_lycoris": "SimpleTuner LyCORIS (lycoris_*)",
    "onetrainer": "OneTrainer (lora_transformer_*)",
    "musubi": "musubi-tuner (lora_unet_*, kohya-style)",
    "diffusion_pipe": "diffusion-pipe / ComfyUI-style PEFT (diffusion_model.*, lora_A/lora_B)",
    "unknown": "unknown",
}

#: the metadata that names a base model: SAI model spec, kohya's ``ss_model_type`` (which says ``chroma``
#: where ``ss_base_model_version`` says ``flux1``), then ``ss_base_model_version``
CLAIM_KEYS = ("modelspec.architecture", "ss_model_type", "ss_base_model_version")


@dataclass
class ArchScore:
    arch: str
    fitting: int  # entries that map onto a weight of this model with the right size
    mapped: int  # entries whose module name exists in this model (size aside)
    complete: bool = True  # False: scoring stopped once this arch could no longer win (counts are partial)


@dataclass
class Detection:
    """What a LoRA is: producer format, base architecture, and the evidence."""

    format: str
    arch: str | None
    arch_variant: str | None = None
    metadata_arch: str | None = None
    scores: list[ArchScore] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_lora: str | None = None  # no LoRA tensor in it, and it looks like this kind of model file

    @property
    def format_name(self) -> str:
        if self.not_lora is not None:
            return not_a_lora(self.not_lora)
        return FORMATS.get(self.format, self.format)

    @property
    def arch_name(self) -> str:
        if self.arch is None:
            return "unknown"
        found = arch_variant(self.arch, self.arch_variant)
        return found.name if found else ARCHS[self.arch].name

    @property
    def also_fits(self) -> list[str]:
        """The other architectures whose weights the tensors fit exactly as well, where the metadata
        does not name the one detected: the keys cannot tell them apart (a LoRA of Flux.1's double
        block attention fits Chroma, Flux.2 Klein 4B and HunyuanVideo too)."""
        if self.arch is None or self.metadata_arch == self.arch:
            return []
        best = next((s for s in self.scores if s.arch == self.arch), None)
        if best is None:
            return []
        return [s.arch for s in self.scores
                if s.arch != self.arch and (s.fitting, s.mapped) == (best.fitting, best.mapped)]


def metadata_arch(metadata: dict[str, str]) -> str | None:
    """The architecture the metadata claims (:data:`CLAIM_KEYS`, then ``ss_v2``)."""
    for key in CLAIM_KEYS:
        if key in metadata:
            got = arch_from_metadata_string(metadata[key])
            if got:
                return got
    if metadata.get("ss_v2") == "True":
        return "sd2"
    return None


_CHUNK = 32


def score_archs(entries: list[Entry]) -> list[ArchScore]:
    """For each known architecture, how many entries fit its weights; best first.

    Scoring runs over chunks of entries and stops for an architecture once even fitting every
    remaining entry could not reach the best count so far, so the winner (and every tie) is exact.
    """
    usable = [e for e in entries if e.problem is None]
    scores = {a: ArchScore(a, 0, 0) for a in ARCHS}
    layouts = {a: layout_for(a) for a in ARCHS}
    alive = list(ARCHS)
    for start in range(0, len(usable), _CHUNK):
        chunk = usable[start:start + _CHUNK]
        for arch_id in alive:
            layout, score = layouts[arch_id], scores[arch_id]
            for e in chunk:
                target, res = target_for(e, layout)
                if res is not None:
                    score.mapped += 1
                if target is not None and shape_fits(e, target_shape(target, layout)):
                    score.fitting += 1
        remaining = len(usable) - start - len(chunk)
        best = max(scores[a].fitting for a in alive)
        for arch_id in [a for a in alive if scores[a].fitting + remaining < best]:
            scores[arch_id].complete = False
            alive.remove(arch_id)
    return sorted(scores.values(), key=lambda s: (-s.fitting, -s.mapped))


def detect_format(entries: list[Entry], keys: list[str], metadata: dict[str, str]) -> str:
    """The producer format, from naming style, key prefixes and metadata."""
    modules = [e.module for e in entries]
    styles = {e.style for e in entries}
    if any(".processor.qkv_lora" in k or ".processor.proj_lora" in k for k in keys):
        return "xlabs"
    software = metadata.get("software", "")
    try:
        software_name = str(json.loads(software).get("name", "")) if software.startswith("{") else software
    except (ValueError, AttributeError, RecursionError):  # metadata is anyone's text
        software_name = software
    network_module = metadata.get("ss_network_module", "")
    if "lycoris" in network_module or styles & {"loha", "lokr"} or any(e.has_dora for e in entries):
        return "simpletuner_lycoris" if any(m.startswith("lycoris_") for m in modules) else "lycoris"
    if any(m.startswith("lycoris_") for m in modules):
        return "simpletuner_lycoris"
    if any(m.startswith("lora_transformer_") for m in modules):
        return "onetrainer"
    if "diffusers" in styles:
        return "diffusers_dreambooth"
    if "diffusers_attn_processor" in styles:
        return "diffusers_attn_processor"
    if "peft" in styles:
        if "ai-toolkit" in software_name.lower():  # ai-toolkit writes diffusers names, or BFL names for Chroma
            return "aitoolkit"
        if any(m.startswith("diffusion_model.") for m in modules):
            return "bfl"
        return "diffusers_peft"
    if any(m.startswith(("lora_unet_", "lora_te")) for m in modules):
        return "kohya"
    if any(m.startswith("diffusion_model.") for m in modules):
        return "comfyui"
    return "unknown"


#: which trainer writes the generic formats (kohya-style ``lora_unet_`` names, ``diffusion_model.`` PEFT names:
#: "bfl") for a family: musubi-tuner and diffusion-pipe train the video DiTs and Qwen-Image (kohya sd-scripts
#: none of them); diffusion-pipe the ``diffusion_model.`` files of Lumina 2, HiDream and LTX (and LTX's own
#: trainers; kohya-style ones there are sd-scripts'); musubi-tuner the kohya-style files of Z-Image
_PRODUCERS_BY_FAMILY: dict[str, dict[str, str]] = {
    **{f: {"kohya": "musubi", "bfl": "diffusion_pipe"} for f in ("wan", "qwen_image", "hunyuan_video")},
    **{f: {"bfl": "diffusion_pipe"} for f in ("lumina2", "hidream", "ltxv")},
    "z_image": {"kohya": "musubi"},
}
#: archs whose producers differ from their family's: HunyuanImage 2.1's kohya-style files are sd-scripts' own
#: (hunyuan_image_train_network.py); Flux.2's come from musubi-tuner (Flux.1's from sd-scripts)
_PRODUCERS_BY_ARCH: dict[str, dict[str, str]] = {
    **{a: {"bfl": "diffusion_pipe"} for a in ("hunyuan_image21", "hunyuan_image21_refiner")},
    **{a: {"kohya": "musubi"} for a in ("flux2_dev", "flux2_klein_4b", "flux2_klein_9b")},
}
#: the original HunyuanVideo block names diffusion-pipe writes after ``transformer.`` (diffusers' are ``transformer_blocks``)
_HUNYUAN_ORIGINAL = ("transformer.double_blocks.", "transformer.single_blocks.")


def detect(entries: list[Entry], keys: list[str], metadata: dict[str, str]) -> Detection:
    """Detect format and architecture; warn where metadata disagrees with the weights."""
    fmt = detect_format(entries, keys, metadata)
    scores = score_archs(entries)
    claimed = metadata_arch(metadata)
    best = scores[0] if scores and scores[0].fitting > 0 else None
    arch_id = best.arch if best else None
    if best is not None:
        tied = [s.arch for s in scores if (s.fitting, s.mapped) == (best.fitting, best.mapped)]
        if claimed in tied:
            arch_id = claimed
    family = ARCHS[arch_id].family if arch_id is not None else None
    producers = _PRODUCERS_BY_ARCH.get(arch_id or "", _PRODUCERS_BY_FAMILY.get(family or "", {}))
    fmt = producers.get(fmt, fmt)
    if family == "hunyuan_video" and fmt == "diffusers_peft" and any(e.module.startswith(_HUNYUAN_ORIGINAL)
                                                                      for e in entries):
        fmt = "diffusion_pipe"
    det = Detection(fmt, arch_id, metadata_arch=claimed, scores=scores,
                    not_lora=None if entries else looks_like(keys))
    if arch_id is not None:
        found = variant_from_metadata(arch_id, [metadata[k] for k in CLAIM_KEYS if k in metadata])
        det.arch_variant = found.label if found else None
    if arch_id == "flux" and det.arch_variant in (None, "schnell") and any(
            "guidance_in" in e.module or "guidance_embedder" in e.module for e in entries):
        det.arch_variant = "dev"  # schnell has no guidance_in; dev and Kontext (a dev model) have
    if claimed and arch_id and claimed != arch_id:
        det.warnings.append(f"metadata says {ARCHS[claimed].name} but the weights fit {ARCHS[arch_id].name}")
    if arch_id is None and entries:
        det.warnings.append("the weights fit no known base model")
    return det
