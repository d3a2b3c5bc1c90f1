"""Which of a LoRA file's keys a ComfyUI host's own LoRA loader would load, emulated per host
version from the rules of ``comfy.lora.model_lora_keys_unet``/``model_lora_keys_clip``,
``comfy.lora_convert.convert_lora`` and ``comfy.lora.load_lora`` (no ComfyUI import).

The host's key map names each model weight in a fixed set of spellings (LDM and diffusers names
with ``lora_unet_``/``lycoris_``/``unet.``/``transformer.``/``lora_transformer_`` prefixes, the
attention-processor form ``attn1.processor.to_q``, kohya text-encoder names, ``text_encoders.``);
a key is loaded when it is ``<name><suffix>`` for a name in that map and a suffix one of its
adapters reads, and it patches the model when the mapped weight exists. Everything else is
dropped with a "lora key not loaded" warning. Which spellings exist depends on the host version:
:data:`HOSTS` holds one :class:`HostRules` per known version, :func:`host_rules` picks one.
``tests/host`` checks this emulation against the real ``comfy.lora`` of each host it runs on.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..adapters import ALGORITHMS, dora
from ..adapters.base import ALPHA_SUFFIX
from ..layouts import DIFFUSION_PREFIX, ModelLayout
from ..layouts.flux import flux_aliases, flux_layout
from ..layouts.flux2 import is_flux2
from ..layouts.z_image import z_image_layout
from ..layouts.hunyuan_video import comfy_dp_name
from ..layouts.lumina2 import z_image_names
from ..layouts.mmdit import mmdit_layout
from ..layouts.unet import unet_layout


@dataclass(frozen=True)
class HostRules:
    """What one ComfyUI version's LoRA key handling does, where versions differ."""

    version: tuple[int, int, int]
    #: the parameter name of the q/k norm weights of Flux, Chroma and HunyuanVideo in the host's model (``scale`` or ``weight``)
    flux_norm_param: str
    #: Flux: LyCORIS ``ff.linear_in``/``ff.linear_out`` and Flux.2 single-block diffusers names
    flux_aliases: bool
    #: Flux: diffusers names without any prefix (DiffSynth)
    flux_bare_diffusers: bool
    #: ``text_encoders.<key after the wrapper>`` for encoders other than CLIP (T5: ``text_encoders.transformer.*``)
    te_unwrapped: bool
    #: ``lora_te_<...>`` for a model with a single text encoder under ``<te>.transformer.model.``
    single_te_kohya: bool
    #: what ``convert_lora`` turns a BFL control LoRA's ``_norm.scale`` into
    bfl_norm_rename: str
    #: Lumina 2: Z-Image's diffusers names (bare, ``diffusion_model.``, ``transformer.``, ``lycoris_``)
    lumina2_z_image: bool = False
    #: Lumina 2: the model has its (unused) ``norm_final``
    lumina2_norm_final: bool = True
    #: LTX-Video and LTX-2: ComfyUI's own module names without any prefix (``transformer_blocks.0.attn1.to_q``)
    ltxv_bare_names: bool = False

    @property
    def name(self) -> str:
        """``ComfyUI 0.33.0``."""
        return "ComfyUI " + ".".join(map(str, self.version))


#: the host versions LoRA Lab knows (the oldest supported first, the newest last)
HOSTS: dict[str, HostRules] = {
    "0.3.64": HostRules((0, 3, 64), "scale", False, False, False, False, "_norm.scale.set_weight"),
    "0.33.0": HostRules((0, 33, 0), "weight", True, True, True, True, "_norm.set_weight", lumina2_z_image=True,
                          lumina2_norm_final=False, ltxv_bare_names=True),
}
NEWEST = HOSTS[list(HOSTS)[-1]]


def parse_version(text: str) -> tuple[int, int, int]:
    """``"0.33.0"`` -> (0, 33, 0); ValueError naming the text where it is no version."""
    parts = text.strip().lstrip("v").split("+")[0].split("-")[0].split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a ComfyUI version (like 0.33.0)") from None
    if not 1 <= len(nums) <= 3:
        raise ValueError(f"{text!r} is not a ComfyUI version (like 0.33.0)")
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


def host_rules(version: str | None = None) -> HostRules:
    """The rules of a ComfyUI version: the known version at or just below it (newer unknown
    versions get the newest rules, versions older than every known one the oldest); None means
    the newest known."""
    if version is None:
        return NEWEST
    v = parse_version(version)
    known = [r for r in HOSTS.values() if r.version <= v]
    return known[-1] if known else next(iter(HOSTS.values()))


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

_MAPS: "weakref.WeakKeyDictionary[ModelLayout, dict[HostRules, dict[str, HostTarget]]]" = weakref.WeakKeyDictionary()


def _flux1_naming(config: dict) -> dict:
    """A Flux.1 config of a Flux.2 model's width and depths: ComfyUI names Flux.2 weights by the
    Flux.1 rules (``comfy.utils.flux_to_diffusers``, its MLP rows at 4× the width); the names whose
    weight Flux.2 lacks (``norm1.linear``, biases) patch nothing."""
    return {"in_channels": 1, "vec_in_dim": 1, "context_in_dim": 1, "hidden_size": config["hidden_size"],
            "num_heads": config["num_heads"], "depth": config["depth"],
            "depth_single_blocks": config["depth_single_blocks"], "guidance_embed": True}


