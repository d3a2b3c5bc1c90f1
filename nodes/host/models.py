"""The loaded ComfyUI model as the engine sees it: its architecture, its exact layout, and its
weights as they are used (patches applied)."""
from __future__ import annotations

import comfy.lora
import torch

from ...loralab.errors import ArchMismatchError
from ...loralab.formats.model_weights import ModelWeights
from ...loralab.layouts import NORM_FAMILIES, ModelLayout
from ...loralab.layouts.archs import arch
from ...loralab.layouts.flux2 import flux2_variant
from ...loralab.layouts.ltxv import ltxv_variant
from ...loralab.layouts.mmdit import mmdit_variant
from ...loralab.layouts.wan import wan_layout, wan_variant

#: ComfyUI model_config class (or a base class of it) -> LoRA Lab arch id ("mmdit", "flux2": by its config;
#: ComfyUI 0.3.64 has no Flux2 class, and a name it lacks is simply never met)
_CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "SDXLRefiner": "sdxl_refiner",
                "Flux": "flux", "FluxSchnell": "flux", "SD3": "mmdit", "QwenImage": "qwen_image", "Flux2": "flux2",
                "ZImage": "z_image", "Chroma": "chroma", "HiDream": "hidream", "LTXV": "ltxv", "LTXAV": "ltxv"}
#: arch ids that stand for a family whose size the config tells
_BY_CONFIG = {"mmdit": mmdit_variant, "flux2": flux2_variant, "ltxv": ltxv_variant}
#: ComfyUI's Wan model_config base class: its subclasses (I2V, Wan 2.2, Fun-control, camera, VACE, HuMo, S2V,
#: Animate, ...) are the Wan base model of their size plus modules of their own
_WAN_BASE = "WAN21_T2V"
#: the Wan classes that are the base models themselves (T2V, I2V, Wan 2.2): training takes these only, a
#: variant's forward needing inputs of its own (VACE context, camera, audio, pose, control latents)
WAN_BASE_MODELS = ("WAN21_T2V", "WAN21_I2V", "WAN22_T2V")
#: ComfyUI model_config classes that map by their exact class, not their subclasses: HunyuanVideo's
#: (T2V, I2V, SkyReels I2V differ in input channels only; HunyuanImage 2.1, its refiner and HunyuanVideo 1.5
#: subclass them, keeping its ``image_model``, with modules their configs switch on; HunyuanVideo 1.5's
#: super-resolution model differs from it in input channels only) and Lumina 2 (Z-Image subclasses it,
#: keeping its ``image_model``)
_EXACT_CLASS_ARCH = {"HunyuanVideo": "hunyuan_video", "HunyuanVideoI2V": "hunyuan_video",
                     "HunyuanVideoSkyreelsI2V": "hunyuan_video", "Lumina2": "lumina2",
                     "HunyuanImage21": "hunyuan_image21", "HunyuanImage21Refiner": "hunyuan_image21_refiner",
                     "HunyuanVideo15": "hunyuan_video15", "HunyuanVideo15_SR_Distilled": "hunyuan_video15"}
#: families whose layout depends on the host's parameter names (q/k norms; Lumina 2's final norm)
HOST_NAMED_FAMILIES = (*NORM_FAMILIES, "lumina2")
#: how messages name model_config classes that are other architectures than their base class
_MODEL_NAMES = {"ZImagePixelSpace": "Z-Image pixel-space"}


def model_arch(model) -> str | None:
    """The LoRA Lab arch id of a ComfyUI MODEL (ModelPatcher), or None for architectures we do not map.

    A subclass of a mapped config class counts as its base's arch only where its config keeps the
    base's ``image_model``: SDXL's SSD-1B or Flux's inpaint model do, Flux.2 (``Flux2(Flux)``,
    ``image_model: flux2``) does not and is no Flux.1 (it maps through its own class, dev or Klein by
    width). Wan configs (every subclass of ``WAN21_T2V``) map by their cross-attention and width (see
    :func:`wan_config`), HunyuanVideo and Lumina 2 configs by their exact class
    (Z-Image subclasses Lumina 2 and maps through its own class). LTX-2's ``LTXAV`` subclasses ``LTXV`` with its
    own ``image_model`` and maps through its own class; both by their config (LTX-2 releases whose config
    switches have no layout here map to None)."""
    config = model.model.model_config
    if _is_wan(config):
        return wan_variant(wan_config(model, with_extra=False))
    if type(config).__name__ in _EXACT_CLASS_ARCH:
        return _EXACT_CLASS_ARCH[type(config).__name__]
    own = config.unet_config.get("image_model")
    for cls in type(config).__mro__:
        arch_id = _CONFIG_ARCH.get(cls.__name__)
        if arch_id is None:
            continue
        if own != getattr(cls, "unet_config", {}).get("image_model"):
            return None
        return _BY_CONFIG[arch_id](config.unet_config) if arch_id in _BY_CONFIG else arch_id
    return None


