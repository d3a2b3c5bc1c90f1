"""Lumina 2 (NextDiT) layouts: ComfyUI key names and shapes from a Lumina 2 config (the
``dit_config`` ComfyUI detects; ComfyUI keeps the original Lumina-Image-2.0 names), the diffusers
names (``Lumina2Transformer2DModel``) with the q/k/v slices of the fused ``qkv`` weight, and the
Z-Image diffusers names ComfyUI 0.33 maps for every Lumina2-class model (:func:`z_image_names`).
"""
from __future__ import annotations

from .flux import FusedSlice
from .unet import Shapes

#: the refiner depth ComfyUI's NextDiT uses unless a config says otherwise
REFINER_LAYERS = 2


def _dims(cfg: dict) -> tuple[int, int, int, int, int]:
    """(dim, head_dim, q rows, k/v rows each, feed-forward width) of a Lumina 2 config."""
    dim = int(cfg["dim"])
    heads = int(cfg["n_heads"])
    head_dim = dim // heads
    kv = int(cfg.get("n_kv_heads") or heads) * head_dim
    multiple = int(cfg.get("multiple_of", 256))
    hidden = 4 * dim
    if cfg.get("ffn_dim_multiplier") is not None:
        hidden = int(float(cfg["ffn_dim_multiplier"]) * hidden)
    ffn = multiple * ((hidden + multiple - 1) // multiple)
    return dim, head_dim, heads * head_dim, kv, ffn


def _blocks(cfg: dict) -> list[tuple[str, str, bool]]:
    """(ComfyUI prefix, diffusers prefix, has adaLN modulation) of every transformer block."""
    refiners = int(cfg.get("n_refiner_layers", REFINER_LAYERS))
    return ([(f"noise_refiner.{i}", f"noise_refiner.{i}", True) for i in range(refiners)]
            + [(f"context_refiner.{i}", f"context_refiner.{i}", False) for i in range(refiners)]
            + [(f"layers.{i}", f"layers.{i}", True) for i in range(int(cfg["n_layers"]))])


def lumina2_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict[str, FusedSlice]]:
    """Return ``(shapes, other_names, fused)`` for a Lumina 2 config; ``norm_final: False`` leaves out
    the unused final norm, which ComfyUI's NextDiT builds up to 0.3.x and not since 0.33.

    ``other_names`` maps diffusers (and the right Z-Image) module names to the ComfyUI module;
    ``fused`` maps diffusers modules to ``(comfy_module, row_start, row_count, swap_halves)``.
    """
    dim, head_dim, q, kv, ffn = _dims(cfg)
    t_dim = min(dim, 1024)
    patch = int(cfg.get("patch_size", 2))
    channels = int(cfg.get("in_channels", 16))
    cap = int(cfg.get("cap_feat_dim", dim))
    shapes: Shapes = {}
    names: dict[str, str] = {}
    fused: dict[str, FusedSlice] = {}

    def linear(name: str, fan_in: int, fan_out: int, *aliases: str, bias: bool = True) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            shapes[name + ".bias"] = (fan_out,)
        for alias in aliases:
            names[alias] = name

    def norm(name: str, width: int, *aliases: str) -> None:
        shapes[name + ".weight"] = (width,)
        for alias in aliases:
            names[alias] = name

    linear("x_embedder", patch * patch * channels, dim, "all_x_embedder.2-1")
    linear("t_embedder.mlp.0", 256, t_dim, "time_caption_embed.timestep_embedder.linear_1")
    linear("t_embedder.mlp.2", t_dim, t_dim, "time_caption_embed.timestep_embedder.linear_2")
    norm("cap_embedder.0", cap, "time_caption_embed.caption_embedder.0")
    linear("cap_embedder.1", cap, dim, "time_caption_embed.caption_embedder.1")
    for p, d, modulated in _blocks(cfg):
        a = f"{p}.attention"
        linear(f"{a}.qkv", dim, q + 2 * kv, bias=False)
        fused[f"{d}.attn.to_q"] = (f"{a}.qkv", 0, q, False)
        fused[f"{d}.attn.to_k"] = (f"{a}.qkv", q, kv, False)
        fused[f"{d}.attn.to_v"] = (f"{a}.qkv", q + kv, kv, False)
        fused[f"{d}.attention.to_q"] = (f"{a}.qkv", 0, q, False)  # Z-Image's name, right for q only
        linear(f"{a}.out", q, dim, f"{d}.attn.to_out.0", f"{d}.attention.to_out.0", bias=False)
        norm(f"{a}.q_norm", head_dim, f"{d}.attn.norm_q", f"{d}.attention.norm_q")
        norm(f"{a}.k_norm", head_dim, f"{d}.attn.norm_k", f"{d}.attention.norm_k")
        linear(f"{p}.feed_forward.w1", dim, ffn, f"{d}.feed_forward.linear_1", bias=False)
        linear(f"{p}.feed_forward.w2", ffn, dim, f"{d}.feed_forward.linear_2", bias=False)
        linear(f"{p}.feed_forward.w3", dim, ffn, f"{d}.feed_forward.linear_3", bias=False)
        norm(f"{p}.attention_norm1", dim, f"{d}.norm1.norm" if modulated else f"{d}.norm1")
        norm(f"{p}.ffn_norm1", dim)
        norm(f"{p}.attention_norm2", dim, f"{d}.norm2")
        norm(f"{p}.ffn_norm2", dim)
        if modulated:
            linear(f"{p}.adaLN_modulation.1", t_dim, 4 * dim, f"{d}.norm1.linear")
    if cfg.get("norm_final", True):
        norm("norm_final", dim)
    linear("final_layer.linear", dim, patch * patch * channels, "norm_out.linear_2", "all_final_layer.2-1.linear")
    linear("final_layer.adaLN_modulation.1", t_dim, dim, "norm_out.linear_1",
           "all_final_layer.2-1.adaLN_modulation.1")
    return shapes, names, fused


