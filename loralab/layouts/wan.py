"""Wan 2.1 / 2.2 layouts: ComfyUI key names and shapes from a Wan config (the ``dit_config`` ComfyUI
detects), and the diffusers name of every module (``WanTransformer3DModel``, ``WanVACETransformer3DModel``).

Wan's variants are the base model of their size plus modules of their own: VACE (``vace_layers``
VACE blocks and their patch embedding) is generated from its config; the others (camera control
adapter, S2V and HuMo audio modules, Animate's face and motion encoders, SCAIL's and WanDancer's
embedders, ...) are irregular and come as ``extra_params`` in the config: the loaded model's own
parameter names and shapes outside the generated layout."""
from __future__ import annotations

import math

from .unet import Shapes


def wan_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict]:
    """Return ``(shapes, diffusers_names, fused)`` for a Wan config; Wan has no fused weights.
    ``model_type`` "i2v" gives the blocks image cross-attention (any other value: text only);
    ``vace_layers``/``vace_in_dim`` add VACE's modules, ``extra_params`` (key -> shape) a variant's own.

    ``shapes`` maps every ComfyUI diffusion-model key (without ``diffusion_model.``) to its shape;
    ``diffusers_names`` maps diffusers modules (and parameters) to the ComfyUI name they are.
    """
    dim = int(cfg["dim"])
    ffn = int(cfg["ffn_dim"])
    freq = int(cfg.get("freq_dim", 256))
    text = int(cfg.get("text_dim", 4096))
    patch = tuple(int(p) for p in cfg.get("patch_size", (1, 2, 2)))
    i2v = cfg.get("model_type", "t2v") == "i2v"
    qk_norm = bool(cfg.get("qk_norm", True))
    shapes: Shapes = {}
    names: dict[str, str] = {}

    def linear(name: str, fan_in: int, fan_out: int, diffusers: str) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        shapes[name + ".bias"] = (fan_out,)
        names[diffusers] = name

    def norm(name: str, width: int, diffusers: str, bias: bool) -> None:
        shapes[name + ".weight"] = (width,)
        if bias:
            shapes[name + ".bias"] = (width,)
        names[diffusers] = name

    shapes["patch_embedding.weight"] = (dim, int(cfg.get("in_dim", 16)), *patch)
    shapes["patch_embedding.bias"] = (dim,)
    names["patch_embedding"] = "patch_embedding"
    linear("text_embedding.0", text, dim, "condition_embedder.text_embedder.linear_1")
    linear("text_embedding.2", dim, dim, "condition_embedder.text_embedder.linear_2")
    linear("time_embedding.0", freq, dim, "condition_embedder.time_embedder.linear_1")
    linear("time_embedding.2", dim, dim, "condition_embedder.time_embedder.linear_2")
    linear("time_projection.1", dim, 6 * dim, "condition_embedder.time_proj")

    def block(p: str, d: str, image: bool) -> None:
        for attn, dattn in (("self_attn", "attn1"), ("cross_attn", "attn2")):
            for part, dpart in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0")):
                linear(f"{p}.{attn}.{part}", dim, dim, f"{d}.{dattn}.{dpart}")
            if qk_norm:
                norm(f"{p}.{attn}.norm_q", dim, f"{d}.{dattn}.norm_q", bias=False)
                norm(f"{p}.{attn}.norm_k", dim, f"{d}.{dattn}.norm_k", bias=False)
        if image:
            linear(f"{p}.cross_attn.k_img", dim, dim, f"{d}.attn2.add_k_proj")
            linear(f"{p}.cross_attn.v_img", dim, dim, f"{d}.attn2.add_v_proj")
            if qk_norm:
                norm(f"{p}.cross_attn.norm_k_img", dim, f"{d}.attn2.norm_added_k", bias=False)
        if cfg.get("cross_attn_norm", True):  # diffusers orders the norms norm1, norm2 (cross), norm3
            norm(f"{p}.norm3", dim, f"{d}.norm2", bias=True)
        linear(f"{p}.ffn.0", dim, ffn, f"{d}.ffn.net.0.proj")
        linear(f"{p}.ffn.2", ffn, dim, f"{d}.ffn.net.2")
        shapes[f"{p}.modulation"] = (1, 6, dim)
        names[f"{d}.scale_shift_table"] = f"{p}.modulation"

    for i in range(int(cfg["num_layers"])):
        block(f"blocks.{i}", f"blocks.{i}", i2v)
    if cfg.get("vace_layers"):  # VACE blocks have text cross-attention; the first projects the VACE context in
        shapes["vace_patch_embedding.weight"] = (dim, int(cfg["vace_in_dim"]), *patch)
        shapes["vace_patch_embedding.bias"] = (dim,)
        names["vace_patch_embedding"] = "vace_patch_embedding"
        for i in range(int(cfg["vace_layers"])):
            block(f"vace_blocks.{i}", f"vace_blocks.{i}", False)
            if i == 0:
                linear(f"vace_blocks.{i}.before_proj", dim, dim, f"vace_blocks.{i}.proj_in")
            linear(f"vace_blocks.{i}.after_proj", dim, dim, f"vace_blocks.{i}.proj_out")

    linear("head.head", dim, int(cfg.get("out_dim", 16)) * math.prod(patch), "proj_out")
    shapes["head.modulation"] = (1, 2, dim)
    names["scale_shift_table"] = "head.modulation"
    if i2v:
        e = "condition_embedder.image_embedder"
        norm("img_emb.proj.0", 1280, f"{e}.norm1", bias=True)
        linear("img_emb.proj.1", 1280, 1280, f"{e}.ff.net.0.proj")
        linear("img_emb.proj.3", 1280, dim, f"{e}.ff.net.2")
        norm("img_emb.proj.4", dim, f"{e}.norm2", bias=True)
        if cfg.get("flf_pos_embed_token_number"):
            shapes["img_emb.emb_pos"] = (1, int(cfg["flf_pos_embed_token_number"]), 1280)
            names[f"{e}.pos_embed"] = "img_emb.emb_pos"
    for key, shape in cfg.get("extra_params", {}).items():
        shapes.setdefault(key, tuple(int(n) for n in shape))
    return shapes, names, {}


