"""Which of a LoRA file's keys the host (ComfyUI 0.3.64's own LoRA loader) would load, emulated
from the rules of ``comfy.lora.model_lora_keys_unet``/``model_lora_keys_clip``,
``comfy.lora_convert.convert_lora`` and ``comfy.lora.load_lora`` (no ComfyUI import).

The host's key map names each model weight in a fixed set of spellings (LDM and diffusers names
with ``lora_unet_``/``lycoris_``/``unet.``/``transformer.``/``lora_transformer_`` prefixes, the
attention-processor form ``attn1.processor.to_q``, kohya text-encoder names, ``text_encoders.``);
a key is loaded when it is ``<name><suffix>`` for a name in that map and a suffix one of its
adapters reads, and it patches the model when the mapped weight exists. Everything else is
dropped with a "lora key not loaded" warning. ``tests/host`` checks this emulation against the
real ``comfy.lora`` on every fixture.
"""
from __future__ import annotations

import weakref
from typing import Iterable, Mapping

from ..adapters import ALGORITHMS, dora
from ..adapters.base import ALPHA_SUFFIX
from ..layouts import DIFFUSION_PREFIX, ModelLayout
from ..layouts.flux import flux_layout
from ..layouts.mmdit import mmdit_layout
from ..layouts.unet import unet_layout

HOST = "ComfyUI 0.3.64"

#: a host key-map target: model key, optional (row start, row count), whether halves are swapped
HostTarget = tuple[str, "tuple[int, int] | None"]

#: the LoRA spellings ComfyUI's LoRAAdapter reads, in its order: (up, down, mid)
_LORA_FORMS = (
    (".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"),
    ("_lora.up.weight", "_lora.down.weight", None),
    (".lora_B.weight", ".lora_A.weight", None),
    (".lora.up.weight", ".lora.down.weight", None),
    (".lora_B", ".lora_A", None),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", None),
    (".lora_B.default.weight", ".lora_A.default.weight", None),
)
def _suffixes(kind: str, *roles: str) -> tuple[str, ...]:
    return tuple(ALGORITHMS[kind].suffix(r) for r in roles)


_LOHA = _suffixes("loha", "w1a", "w1b", "w2a", "w2b")
_LOHA_TUCKER = _suffixes("loha", "t1", "t2")
_LOKR = _suffixes("lokr", "w1", "w2", "w1a", "w1b", "w2a", "w2b", "t2")
_GLORA = _suffixes("glora", "a1", "a2", "b1", "b2")
_OFT = _suffixes("oft", "oft_blocks", "rescale")
_DIFF, _DIFF_B, _W_NORM, _B_NORM = _suffixes("diff", "diff", "diff_b", "w_norm", "b_norm")
_SET = ALGORITHMS["set"].suffix("set")
#: ComfyUI's reshape hint beside a LoRA (LoRA Lab reads none)
_RESHAPE = ".reshape_weight"
_OTHER = (ALPHA_SUFFIX, dora.SUFFIX, _RESHAPE, *_LOHA_TUCKER, *_OFT, _W_NORM, _B_NORM, _DIFF, _DIFF_B, _SET)
_SUFFIXES = frozenset({s for form in _LORA_FORMS for s in form if s} | set(_LOHA) | set(_LOKR) | set(_GLORA)
                      | set(_OTHER))
_UNDERSCORE_SUFFIXES = tuple(s for s in _SUFFIXES if s.startswith("_"))

#: ComfyUI's kohya names of CLIP encoder layers: HF sub-module -> underscored
_CLIP_MAP = {"mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
             "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
             "self_attn.out_proj": "self_attn_out_proj"}

#: the prefixes ComfyUI gives diffusers names of transformer models, per family (dotted or underscored)
_TRANSFORMER_PREFIXES = {"flux": ("transformer.", "lycoris_", "lora_transformer_"),
                         "mmdit": ("transformer.", "base_model.model.", "lora_transformer_", "lycoris_")}

_MAPS: "weakref.WeakKeyDictionary[ModelLayout, dict[str, HostTarget]]" = weakref.WeakKeyDictionary()


