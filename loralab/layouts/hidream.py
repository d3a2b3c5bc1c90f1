"""HiDream-I1 layouts: ComfyUI key names and shapes from a HiDream config (the ``dit_config`` ComfyUI
detects). ComfyUI, HiDream's own code and diffusers (``HiDreamImageTransformer2DModel``) share every
module name, so the layout has no other names and nothing fused. Each block's image feed-forward
is a mixture of experts: a shared expert, ``num_routed_experts`` routed experts and their gate.
"""
from __future__ import annotations

from .unet import Shapes


def swiglu_width(hidden: int, multiple_of: int = 256) -> int:
    """The hidden width of HiDream's SwiGLU feed-forward asked for ``hidden`` (two thirds, rounded up)."""
    hidden = int(2 * hidden / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def hidream_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict]:
    """Return ``(shapes, {}, {})`` for a HiDream config (names shared with diffusers; nothing fused)."""
    dim = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    patch = int(cfg.get("patch_size", 2))
    channels = int(cfg.get("in_channels", 16))
    double, single = int(cfg["num_layers"]), int(cfg["num_single_layers"])
    experts = int(cfg.get("num_routed_experts", 4))
    t5, llama = (int(c) for c in cfg.get("caption_channels", (4096, 4096)))  # one projection per block, then T5's
    shapes: Shapes = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            shapes[name + ".bias"] = (fan_out,)

    def swiglu(name: str, hidden: int) -> None:
        width = swiglu_width(hidden)
        linear(f"{name}.w1", dim, width, bias=False)
        linear(f"{name}.w2", width, dim, bias=False)
        linear(f"{name}.w3", dim, width, bias=False)

    def image_ff(name: str) -> None:
        if experts <= 0:
            swiglu(name, 4 * dim)
            return
        swiglu(f"{name}.shared_experts", 2 * dim)
        for e in range(experts):
            swiglu(f"{name}.experts.{e}", 4 * dim)
        shapes[f"{name}.gate.weight"] = (experts, dim)

    def attention(name: str, suffixes: tuple[str, ...]) -> None:
        for s in suffixes:
            for part in ("to_q", "to_k", "to_v", "to_out"):
                linear(f"{name}.{part}{s}", dim, dim)
            shapes[f"{name}.q_rms_norm{s}.weight"] = (dim,)
            shapes[f"{name}.k_rms_norm{s}.weight"] = (dim,)

    linear("t_embedder.timestep_embedder.linear_1", 256, dim)
    linear("t_embedder.timestep_embedder.linear_2", dim, dim)
    linear("p_embedder.pooled_embedder.linear_1", int(cfg.get("text_emb_dim", 2048)), dim)
    linear("p_embedder.pooled_embedder.linear_2", dim, dim)
    linear("x_embedder.proj", channels * patch * patch, dim)
    for i in range(double):
        p = f"double_stream_blocks.{i}.block"
        linear(f"{p}.adaLN_modulation.1", dim, 12 * dim)
        attention(f"{p}.attn1", ("", "_t"))
        image_ff(f"{p}.ff_i")
        swiglu(f"{p}.ff_t", 4 * dim)
    for i in range(single):
        p = f"single_stream_blocks.{i}.block"
        linear(f"{p}.adaLN_modulation.1", dim, 6 * dim)
        attention(f"{p}.attn1", ("",))
        image_ff(f"{p}.ff_i")
    linear("final_layer.linear", dim, patch * patch * int(cfg.get("out_channels", channels)))
    linear("final_layer.adaLN_modulation.1", dim, 2 * dim)
    for n in range(double + single):
        linear(f"caption_projection.{n}.linear", llama, dim, bias=False)
    linear(f"caption_projection.{double + single}.linear", t5, dim, bias=False)
    return shapes, {}, {}


#: HiDream-I1 (full, dev and fast share it) as ComfyUI's detection reads it from the weights
HIDREAM_CONFIG: dict = {
    "image_model": "hidream", "attention_head_dim": 128, "axes_dims_rope": [64, 32, 32], "caption_channels": [4096, 4096],
    "max_resolution": [128, 128], "in_channels": 16, "llama_layers": [*range(32), *[31] * 16], "num_attention_heads": 20,
    "num_routed_experts": 4, "num_activated_experts": 2, "num_layers": 16, "num_single_layers": 32, "out_channels": 16,
    "patch_size": 2, "text_emb_dim": 2048,
}