def wan_variant(cfg: dict) -> str:
    """The LoRA Lab arch id of a Wan config: I2V 14B (image cross-attention), 2.2 TI2V 5B (48
    latent channels), T2V 14B (width 5120, also every Wan 2.2 A14B model) or T2V 1.3B."""
    if cfg.get("model_type") == "i2v":
        return "wan21_i2v_14b"
    if int(cfg.get("out_dim", 16)) == 48:
        return "wan22_ti2v_5b"
    return "wan21_t2v_14b" if int(cfg.get("dim", 0)) >= 5120 else "wan21_t2v_1_3b"


def _config(dim: int, ffn: int, layers: int, model_type: str = "t2v", in_dim: int = 16, out_dim: int = 16) -> dict:
    return {"image_model": "wan2.1", "model_type": model_type, "dim": dim, "ffn_dim": ffn, "num_heads": dim // 128,
            "num_layers": layers, "in_dim": in_dim, "out_dim": out_dim, "patch_size": (1, 2, 2), "freq_dim": 256,
            "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}


#: the released models' configs, as ComfyUI's model detection reads them from the weights
WAN21_T2V_1_3B_CONFIG: dict = _config(1536, 8960, 30)
WAN21_T2V_14B_CONFIG: dict = _config(5120, 13824, 40)
WAN21_I2V_14B_CONFIG: dict = _config(5120, 13824, 40, "i2v", in_dim=36)
WAN22_TI2V_5B_CONFIG: dict = _config(3072, 14336, 30, in_dim=48, out_dim=48)
#: Wan 2.1 VACE 14B and 1.3B: the T2V model of their size with 8 and 15 VACE blocks (a 96-channel VACE context)
WAN21_VACE_14B_CONFIG: dict = dict(WAN21_T2V_14B_CONFIG, model_type="vace", vace_layers=8, vace_in_dim=96)
WAN21_VACE_1_3B_CONFIG: dict = dict(WAN21_T2V_1_3B_CONFIG, model_type="vace", vace_layers=15, vace_in_dim=96)