def _unet_names(layout: ModelLayout, out: dict[str, HostTarget]) -> None:
    for k in layout.shapes:
        if not k.startswith(DIFFUSION_PREFIX):
            continue
        if k.endswith(".weight"):
            out["lora_unet_" + k[len(DIFFUSION_PREFIX):-len(".weight")].replace(".", "_")] = (k, None)
            out[k[:-len(".weight")]] = (k, None)
        else:
            out[k] = (k, None)
    if layout.arch.family in _TRANSFORMER_PREFIXES:
        make = flux_layout if layout.arch.family == "flux" else mmdit_layout
        shapes, names, fused = make(layout.config)
        diffusers: dict[str, HostTarget] = {}
        for dn, m in names.items():
            key = next((m + p for p in (".weight", ".scale") if m + p in shapes), None)
            if key is not None:
                diffusers[dn] = (DIFFUSION_PREFIX + key, None)
        diffusers.update({dn: (DIFFUSION_PREFIX + m + ".weight", (start, length))
                          for dn, (m, start, length, _) in fused.items()})
        for dn, target in diffusers.items():
            for prefix in _TRANSFORMER_PREFIXES[layout.arch.family]:
                out[prefix + (dn if prefix.endswith(".") else dn.replace(".", "_"))] = target
        if layout.arch.family == "flux":
            hidden = int(layout.config["hidden_size"])
            for k in layout.shapes:
                if k.endswith(".linear1.weight") and k.startswith(DIFFUSION_PREFIX):
                    out[k.replace(".linear1.weight", ".linear1_qkv")] = (k, (0, 3 * hidden))
        return
    if layout.arch.family == "wan":  # ComfyUI maps Wan's generic forms only (lora_unet_*, diffusion_model.*)
        return
    if layout.arch.family == "qwen_image":  # its own names, bare, with transformer. and SimpleTuner's lycoris_
        for k in layout.shapes:
            if k.startswith(DIFFUSION_PREFIX) and k.endswith(".weight"):
                name = k[len(DIFFUSION_PREFIX):-len(".weight")]
                for alias in (name, "transformer." + name, "lycoris_" + name.replace(".", "_")):
                    out[alias] = (k, None)
        return
    shapes, names = unet_layout(layout.config)
    for dn, ldm in names.items():
        if ldm + ".weight" not in shapes:
            continue
        target = (DIFFUSION_PREFIX + ldm + ".weight", None)
        out["lora_unet_" + dn.replace(".", "_")] = target
        out["lycoris_" + dn.replace(".", "_")] = target
        processor = dn.replace(".to_", ".processor.to_")
        if processor.endswith(".to_out.0"):
            processor = processor[:-2]
        out[processor] = target
        out["unet." + processor] = target


def _clip_names(layout: ModelLayout, out: dict[str, HostTarget]) -> None:
    encoders = layout.arch.text_encoders
    keys = [k for k in layout.shapes if not k.startswith(DIFFUSION_PREFIX)]
    for k in keys:
        if k.endswith(".weight"):
            out["text_encoders." + k[:-len(".weight")]] = (k, None)
    clip_l = "clip_l" in encoders
    clip_g = "clip_g" in encoders
    for b in range(32):
        for hf, kohya in _CLIP_MAP.items():
            for te in ("clip_h", "clip_l", "clip_g"):
                k = f"{te}.transformer.text_model.encoder.layers.{b}.{hf}.weight"
                if te not in encoders or k not in layout.shapes:
                    continue
                if te != "clip_g" or not clip_l:
                    prefixes = ["lora_te_", "lora_te1_"] if te != "clip_g" else ["lora_te_", "lora_prior_te_"]
                    diffusers = "text_encoder."
                else:
                    prefixes, diffusers = ["lora_te2_"], "text_encoder_2."
                for p in prefixes:
                    out[f"{p}text_model_encoder_layers_{b}_{kohya}"] = (k, None)
                out[f"{diffusers}text_model.encoder.layers.{b}.{hf}"] = (k, None)
    t5_prefix = "t5xxl.transformer."
    for k in keys:
        if k.endswith(".weight") and k.startswith(t5_prefix):
            name = k[len(t5_prefix):-len(".weight")].replace(".", "_")
            index = 1 + clip_g + clip_l
            if clip_l and index == 2:
                out[f"lora_te2_{name}"] = (k, None)
                index += 1
            out[f"lora_te{index}_{name}"] = (k, None)
    if "clip_g.transformer.text_projection.weight" in layout.shapes:
        out["lora_prior_te_text_projection"] = ("clip_g.transformer.text_projection.weight", None)
        out["lora_te2_text_projection"] = ("clip_g.transformer.text_projection.weight", None)
    if "clip_l.transformer.text_projection.weight" in layout.shapes:
        out["lora_te1_text_projection"] = ("clip_l.transformer.text_projection.weight", None)


