"""The loaded ComfyUI model as the engine sees it: its architecture, its exact layout, and its
weights as they are used (patches applied)."""
from __future__ import annotations

import comfy.lora
import torch

from ...loralab.errors import ArchMismatchError
from ...loralab.formats.model_weights import ModelWeights
from ...loralab.layouts import ModelLayout
from ...loralab.layouts.mmdit import mmdit_variant
from ...loralab.layouts.wan import wan_variant

#: ComfyUI model_config class (or a base class of it) -> LoRA Lab arch id
_CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "SDXLRefiner": "sdxl_refiner",
                "Flux": "flux", "FluxSchnell": "flux", "QwenImage": "qwen_image"}
#: ComfyUI's Wan model_config classes whose weights are exactly our Wan layouts (its VACE, camera,
#: Fun-control, S2V, HuMo and Animate subclasses add modules we have no layout for)
_WAN_CLASSES = ("WAN21_T2V", "WAN21_I2V", "WAN22_T2V")


def model_arch(model) -> str | None:
    """The LoRA Lab arch id of a ComfyUI MODEL (ModelPatcher), or None for architectures we do not map."""
    if type(model.model.model_config).__name__ in _WAN_CLASSES:
        return wan_variant(model.model.model_config.unet_config)
    for cls in type(model.model.model_config).__mro__:
        if cls.__name__ == "SD3":
            return mmdit_variant(model.model.model_config.unet_config)
        if cls.__name__ in _CONFIG_ARCH:
            return _CONFIG_ARCH[cls.__name__]
    return None


def model_layout(model) -> ModelLayout | None:
    """The exact layout of a loaded ComfyUI MODEL, generated from its own config."""
    arch_id = model_arch(model)
    if arch_id is None:
        return None
    return ModelLayout.from_config(arch_id, model.model.model_config.unet_config)



def required_layout(model, action: str) -> ModelLayout:
    """:func:`model_layout`, or :class:`ArchMismatchError` naming the model class where LoRA Lab has
    no layout for it; ``action`` says what needed it ("extracts LoRAs from")."""
    layout = model_layout(model)
    if layout is None:
        name = type(model.model.model_config).__name__
        raise ArchMismatchError(f"LoRA Lab {action} SD1.x, SD2.x, SDXL, SD3/3.5, Flux, Wan 2.1/2.2 and Qwen-Image "
                                f"models only, not {name}",
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
