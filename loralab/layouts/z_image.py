"""Z-Image layout: ComfyUI key names and shapes from a Z-Image config (Lumina 2's NextDiT with
Z-Image's modulation, as ComfyUI's model detection reads it: ``image_model: lumina2``, ``dim: 3840``),
the diffusers name of every module (``ZImageTransformer2DModel``), and the diffusers q/k/v modules
that are row slices of the fused ``attention.qkv``."""
from __future__ import annotations

from .flux import FusedSlice
from .unet import Shapes


def z_image_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict[str, FusedSlice]]:
    """Return ``(shapes, diffusers_names, fused)`` for a Z-Image config (ComfyUI's NextDiT defaults
    for what its detection leaves out); ``diffusers_names`` holds every diffusers module name, most of
    them ComfyUI's own."""
    dim = int(cfg["dim"])
    heads = int(cfg["n_heads"])
    kv_heads = int(cfg.get("n_kv_heads") or heads)
    head_dim = dim // heads
    multiple_of = int(cfg.get("multiple_of", 256))
    mult = cfg.get("ffn_dim_multiplier", 4.0)
    hidden = int(mult * dim) if mult is not None else dim
    hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
    patch = int(cfg.get("patch_size", 2))
    channels = int(cfg.get("in_channels", 16))
    t_width = min(dim, 1024)
    mod_width = min(dim, 256)
    shapes: Shapes = {}
    names: dict[str, str] = {}
    fused: dict[str, FusedSlice] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool, diffusers: str | None = None) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            shapes[name + ".bias"] = (fan_out,)
        names[diffusers or name] = name

    def norm(name: str, width: int, diffusers: str | None = None) -> None:
        shapes[name + ".weight"] = (width,)
        names[diffusers or name] = name

    def block(p: str, modulation: bool) -> None:
        a = f"{p}.attention"
        shapes[f"{a}.qkv.weight"] = ((heads + 2 * kv_heads) * head_dim, dim)  # diffusers splits it: to_q, to_k, to_v
        for n, part in enumerate(("to_q", "to_k", "to_v")):
            fused[f"{a}.{part}"] = (f"{a}.qkv", n * heads * head_dim if n < 2 else (heads + kv_heads) * head_dim,
                                    (heads if n == 0 else kv_heads) * head_dim, False)
        linear(f"{a}.out", heads * head_dim, dim, False, f"{a}.to_out.0")
        if cfg.get("qk_norm", True):
            norm(f"{a}.q_norm", head_dim, f"{a}.norm_q")
            norm(f"{a}.k_norm", head_dim, f"{a}.norm_k")
        linear(f"{p}.feed_forward.w1", dim, hidden, False)
        linear(f"{p}.feed_forward.w2", hidden, dim, False)
        linear(f"{p}.feed_forward.w3", dim, hidden, False)
        for n in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
            norm(f"{p}.{n}", dim)
        if modulation:
            linear(f"{p}.adaLN_modulation.0", mod_width, 4 * dim, True)

    if cfg.get("pad_tokens_multiple") is not None:
        shapes["x_pad_token"] = (1, dim)
        shapes["cap_pad_token"] = (1, dim)
    linear("x_embedder", patch * patch * channels, dim, True, "all_x_embedder.2-1")
    for i in range(int(cfg.get("n_refiner_layers", 2))):
        block(f"noise_refiner.{i}", True)
    for i in range(int(cfg.get("n_refiner_layers", 2))):
        block(f"context_refiner.{i}", False)
    linear("t_embedder.mlp.0", 256, t_width, True)
    linear("t_embedder.mlp.2", t_width, 256, True)
    norm("cap_embedder.0", int(cfg["cap_feat_dim"]))
    linear("cap_embedder.1", int(cfg["cap_feat_dim"]), dim, True)
    for i in range(int(cfg["n_layers"])):
        block(f"layers.{i}", True)
    if cfg.get("siglip_feat_dim") is not None:
        norm("siglip_embedder.0", int(cfg["siglip_feat_dim"]))
        linear("siglip_embedder.1", int(cfg["siglip_feat_dim"]), dim, True)
        for i in range(int(cfg.get("n_refiner_layers", 2))):
            block(f"siglip_refiner.{i}", False)
        shapes["siglip_pad_token"] = (1, dim)
    linear("final_layer.linear", dim, patch * patch * channels, True, "all_final_layer.2-1.linear")
    linear("final_layer.adaLN_modulation.1", mod_width, dim, True, "all_final_layer.2-1.adaLN_modulation.1")
    return shapes, names, fused


#: Z-Image (Turbo and base share it) as ComfyUI's detection reads it from the released weights
#: (text width: Qwen3 4B)
Z_IMAGE_CONFIG: dict = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560, "n_layers": 30,
    "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
    "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
}