def host_key_map(layout: ModelLayout) -> dict[str, HostTarget]:
    """The host's LoRA name -> (model key, row slice) map for a model of this layout."""
    if layout not in _MAPS:
        out: dict[str, HostTarget] = {}
        _unet_names(layout, out)
        _clip_names(layout, out)
        _MAPS[layout] = out
    return _MAPS[layout]


def _converted(keys: list[str]) -> dict[str, str]:
    """ComfyUI's ``convert_lora`` renames (BFL control LoRAs, XLabs/USO Flux LoRAs): new -> original."""
    present = set(keys)
    if "img_in.lora_A.weight" in present and "single_blocks.0.norm.key_norm.scale" in present:
        renamed = (k.replace(".lora_B.bias", _DIFF_B).replace("_norm.scale", "_norm.scale" + _SET) for k in keys)
        return {DIFFUSION_PREFIX + new: k for new, k in zip(renamed, keys)}
    if ("single_blocks.37.processor.qkv_lora.up.weight" in present
            and "double_blocks.18.processor.qkv_lora2.up.weight" in present):
        out = {}
        for k in keys:
            new = k.replace(".down.weight", ".lora_down.weight").replace(".up.weight", ".lora_up.weight")
            for a, b in ((".qkv_lora2.", ".txt_attn.qkv."), (".qkv_lora1.", ".img_attn.qkv."),
                         (".proj_lora1.", ".img_attn.proj."), (".proj_lora2.", ".txt_attn.proj."),
                         (".qkv_lora.", ".linear1_qkv."), (".proj_lora.", ".linear2."), (".processor.", ".")):
                new = new.replace(a, b)
            out[DIFFUSION_PREFIX + new] = k
        return out
    return {k: k for k in keys}


def _splits(key: str) -> list[tuple[str, str]]:
    """Every (``x``, suffix) with ``key == x + suffix`` for a suffix the host reads."""
    out = []
    dot = key.rfind(".")
    for _ in range(3):
        if dot <= 0:
            break
        if key[dot:] in _SUFFIXES:
            out.append((key[:dot], key[dot:]))
        dot = key.rfind(".", 0, dot)
    if key.endswith(_UNDERSCORE_SUFFIXES):
        out += [(key[:-len(s)], s) for s in _UNDERSCORE_SUFFIXES if key.endswith(s)]
    return out


def _load_one(present: set[str]) -> tuple[set[str], set[str]]:
    """Of the suffixes present for one key-map name: (those ``load_lora`` loads, those whose patch
    lands on the bias)."""
    loaded = present & {ALPHA_SUFFIX, dora.SUFFIX, _W_NORM, _DIFF, _SET, *_LOKR}
    for up, down, mid in _LORA_FORMS:
        if up in present:
            loaded |= {up, down}
            loaded |= present & {mid, _RESHAPE}
            break
    if _LOHA[0] in present:
        loaded.update(_LOHA)
        if _LOHA_TUCKER[0] in present:
            loaded.update(_LOHA_TUCKER)
    if _GLORA[0] in present:
        loaded.update(_GLORA)
    if _OFT[0] in present:
        loaded |= present & set(_OFT)
    bias = present & {_DIFF_B}
    if _W_NORM in present and _B_NORM in present:
        bias.add(_B_NORM)
    return loaded | bias, bias


def host_targets(keys: Iterable[str], layout: ModelLayout,
                 modules: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """For every tensor key of a LoRA file: the model key the host patches with it, or None where
    the host drops it (not loaded, or loaded for a weight the model does not have).

    ``modules`` (tensor key -> module name, as :func:`loralab.formats.keys.group_keys` split it) is an
    optional hint that saves splitting keys whose suffix the host reads too.
    """
    key_list = list(keys)
    renamed = _converted(key_list)
    key_map = host_key_map(layout)
    hint = modules if modules is not None and all(new is old for new, old in renamed.items()) else {}
    by_name: dict[str, dict[str, str]] = {}
    for new, original in renamed.items():
        module = hint.get(new)
        if module is not None and new[len(module):] in _SUFFIXES:
            splits = [(module, new[len(module):])]
        else:
            splits = _splits(new)
        for x, suffix in splits:
            if x in key_map:
                by_name.setdefault(x, {})[suffix] = original
    result: dict[str, str | None] = dict.fromkeys(key_list)
    for x, found in by_name.items():
        loaded, bias = _load_one(set(found))
        target = key_map[x][0]
        bias_target = target[:-len(".weight")] + ".bias"
        for suffix in loaded:
            if suffix in found:
                key = bias_target if suffix in bias else target
                result[found[suffix]] = key if key in layout.shapes else None
    return result
