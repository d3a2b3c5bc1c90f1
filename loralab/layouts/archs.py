"""The base-model architectures LoRA Lab knows, with the names other tools use for them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Arch:
    """One base-model architecture."""

    id: str
    name: str
    family: str  # "unet" | "flux" (Flux.1, Flux.2, Chroma) | "mmdit" | "wan" | "qwen_image" | "z_image" | "hunyuan_video" | "lumina2" | "hidream" | "ltxv" (LTX-Video, LTX-2)
    text_encoders: tuple[str, ...]
    #: kohya text-encoder prefix index ("" for ``lora_te_``, "1" for ``lora_te1_``...) -> ComfyUI TE name
    kohya_te: dict[str, str] = field(default_factory=dict)
    #: diffusers pipeline component -> ComfyUI TE name
    diffusers_te: dict[str, str] = field(default_factory=dict)
    #: what kohya writes as ``ss_base_model_version`` and SAI model spec as ``modelspec.architecture``
    ss_base_model_version: str = ""
    modelspec_architecture: str = ""
    #: ComfyUI TE name -> the kohya prefix kohya writes for it
    kohya_te_prefix: dict[str, str] = field(default_factory=dict)
    #: what kohya writes as ``ss_network_module`` for a plain LoRA and as ``modelspec.implementation``
    kohya_network_module: str = "networks.lora"
    modelspec_implementation: str = "https://github.com/Stability-AI/generative-models"
    #: kohya names U-Net modules by their diffusers names for SD1.x/SD2, by LDM/BFL names otherwise
    kohya_diffusers_names: bool = False


ARCHS: dict[str, Arch] = {a.id: a for a in (
    Arch("sd1", "SD1.x", "unet", ("clip_l",), {"": "clip_l", "1": "clip_l"}, {"text_encoder": "clip_l"},
         "sd_v1", "stable-diffusion-v1/lora", {"clip_l": "lora_te_"}, modelspec_implementation="diffusers",
         kohya_diffusers_names=True),
    Arch("sd2", "SD2.x", "unet", ("clip_h",), {"": "clip_h", "1": "clip_h"}, {"text_encoder": "clip_h"},
         "sd_v2", "stable-diffusion-v2-768-v/lora", {"clip_h": "lora_te_"}, modelspec_implementation="diffusers",
         kohya_diffusers_names=True),
    Arch("sdxl", "SDXL", "unet", ("clip_l", "clip_g"), {"": "clip_l", "1": "clip_l", "2": "clip_g"},
         {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}, "sdxl_base_v1-0",
         "stable-diffusion-xl-v1-base/lora", {"clip_l": "lora_te1_", "clip_g": "lora_te2_"}),
    Arch("sdxl_refiner", "SDXL refiner", "unet", ("clip_g",), {"": "clip_g", "1": "clip_g"},
         {"text_encoder": "clip_g"}, "sdxl_refiner_v1-0", "stable-diffusion-xl-v1-refiner/lora",
         {"clip_g": "lora_te_"}),
    Arch("flux", "Flux.1", "flux", ("clip_l", "t5xxl"), {"": "clip_l", "1": "clip_l", "2": "t5xxl", "3": "t5xxl"},
         {"text_encoder": "clip_l", "text_encoder_2": "t5xxl"}, "flux1", "flux-1-dev/lora",
         {"clip_l": "lora_te1_", "t5xxl": "lora_te3_"}, "networks.lora_flux",
         "https://github.com/black-forest-labs/flux"),
    *(Arch(arch_id, name, "mmdit", ("clip_l", "clip_g", "t5xxl"), {"1": "clip_l", "2": "clip_g", "3": "t5xxl"},
           {"text_encoder": "clip_l", "text_encoder_2": "clip_g", "text_encoder_3": "t5xxl"}, "sd3", spec,
           {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "t5xxl": "lora_te3_"}, "networks.lora_sd3",
           "https://github.com/Stability-AI/sd3.5")
      for arch_id, name, spec in (("sd3", "SD3 medium", "stable-diffusion-v3-medium/lora"),
                                  ("sd35m", "SD3.5 medium", "stable-diffusion-v3.5-medium/lora"),
                                  ("sd35l", "SD3.5 large", "stable-diffusion-v3.5-large/lora"))),
    # Wan and Qwen-Image LoRAs touch the diffusion model only (musubi-tuner, diffusion-pipe, ai-toolkit, diffusers);
    # the metadata strings are musubi-tuner's. Wan 2.2 A14B (T2V and I2V, high- and low-noise) has the keys of
    # Wan 2.1 T2V 14B: the weights cannot tell them apart.
    *(Arch(arch_id, name, "wan", (), ss_base_model_version="wan", modelspec_architecture="wan2.1/lora",
           kohya_network_module="networks.lora_wan", modelspec_implementation="https://github.com/Wan-Video/Wan2.1")
      for arch_id, name in (("wan21_t2v_14b", "Wan 2.1 T2V 14B / Wan 2.2 A14B"), ("wan21_i2v_14b", "Wan 2.1 I2V 14B"),
                            ("wan21_t2v_1_3b", "Wan 2.1 T2V 1.3B"), ("wan22_ti2v_5b", "Wan 2.2 TI2V 5B"))),
    Arch("qwen_image", "Qwen-Image", "qwen_image", (), ss_base_model_version="qwen_image",
         modelspec_architecture="Qwen-Image/lora", kohya_network_module="networks.lora_qwen_image",
         modelspec_implementation="https://github.com/QwenLM/Qwen-Image"),
    # Flux.2 LoRAs touch the diffusion model only (its text encoders are Mistral / Qwen3 LLMs); the
    # ss_base_model_version strings are ai-toolkit's; the BFL layout makes them Flux-family archs.
    *(Arch(arch_id, name, "flux", (), ss_base_model_version=arch_id.replace("_dev", ""),
           modelspec_architecture=spec, kohya_network_module="networks.lora_flux_2",
           modelspec_implementation="https://github.com/black-forest-labs/flux2")
      for arch_id, name, spec in (("flux2_dev", "Flux.2 dev", "flux-2-dev/lora"),
                                  ("flux2_klein_4b", "Flux.2 Klein 4B", "flux-2-klein-4b/lora"),
                                  ("flux2_klein_9b", "Flux.2 Klein 9B", "flux-2-klein-9b/lora"))),
    # Z-Image (Turbo and base: one layout) LoRAs touch the diffusion model only; musubi-tuner's network module
    Arch("z_image", "Z-Image", "z_image", (), ss_base_model_version="z_image", modelspec_architecture="Z-Image/lora",
         kohya_network_module="networks.lora_zimage", modelspec_implementation="https://github.com/Tongyi-MAI/Z-Image"),
    # Chroma: Flux blocks without modulation layers, T5 only (ComfyUI's kohya prefix for a lone T5 is lora_te1_);
    # kohya sd-scripts writes modelspec.architecture "chroma/lora"
    Arch("chroma", "Chroma", "flux", ("t5xxl",), {"1": "t5xxl", "3": "t5xxl"}, {"text_encoder": "t5xxl"},
         "chroma", "chroma/lora", {"t5xxl": "lora_te1_"}, "networks.lora_flux", "https://huggingface.co/lodestones/Chroma"),
    # HunyuanVideo LoRAs touch the diffusion model only (musubi-tuner, diffusion-pipe, diffusers); the strings are musubi-tuner's
    Arch("hunyuan_video", "HunyuanVideo", "hunyuan_video", (), ss_base_model_version="hunyuan_video",
         modelspec_architecture="hunyuan-video/lora", kohya_network_module="networks.lora",
         modelspec_implementation="https://github.com/Tencent/HunyuanVideo"),
    # Lumina 2: diffusion model only here (its Gemma 2 text encoder has no layout); kohya sd-scripts writes
    # modelspec.architecture "lumina-2/lora"
    Arch("lumina2", "Lumina 2", "lumina2", (), ss_base_model_version="lumina2", modelspec_architecture="lumina-2/lora",
         kohya_network_module="networks.lora_lumina", modelspec_implementation="https://github.com/Alpha-VLLM/Lumina-Image-2.0"),
    # HiDream-I1 (full, dev, fast): diffusion model only (four text encoders, none laid out); ai-toolkit writes
    # ss_base_model_version "hidream"
    Arch("hidream", "HiDream-I1", "hidream", (), ss_base_model_version="hidream", modelspec_architecture="hidream-i1/lora",
         modelspec_implementation="https://github.com/HiDream-ai/HiDream-I1"),
    # LTX-Video 2B and 13B (ComfyUI's LTXV, by width) and LTX-2 (LTXAV): diffusion model only (T5 / Gemma 3 text
    # encoders, not laid out); ai-toolkit writes ss_base_model_version "ltx2". A 13B LoRA's keys and sizes are
    # those of LTX-2's video stream: such a file fits both, and applies to either.
    Arch("ltxv", "LTX-Video", "ltxv", (), ss_base_model_version="ltxv", modelspec_architecture="ltx-video/lora",
         modelspec_implementation="https://github.com/Lightricks/LTX-Video"),
    Arch("ltxv_13b", "LTX-Video 13B", "ltxv", (), ss_base_model_version="ltxv", modelspec_architecture="ltx-video/lora",
         modelspec_implementation="https://github.com/Lightricks/LTX-Video"),
    Arch("ltx2", "LTX-2", "ltxv", (), ss_base_model_version="ltx2", modelspec_architecture="ltx-2/lora",
         modelspec_implementation="https://github.com/Lightricks/LTX-2"),
    # HunyuanImage 2.1 (base and distilled), its refiner and HunyuanVideo 1.5: ComfyUI's HunyuanVideo class with
    # more modules (one family); diffusion model only. kohya sd-scripts writes modelspec.architecture
    # "hunyuan-image-2.1/lora", musubi-tuner ss_base_model_version "hunyuan_video_1_5"
    Arch("hunyuan_image21", "HunyuanImage 2.1", "hunyuan_video", (), ss_base_model_version="hunyuan_image_2.1",
         modelspec_architecture="hunyuan-image-2.1/lora", kohya_network_module="networks.lora_hunyuan_image",
         modelspec_implementation="https://github.com/Tencent-Hunyuan/HunyuanImage-2.1"),
    Arch("hunyuan_image21_refiner", "HunyuanImage 2.1 refiner", "hunyuan_video", (),
         modelspec_architecture="hunyuan-image-2.1-refiner/lora",
         modelspec_implementation="https://github.com/Tencent-Hunyuan/HunyuanImage-2.1"),
    Arch("hunyuan_video15", "HunyuanVideo 1.5", "hunyuan_video", (), ss_base_model_version="hunyuan_video_1_5",
         modelspec_architecture="hunyuan-video-1.5/lora", kohya_network_module="networks.lora_hv_1_5",
         modelspec_implementation="https://github.com/Tencent-Hunyuan/HunyuanVideo-1.5"),
)}


def arch(arch_id: str) -> Arch:
    """The :class:`Arch` with this id (``sd1``, ``sd2``, ``sdxl``, ``sdxl_refiner``, ``flux``, ``sd3``,
    ``sd35m``, ``sd35l``, ``wan21_t2v_14b``, ``wan21_i2v_14b``, ``wan21_t2v_1_3b``, ``wan22_ti2v_5b``, ``qwen_image``,
    ``flux2_dev``, ``flux2_klein_4b``, ``flux2_klein_9b``, ``z_image``, ``chroma``, ``hunyuan_video``, ``lumina2``,
    ``hidream``, ``ltxv``, ``ltxv_13b``, ``ltx2``, ``hunyuan_image21``, ``hunyuan_image21_refiner``, ``hunyuan_video15``)."""
    try:
        return ARCHS[arch_id]
    except KeyError:
        raise KeyError(f"unknown architecture {arch_id!r}; known: {', '.join(ARCHS)}") from None


def _compact(value: str) -> str:
    """A metadata string in lower case without ``_``, ``-``, ``.`` and spaces (``Flux.1-dev`` -> ``flux1dev``)."""
    return value.strip().lower().replace("_", "").replace("-", "").replace(".", "").replace(" ", "")


def arch_from_metadata_string(value: str) -> str | None:
    """Map an ``ss_base_model_version`` / ``modelspec.architecture`` / ai-toolkit string to an arch id."""
    v = value.strip().lower()
    if not v or v == "none":
        return None
    if v.startswith("qwen"):  # musubi-tuner: qwen_image, qwen_image_edit, Qwen-Image[-Edit]/lora
        return "qwen_image"
    if "chroma" in v:  # kohya sd-scripts: modelspec.architecture "chroma/lora"
        return "chroma"
    hunyuan = v.replace("_", "").replace("-", "").replace(".", "").replace(" ", "")
    if hunyuan.startswith(("hunyuanvideo15", "hv15")):  # musubi-tuner: hunyuan_video_1_5, hv15
        return "hunyuan_video15"
    if hunyuan.startswith(("hunyuanimage21refiner", "hunyuanimagerefiner")):
        return "hunyuan_image21_refiner"
    if hunyuan.startswith("hunyuanimage21"):  # kohya sd-scripts: hunyuan-image-2.1/lora
        return "hunyuan_image21"
    if v.startswith(("hunyuan_video", "hunyuan-video", "hunyuanvideo")):  # musubi-tuner
        return "hunyuan_video"
    if v.startswith("hidream"):
        return "hidream"
    if v.startswith("ltx"):  # ai-toolkit ltx2; ltx-2/lora, ltxv, ltx-video/lora
        return "ltx2" if v[3:].lstrip("-_ ").startswith("2") else "ltxv"
    if v.startswith("lumina"):  # kohya sd-scripts: lumina-2/lora
        return "lumina2"
    if v.startswith("wan"):  # musubi-tuner writes "wan" and "wan2.1/lora" for every Wan size
        return None
    if v.replace("-", "").replace("_", "").startswith("zimage"):  # z_image, zimage, Z-Image-Turbo, Z-Image/lora
        return "z_image"
    compact = _compact(v)
    if "flux2" in compact:  # ai-toolkit flux2, flux2_klein_4b; musubi-tuner flux_2_dev; flux-2-klein-9b/lora
        if "klein" not in compact:
            return "flux2_dev"
        return "flux2_klein_4b" if "4b" in compact else "flux2_klein_9b" if "9b" in compact else None
    if "refiner" in v:
        return "sdxl_refiner"
    if "xl" in v:
        return "sdxl"
    if "flux" in v:
        return "flux"
    if "3.5" in v or "3-5" in v or "sd35" in v:
        return "sd35l" if "large" in v else "sd35m" if "medium" in v else None
    if v.startswith(("sd3", "stable-diffusion-v3")):
        return "sd3"
    if v.startswith(("sd_v2", "sd2", "stable-diffusion-v2", "v2")) or "sd_2" in v:
        return "sd2"
    if v.startswith(("sd_v1", "sd1", "stable-diffusion-v1", "v1")) or "sd_1" in v:
        return "sd1"
    return None


@dataclass(frozen=True)
class Variant:
    """A release of an architecture whose LoRAs have its keys and shapes: only metadata names it (or
    a key the others lack), and its LoRAs apply to any model of the architecture (ComfyUI loads them
    all with the architecture's one model config)."""

    arch: str
    label: str  # what :attr:`~loralab.formats.detect.Detection.arch_variant` holds
    name: str  # what users call it
    #: any of these in a metadata string (in the form of :func:`_compact`) that names ``arch`` names the variant
    words: tuple[str, ...]
    #: what the writer puts in ``ss_base_model_version`` and ``modelspec.architecture`` for it
    ss_base_model_version: str
    modelspec_architecture: str


#: the most specific first: where a file's strings name two (musubi-tuner's Kontext LoRA says
#: "flux_kontext" and "Flux.1-dev/lora"), the first is the one
VARIANTS: tuple[Variant, ...] = (
    # Flux.1 Kontext [dev]: ai-toolkit writes ss_base_model_version "flux.1_kontext", musubi-tuner "flux_kontext"
    Variant("flux", "Kontext", "Flux.1 Kontext", ("kontext",), "flux_kontext", "flux-1-kontext-dev/lora"),
    Variant("flux", "schnell", "Flux.1 schnell", ("flux1schnell",), "flux1", "flux-1-schnell/lora"),
    Variant("flux", "dev", "Flux.1 dev", ("flux1dev",), "flux1", "flux-1-dev/lora"),
    # Qwen-Image-Edit and its 2509 (Edit Plus) and 2511 releases, Qwen-Image-Layered: musubi-tuner writes
    # ss_base_model_version qwen_image_edit (qwen_image_layered) and the model spec strings below; ai-toolkit
    # writes qwen_image for each
    Variant("qwen_image", "Edit-2511", "Qwen-Image-Edit-2511", ("edit2511",), "qwen_image_edit",
            "Qwen-Image-Edit-2511/lora"),
    Variant("qwen_image", "Edit-2509", "Qwen-Image-Edit-2509", ("edit2509", "editplus"), "qwen_image_edit",
            "Qwen-Image-Edit-Plus/lora"),
    Variant("qwen_image", "Edit", "Qwen-Image-Edit", ("edit",), "qwen_image_edit", "Qwen-Image-Edit/lora"),
    Variant("qwen_image", "Layered", "Qwen-Image-Layered", ("layered",), "qwen_image_layered",
            "Qwen-Image-Layered/lora"),
)


def arch_variant(arch_id: str, label: str | None) -> Variant | None:
    """The :class:`Variant` of ``arch_id`` with this label (None for none)."""
    return next((v for v in VARIANTS if v.arch == arch_id and v.label == label), None)


def variant_from_metadata(arch_id: str, values: Iterable[str]) -> Variant | None:
    """The most specific variant of ``arch_id`` these metadata strings name; a string that names
    another architecture names none of its variants."""
    named = [_compact(v) for v in values if arch_from_metadata_string(v) == arch_id]
    return next((v for v in VARIANTS if v.arch == arch_id and any(w in c for c in named for w in v.words)), None)