def z_image_names(cfg: dict) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """The Z-Image diffusers module names ComfyUI 0.33 maps on a Lumina2-class model, each with the
    ComfyUI module and row slice it gives them (``comfy.utils.z_image_to_diffusers``, which slices
    ``to_k``/``to_v`` as if there were as many key/value heads as query heads: past the end of
    Lumina 2's ``qkv``, so ComfyUI maps them to rows that do not exist)."""
    dim = int(cfg["dim"])
    out: dict[str, tuple[str, tuple[int, int] | None]] = {}
    for p, _, _ in _blocks(cfg):
        a = f"{p}.attention"
        for n, part in enumerate(("to_q", "to_k", "to_v")):
            out[f"{a}.{part}"] = (f"{a}.qkv", (n * dim, dim))
        for zn, mod in (("attention.norm_q", "attention.q_norm"), ("attention.norm_k", "attention.k_norm"),
                        ("attention.to_out.0", "attention.out"), ("attention_norm1", "attention_norm1"),
                        ("attention_norm2", "attention_norm2"), ("feed_forward.w1", "feed_forward.w1"),
                        ("feed_forward.w2", "feed_forward.w2"), ("feed_forward.w3", "feed_forward.w3"),
                        ("ffn_norm1", "ffn_norm1"), ("ffn_norm2", "ffn_norm2"),
                        ("adaLN_modulation.0", "adaLN_modulation.0")):
            out[f"{p}.{zn}"] = (f"{p}.{mod}", None)
    for zn, mod in (("all_final_layer.2-1.linear", "final_layer.linear"),
                    ("all_final_layer.2-1.adaLN_modulation.1", "final_layer.adaLN_modulation.1"),
                    ("all_x_embedder.2-1", "x_embedder"), ("cap_embedder.0", "cap_embedder.0"),
                    ("cap_embedder.1", "cap_embedder.1"), ("t_embedder.mlp.0", "t_embedder.mlp.0"),
                    ("t_embedder.mlp.2", "t_embedder.mlp.2")):
        out[zn] = (mod, None)
    return out


#: Lumina-Image 2.0 as ComfyUI's detection reads it from the weights
LUMINA2_CONFIG: dict = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 2304, "cap_feat_dim": 2304, "n_layers": 26,
    "n_heads": 24, "n_kv_heads": 8, "qk_norm": True, "axes_dims": [32, 32, 32], "axes_lens": [300, 512, 512],
}