def _is_wan(config) -> bool:
    return (any(cls.__name__ == _WAN_BASE for cls in type(config).__mro__)
            and config.unet_config.get("image_model") == "wan2.1")


def wan_config(model, with_extra: bool = True) -> dict:
    """The layout config of a loaded Wan model (any variant): its ``unet_config`` with ``model_type`` "i2v" where
    its blocks have image cross-attention, else "t2v" (VACE keeps "vace": its blocks are generated from
    ``vace_layers``), and with ``with_extra`` a variant's own parameters as ``extra_params``: those of modules the
    generated layout lacks (a base model has none; what quantized weights add to a module, such as fp8
    ``scale_weight``, is no module of its own)."""
    cfg = dict(model.model.model_config.unet_config)
    dm = model.model.diffusion_model
    if cfg.get("model_type") != "vace":
        cfg["model_type"] = "i2v" if hasattr(dm.blocks[0].cross_attn, "k_img") else "t2v"
    if with_extra and type(model.model.model_config).__name__ not in WAN_BASE_MODELS:
        shapes = wan_layout(cfg)[0]
        modules = {k.rsplit(".", 1)[0] for k in shapes}
        extra = {k: tuple(v.shape) for k, v in dm.state_dict().items()
                 if k not in shapes and k.rsplit(".", 1)[0] not in modules}
        if extra:
            cfg["extra_params"] = extra
    return cfg


def model_name(model) -> str:
    """How messages name a MODEL's architecture: ``Z-Image pixel-space``, else its ComfyUI config class name."""
    name = type(model.model.model_config).__name__
    return _MODEL_NAMES.get(name, name)


def model_layout(model) -> ModelLayout | None:
    """The exact layout of a loaded ComfyUI MODEL, generated from its own config, with the
    parameter names of its own weights (Flux's, Chroma's and HunyuanVideo's norms: ``scale`` up to
    ComfyUI 0.3.x, ``weight`` since 0.33; Lumina 2's final norm, gone since 0.33; a Wan variant's own modules)."""
    arch_id = model_arch(model)
    if arch_id is None:
        return None
    if arch(arch_id).family == "wan":
        return ModelLayout.from_config(arch_id, wan_config(model))
    keys = [k for k, _ in model.model.named_parameters()] if arch(arch_id).family in HOST_NAMED_FAMILIES else None
    return ModelLayout.from_config(arch_id, model.model.model_config.unet_config, keys)



def required_layout(model, action: str) -> ModelLayout:
    """:func:`model_layout`, or :class:`ArchMismatchError` naming the model class where LoRA Lab has
    no layout for it; ``action`` says what needed it ("extracts LoRAs from")."""
    layout = model_layout(model)
    if layout is None:
        raise ArchMismatchError(f"LoRA Lab has no layout for {model_name(model)} yet: it {action} SD1.x, SD2.x, "
                                "SDXL, SD3/3.5, Flux.1, Flux.2, Chroma, Wan 2.1/2.2, Qwen-Image, Z-Image, HunyuanVideo, "
                                "HunyuanVideo 1.5, HunyuanImage 2.1, Lumina 2, HiDream, LTX-Video and LTX-2 models only",
                                hint="use ComfyUI's own nodes for this model")
    return layout


def effective_weights(model, layout, clip=None, label: str = "model") -> ModelWeights:
    """The weights of a MODEL (and optionally a CLIP) as they are used: each patch already on it
    (a loaded LoRA, a model merge) applied, one weight at a time on request."""
    sources = [model] + ([clip.patcher] if clip is not None else [])
    table: dict[str, tuple] = {}
    for patcher in sources:
        for key, entry in patcher.get_key_patches().items():
            table.setdefault(key, entry)

    def get(key: str) -> torch.Tensor:
        entry = table[key]
        weight, convert_func = entry[0]
        w = convert_func(weight.detach().to(torch.float32, copy=True), inplace=True)
        if len(entry) > 1:
            w = comfy.lora.calculate_weight(entry[1:], w, key)
        return w
    return ModelWeights({k: tuple(v[0][0].shape) for k, v in table.items()}, get, layout, label=label)
