"""Qwen-Image layout: ComfyUI key names and shapes from a Qwen-Image config. ComfyUI keeps the
diffusers module names of ``QwenImageTransformer2DModel``, so every name is its own diffusers name."""
from __future__ import annotations

from .unet import Shapes


def qwen_image_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict]:
    """Return ``(shapes, diffusers_names, fused)`` for a Qwen-Image config (ComfyUI's defaults for
    what its detection leaves out); the diffusers names are ComfyUI's, and nothing is fused."""
    head_dim = int(cfg.get("attention_head_dim", 128))
    dim = int(cfg.get("num_attention_heads", 24)) * head_dim
    joint = int(cfg.get("joint_attention_dim", 3584))
    patch = int(cfg.get("patch_size", 2))
    out_channels = int(cfg.get("out_channels") or 16)
    shapes: Shapes = {}

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        shapes[name + ".bias"] = (fan_out,)

    linear("time_text_embed.timestep_embedder.linear_1", 256, dim)
    linear("time_text_embed.timestep_embedder.linear_2", dim, dim)
    shapes["txt_norm.weight"] = (joint,)
    linear("img_in", int(cfg.get("in_channels", 64)), dim)
    linear("txt_in", joint, dim)
    for i in range(int(cfg.get("num_layers", 60))):
        p = f"transformer_blocks.{i}"
        for stream in ("img", "txt"):
            linear(f"{p}.{stream}_mod.1", dim, 6 * dim)
            linear(f"{p}.{stream}_mlp.net.0.proj", dim, 4 * dim)
            linear(f"{p}.{stream}_mlp.net.2", 4 * dim, dim)
        for part in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            linear(f"{p}.attn.{part}", dim, dim)
        for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            shapes[f"{p}.attn.{n}.weight"] = (head_dim,)
    linear("norm_out.linear", dim, 2 * dim)
    linear("proj_out", dim, patch * patch * out_channels)
    return shapes, {}, {}


#: Qwen-Image (and Qwen-Image-Edit, same weights' layout) as ComfyUI's detection reads it
QWEN_IMAGE_CONFIG: dict = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60}
