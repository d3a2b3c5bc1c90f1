"""Model layouts: every weight key of a base model in ComfyUI's names, with its shape, and every
other name (diffusers, BFL, XLabs, underscore-joined kohya forms) that points at it.

A layout is generated from the model's config, so the released models and the tiny test models
are described by the same code. :func:`layout_for` gives the layouts of the released models;
:meth:`ModelLayout.from_config` builds one for a model actually loaded in a host.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Iterable

from .archs import Arch, arch
from .flux import CHROMA_CONFIG, FLUX_DEV_CONFIG, NORM_PARAMS, chroma_aliases, flux_aliases, flux_layout, xlabs_names
from .flux2 import FLUX2_DEV_CONFIG, FLUX2_KLEIN_4B_CONFIG, FLUX2_KLEIN_9B_CONFIG, flux2_layout, is_flux2
from .hunyuan_video import (HUNYUAN_IMAGE21_CONFIG, HUNYUAN_IMAGE21_REFINER_CONFIG, HUNYUAN_VIDEO15_CONFIG,
                            HUNYUAN_VIDEO_CONFIG, hunyuan_video_layout)
from .hidream import HIDREAM_CONFIG, hidream_layout
from .lumina2 import LUMINA2_CONFIG, lumina2_layout
from .ltxv import LTX2_CONFIG, LTXV_13B_CONFIG, LTXV_CONFIG, ltxv_layout
from .mmdit import SD3_MEDIUM_CONFIG, SD35_LARGE_CONFIG, SD35_MEDIUM_CONFIG, mmdit_layout
from .qwen_image import QWEN_IMAGE_CONFIG, qwen_image_layout
from .text_encoders import text_encoder_layout
from .unet import SD2_CONFIG, SD15_CONFIG, SDXL_CONFIG, SDXL_REFINER_CONFIG, Shapes, unet_layout
from .z_image import Z_IMAGE_CONFIG, z_image_layout
from .wan import (WAN21_I2V_14B_CONFIG, WAN21_T2V_1_3B_CONFIG, WAN21_T2V_14B_CONFIG, WAN21_VACE_1_3B_CONFIG,
                  WAN21_VACE_14B_CONFIG, WAN22_TI2V_5B_CONFIG, wan_layout)

DIFFUSION_PREFIX = "diffusion_model."

STANDARD_CONFIGS: dict[str, dict] = {
    "sd1": SD15_CONFIG,
    "sd2": SD2_CONFIG,
    "sdxl": SDXL_CONFIG,
    "sdxl_refiner": SDXL_REFINER_CONFIG,
    "flux": FLUX_DEV_CONFIG,
    "sd3": SD3_MEDIUM_CONFIG,
    "sd35m": SD35_MEDIUM_CONFIG,
    "sd35l": SD35_LARGE_CONFIG,
    "wan21_t2v_14b": WAN21_T2V_14B_CONFIG,
    "wan21_i2v_14b": WAN21_I2V_14B_CONFIG,
    "wan21_t2v_1_3b": WAN21_T2V_1_3B_CONFIG,
    "wan22_ti2v_5b": WAN22_TI2V_5B_CONFIG,
    "qwen_image": QWEN_IMAGE_CONFIG,
    "flux2_dev": FLUX2_DEV_CONFIG,
    "flux2_klein_4b": FLUX2_KLEIN_4B_CONFIG,
    "flux2_klein_9b": FLUX2_KLEIN_9B_CONFIG,
    "z_image": Z_IMAGE_CONFIG,
    "chroma": CHROMA_CONFIG,
    "hunyuan_video": HUNYUAN_VIDEO_CONFIG,
    "lumina2": LUMINA2_CONFIG,
    "hidream": HIDREAM_CONFIG,
    "ltxv": LTXV_CONFIG,
    "ltxv_13b": LTXV_13B_CONFIG,
    "ltx2": LTX2_CONFIG,
    "hunyuan_image21": HUNYUAN_IMAGE21_CONFIG,
    "hunyuan_image21_refiner": HUNYUAN_IMAGE21_REFINER_CONFIG,
    "hunyuan_video15": HUNYUAN_VIDEO15_CONFIG,
}

#: arch id -> its released VACE model (the layout of a LoRA that trained VACE's modules)
VACE_CONFIGS: dict[str, dict] = {"wan21_t2v_14b": WAN21_VACE_14B_CONFIG, "wan21_t2v_1_3b": WAN21_VACE_1_3B_CONFIG}

#: family -> the layout generator of its diffusion model (U-Net families use unet_layout)
_DIT_LAYOUTS = {"mmdit": mmdit_layout, "wan": wan_layout, "qwen_image": qwen_image_layout, "z_image": z_image_layout,
                "lumina2": lumina2_layout, "hidream": hidream_layout, "ltxv": ltxv_layout}
#: families whose q/k norm weights ComfyUI names ``scale`` up to 0.3.x and ``weight`` since 0.33
NORM_FAMILIES = ("flux", "hunyuan_video")


@dataclass(frozen=True)
class Resolved:
    """Where a LoRA module lands: a canonical module (ComfyUI key without its parameter name),
    optionally a row slice of a fused weight, and which component it belongs to."""

    module: str
    component: str  # "unet" or a ComfyUI text-encoder name ("clip_l", "clip_g", "clip_h", "t5xxl")
    rows: tuple[int, int] | None = None  # (start, length) along the output dimension
    swap_halves: bool = False


@dataclass(frozen=True)
class Target:
    """The model weight one adapter writes: a ComfyUI key, optionally a row slice of it."""

    key: str
    rows: tuple[int, int] | None = None
    swap_halves: bool = False


def _modules(shapes: Shapes) -> dict[str, str]:
    """Module name -> itself for every ``<module>.<param>`` key, plus whole keys whose parameter is
    neither ``weight`` nor ``bias`` (norm ``scale``s), which adapters may address directly."""
    out: dict[str, str] = {}
    for k in shapes:
        if "." not in k:  # a bare parameter such as MMDiT's pos_embed
            out.setdefault(k, k)
            continue
        mod, param = k.rsplit(".", 1)
        out.setdefault(mod, mod)
        if param not in ("weight", "bias"):
            out.setdefault(k, k)
    return out


def _underscored(index: dict[str, tuple]) -> dict[str, tuple | None]:
    out: dict[str, tuple | None] = {}
    for name, value in index.items():
        u = name.replace(".", "_")
        if u in out and out[u] != value:
            out[u] = None  # ambiguous: never guess
        else:
            out[u] = value
    return out


class ModelLayout:
    """All weight keys of one base model (diffusion model + text encoders) and their aliases.

    ``norm_param`` names the q/k norm weights of Flux, Chroma and HunyuanVideo (``scale`` as in
    BFL's files, ``weight`` as ComfyUI 0.33 builds the model; see :meth:`from_config`); other
    families ignore it."""

    def __init__(self, arch_: Arch, config: dict, norm_param: str = "scale") -> None:
        self.arch = arch_
        self.config = dict(config)
        self.norm_param = norm_param
        if arch_.family == "flux" and is_flux2(config):
            dshapes, dnames, fused = flux2_layout(config, norm_param)
        elif arch_.family == "flux":
            dshapes, dnames, fused = flux_layout(config, norm_param)
            extra = {**flux_aliases(config), **chroma_aliases(config)}
            dnames = {**dnames, **{dn: m for dn, m in extra.items() if dn not in dnames}}
            fused = {**fused, **xlabs_names(config)}
        elif arch_.family == "hunyuan_video":
            dshapes, dnames, fused = hunyuan_video_layout(config, norm_param)
        elif arch_.family in _DIT_LAYOUTS:
            dshapes, dnames, fused = _DIT_LAYOUTS[arch_.family](config)
        else:
            dshapes, dnames = unet_layout(config)
            fused = {}
        self.shapes: Shapes = {DIFFUSION_PREFIX + k: v for k, v in dshapes.items()}
        unet: dict[str, tuple] = {m: (DIFFUSION_PREFIX + m, None, False) for m in _modules(dshapes)}
        self._diffusers_of: dict[str, str] = {}
        for dn, ldm in dnames.items():
            unet.setdefault(dn, (DIFFUSION_PREFIX + ldm, None, False))
            self._diffusers_of.setdefault(DIFFUSION_PREFIX + ldm, dn)
        for dn, (mod, start, length, swap) in fused.items():
            full = dshapes[mod + ".weight"][0]
            rows = None if (start == 0 and length == full) else (start, length)
            unet.setdefault(dn, (DIFFUSION_PREFIX + mod, rows, swap))
        self._unet = unet
        self._unet_u = _underscored(unet)
        self._te: dict[str, dict[str, tuple]] = {}
        self._te_u: dict[str, dict[str, tuple | None]] = {}
        for te in arch_.text_encoders:
            tshapes = text_encoder_layout(te)
            self.shapes.update(tshapes)
            prefix = f"{te}.transformer."
            idx = {m[len(prefix):]: (m, None, False) for m in _modules(tshapes)}
            self._te[te] = idx
            self._te_u[te] = _underscored(idx)

    @classmethod
    def from_config(cls, arch_id: str, config: dict, keys: Iterable[str] | None = None) -> "ModelLayout":
        """The layout of a model with this arch and UNet/Flux config (as ComfyUI reports it).
        ``keys``, the real model's state-dict key names where known, choose the parameter naming
        that the running host uses (q/k norms: ``scale`` or ``weight``): the one whose
        diffusion-model keys the model has most of (the first, ``scale``, on a tie); and whether
        Lumina 2's unused final norm is there."""
        a = arch(arch_id)
        if keys is None:
            return cls(a, config)
        real = {k for k in keys if k.startswith(DIFFUSION_PREFIX)}
        if a.family == "lumina2":
            return cls(a, dict(config, norm_final=DIFFUSION_PREFIX + "norm_final.weight" in real))
        if a.family not in NORM_FAMILIES:
            return cls(a, config)
        candidates = [cls(a, config, p) for p in NORM_PARAMS]
        return max(candidates, key=lambda c: len(real.intersection(c.shapes)))

    def with_norm_param(self, norm_param: str) -> "ModelLayout":
        """This layout with q/k norm weights named ``norm_param`` (itself where they already are, or
        where its family has none)."""
        if norm_param == self.norm_param or self.arch.family not in NORM_FAMILIES:
            return self
        return _renamed(self, norm_param)

    def resolve_unet(self, name: str, *, underscore: bool = False) -> Resolved | None:
        """Resolve a diffusion-model module name (LDM/BFL, diffusers or XLabs; dotted or underscored)."""
        hit = (self._unet_u if underscore else self._unet).get(name)
        if hit is None:
            return None
        module, rows, swap = hit
        return Resolved(module, "unet", rows, swap)

    def resolve_te(self, te: str, name: str, *, underscore: bool = False) -> Resolved | None:
        """Resolve a text-encoder module name (HF layout, dotted or underscored) in encoder ``te``."""
        idx = (self._te_u if underscore else self._te).get(te)
        hit = idx.get(name) if idx is not None else None
        if hit is None:
            return None
        return Resolved(hit[0], te, None, False)

    def diffusers_name(self, module: str) -> str | None:
        """The diffusers name of a canonical diffusion-model module (``diffusion_model.*``), if it has one."""
        return self._diffusers_of.get(module)

    def key_for(self, resolved: Resolved, param: str) -> str | None:
        """The model key a module's ``param`` ("weight" or "bias") is stored under, if it exists."""
        if resolved.module in self.shapes:
            return resolved.module if param == "weight" else None
        key = f"{resolved.module}.{param}"
        if key in self.shapes:
            return key
        if param == "weight" and f"{resolved.module}.scale" in self.shapes:
            return f"{resolved.module}.scale"
        return None


_RENAMED: "weakref.WeakKeyDictionary[ModelLayout, dict[str, ModelLayout]]" = weakref.WeakKeyDictionary()


def _renamed(layout: ModelLayout, norm_param: str) -> ModelLayout:
    """:meth:`ModelLayout.with_norm_param`, built once per layout and name."""
    per = _RENAMED.setdefault(layout, {})
    if norm_param not in per:
        per[norm_param] = ModelLayout(layout.arch, layout.config, norm_param)
    return per[norm_param]


@functools.lru_cache(maxsize=None)
def layout_for(arch_id: str, vace: bool = False) -> ModelLayout:
    """The layout of the released model of an architecture (SD1.5, SD2.1, SDXL base/refiner, Flux.1-dev,
    SD3 medium, SD3.5 medium/large, Wan 2.1 T2V 14B / 1.3B, Wan 2.1 I2V 14B, Wan 2.2 TI2V 5B, Qwen-Image,
    Flux.2 dev, Flux.2 Klein 4B / 9B, Z-Image, Chroma, HunyuanVideo, Lumina 2, HiDream-I1, LTX-Video 2B / 13B, LTX-2,
    HunyuanImage 2.1 and its refiner, HunyuanVideo 1.5); with ``vace``, Wan 2.1 VACE 14B / 1.3B where the arch has
    one."""
    return ModelLayout(arch(arch_id), VACE_CONFIGS[arch_id] if vace and arch_id in VACE_CONFIGS
                       else STANDARD_CONFIGS[arch_id])


__all__ = ["ModelLayout", "Resolved", "Target", "layout_for", "DIFFUSION_PREFIX", "STANDARD_CONFIGS", "NORM_FAMILIES"]