def _z_image_names(layout: ModelLayout, out: dict[str, HostTarget]) -> None:
    """ComfyUI's Lumina 2 / Z-Image map (``comfy.utils.z_image_to_diffusers``): the diffusers names of
    the layers and both refiners (q/k/v as thirds of ``qkv``, by the width), embedders and final layer,
    each bare, with ``diffusion_model.`` and ``transformer.``, and underscored after ``lycoris_``."""
    _, names, fused = z_image_layout(layout.config)
    dim = int(layout.config["dim"])
    targets: dict[str, HostTarget] = {}
    for dn, m in names.items():
        if not m.startswith("siglip_") and DIFFUSION_PREFIX + m + ".weight" in layout.shapes:
            targets[dn] = (DIFFUSION_PREFIX + m + ".weight", None)
    for dn, (m, _, _, _) in fused.items():
        if not m.startswith("siglip_"):
            part = ("to_q", "to_k", "to_v").index(dn.rsplit(".", 1)[1])
            targets[dn] = (DIFFUSION_PREFIX + m + ".weight", (part * dim, dim))
    for dn, target in targets.items():
        for alias in (dn, DIFFUSION_PREFIX + dn, "transformer." + dn, "lycoris_" + dn.replace(".", "_")):
            out[alias] = target


#: HunyuanVideo-family archs whose ComfyUI model maps the generic forms only (lora_unet_*, diffusion_model.*)
_GENERIC_ONLY_HUNYUAN = ("hunyuan_image21", "hunyuan_image21_refiner")


def _unet_names(layout: ModelLayout, rules: HostRules, out: dict[str, HostTarget]) -> None:
    for k in layout.shapes:
        if not k.startswith(DIFFUSION_PREFIX):
            continue
        if k.endswith(".weight"):
            out["lora_unet_" + k[len(DIFFUSION_PREFIX):-len(".weight")].replace(".", "_")] = (k, None)
            out[k[:-len(".weight")]] = (k, None)
        else:
            out[k] = (k, None)
    if layout.arch.family in _TRANSFORMER_PREFIXES:
        if layout.arch.family == "flux":
            config = _flux1_naming(layout.config) if is_flux2(layout.config) else layout.config
            shapes, names, fused = flux_layout(config, layout.norm_param)
            if rules.flux_aliases:
                names = {**flux_aliases(config), **names}
            fused = {dn: f for dn, f in fused.items() if DIFFUSION_PREFIX + f[0] + ".weight" in layout.shapes}
            shapes = {k: v for k, v in shapes.items() if DIFFUSION_PREFIX + k in layout.shapes}
        else:
            shapes, names, fused = mmdit_layout(layout.config)
        diffusers: dict[str, HostTarget] = {}
        for dn, m in names.items():
            key = next((m + p for p in (".weight", ".scale") if m + p in shapes), None)
            if key is not None:
                diffusers[dn] = (DIFFUSION_PREFIX + key, None)
        diffusers.update({dn: (DIFFUSION_PREFIX + m + ".weight", (start, length))
                          for dn, (m, start, length, _) in fused.items()})
        prefixes = _TRANSFORMER_PREFIXES[layout.arch.family]
        if layout.arch.family == "flux" and rules.flux_bare_diffusers:
            prefixes = (*prefixes, "")
        for dn, target in diffusers.items():
            for prefix in prefixes:
                out[prefix + (dn if prefix.endswith(".") or not prefix else dn.replace(".", "_"))] = target
        if layout.arch.family == "flux":
            hidden = int(layout.config["hidden_size"])
            for k in layout.shapes:
                if k.endswith(".linear1.weight") and k.startswith(DIFFUSION_PREFIX):
                    out[k.replace(".linear1.weight", ".linear1_qkv")] = (k, (0, 3 * hidden))
        return
    if layout.arch.family == "wan":  # ComfyUI maps Wan's generic forms only (lora_unet_*, diffusion_model.*)
        return
    if layout.arch.family == "ltxv":  # 0.3.64: the generic forms only; 0.33 adds the bare names (no transformer.)
        if rules.ltxv_bare_names:
            for k in layout.shapes:
                if k.startswith(DIFFUSION_PREFIX) and k.endswith(".weight"):
                    out[k[len(DIFFUSION_PREFIX):-len(".weight")]] = (k, None)
        return
    if layout.arch.family == "z_image":
        _z_image_names(layout, out)
        return
    if layout.arch.family == "hidream":  # its own names with transformer. and SimpleTuner's lycoris_
        for k in layout.shapes:
            if k.startswith(DIFFUSION_PREFIX) and k.endswith(".weight"):
                name = k[len(DIFFUSION_PREFIX):-len(".weight")]
                out["transformer." + name] = out["lycoris_" + name.replace(".", "_")] = (k, None)
        return
    if layout.arch.family == "lumina2":  # 0.3.64: the generic forms only; 0.33 adds Z-Image's diffusers names
        if rules.lumina2_z_image:
            for zn, (mod, rows) in z_image_names(layout.config).items():
                target = (DIFFUSION_PREFIX + mod + ".weight", rows)
                if target[0] not in layout.shapes:  # Z-Image's adaLN_modulation.0: no Lumina 2 weight
                    continue
                for alias in (zn, DIFFUSION_PREFIX + zn, "transformer." + zn, "lycoris_" + zn.replace(".", "_")):
                    out[alias] = target
        return
    if layout.arch.id in _GENERIC_ONLY_HUNYUAN:  # ComfyUI's HunyuanImage21 model is no HunyuanVideo model subclass
        return
    if layout.arch.family == "hunyuan_video":  # diffusion-pipe's names, with transformer. and diffusion_model.
        for k in layout.shapes:
            if k.startswith(DIFFUSION_PREFIX) and k.endswith(".weight"):
                name = comfy_dp_name(k[len(DIFFUSION_PREFIX):-len(".weight")])
                out["transformer." + name] = out[DIFFUSION_PREFIX + name] = (k, None)
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


def _clip_names(layout: ModelLayout, rules: HostRules, out: dict[str, HostTarget]) -> None:
    encoders = layout.arch.text_encoders
    keys = [k for k in layout.shapes if not k.startswith(DIFFUSION_PREFIX)]
    for k in keys:
        if k.endswith(".weight"):
            out["text_encoders." + k[:-len(".weight")]] = (k, None)
            wrapper = k.find(".transformer.")
            if rules.te_unwrapped and wrapper > 0 and not k.startswith("clip_"):
                out["text_encoders." + k[wrapper + 1:-len(".weight")]] = (k, None)
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
    top = {k.split(".")[0] for k in keys if k.endswith(".weight")}
    if rules.single_te_kohya and len(top) == 1:
        inner = f"{next(iter(top))}.transformer.model."
        for k in keys:
            if k.endswith(".weight") and k.startswith(inner):
                out["lora_te_" + k[len(inner):-len(".weight")].replace(".", "_")] = (k, None)
    if "clip_g.transformer.text_projection.weight" in layout.shapes:
        out["lora_prior_te_text_projection"] = ("clip_g.transformer.text_projection.weight", None)
        out["lora_te2_text_projection"] = ("clip_g.transformer.text_projection.weight", None)
    if "clip_l.transformer.text_projection.weight" in layout.shapes:
        out["lora_te1_text_projection"] = ("clip_l.transformer.text_projection.weight", None)


def host_key_map(layout: ModelLayout, rules: HostRules = NEWEST) -> dict[str, HostTarget]:
    """The host's LoRA name -> (model key, row slice) map for a model of this layout (its keys
    named as ``rules``' host names them: see :func:`host_layout`)."""
    layout = host_layout(layout, rules)
    per = _MAPS.setdefault(layout, {})
    if rules not in per:
        out: dict[str, HostTarget] = {}
        _unet_names(layout, rules, out)
        _clip_names(layout, rules, out)
        per[rules] = out
    return per[rules]


_HOST_LAYOUTS: "weakref.WeakKeyDictionary[ModelLayout, dict[HostRules, ModelLayout]]" = weakref.WeakKeyDictionary()


def host_layout(layout: ModelLayout, rules: HostRules) -> ModelLayout:
    """``layout`` with the parameter names of the host's own model (q/k norms; Lumina 2's final norm)."""
    layout = layout.with_norm_param(rules.flux_norm_param)
    if layout.arch.family != "lumina2" or layout.config.get("norm_final", True) == rules.lumina2_norm_final:
        return layout
    per = _HOST_LAYOUTS.setdefault(layout, {})
    if rules not in per:
        per[rules] = ModelLayout(layout.arch, dict(layout.config, norm_final=rules.lumina2_norm_final))
    return per[rules]


def _converted(keys: list[str], rules: HostRules) -> dict[str, str]:
    """ComfyUI's ``convert_lora`` renames (BFL control LoRAs, XLabs/USO Flux LoRAs): new -> original."""
    present = set(keys)
    if "img_in.lora_A.weight" in present and "single_blocks.0.norm.key_norm.scale" in present:
        renamed = (k.replace(".lora_B.bias", _DIFF_B).replace("_norm.scale", rules.bfl_norm_rename) for k in keys)
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


def host_targets(keys: Iterable[str], layout: ModelLayout, modules: Mapping[str, str] | None = None,
                 rules: HostRules = NEWEST) -> dict[str, str | None]:
    """For every tensor key of a LoRA file: the model key the host of ``rules`` patches with it
    (named as that host's model names it), or None where the host drops it (not loaded, or
    loaded for a weight the model does not have).

    ``modules`` (tensor key -> module name, as :func:`loralab.formats.keys.group_keys` split it) is an
    optional hint that saves splitting keys whose suffix the host reads too.
    """
    key_list = list(keys)
    renamed = _converted(key_list, rules)
    layout = host_layout(layout, rules)
    key_map = host_key_map(layout, rules)
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
