"""Text-encoder layouts as ComfyUI names them inside a CLIP object
(``clip_l.transformer.text_model...``, ``t5xxl.transformer.encoder...``)."""
from __future__ import annotations

from .unet import Shapes

#: ComfyUI text-encoder name -> (width, MLP width, layers, has text_projection)
CLIP_SPECS: dict[str, tuple[int, int, int]] = {
    "clip_l": (768, 3072, 12),
    "clip_g": (1280, 5120, 32),
    "clip_h": (1024, 4096, 24),
}
T5XXL_SPEC = (4096, 10240, 24, 64)  # d_model, d_ff, blocks, heads (head dim 64)


def clip_layout(name: str) -> Shapes:
    """Keys and shapes of a CLIP text encoder (HF layout) under ComfyUI's ``<name>.transformer.`` prefix."""
    d, ff, layers = CLIP_SPECS[name]
    p = f"{name}.transformer.text_model"
    s: Shapes = {
        f"{p}.embeddings.position_embedding.weight": (77, d),
        f"{p}.embeddings.token_embedding.weight": (49408, d),
        f"{p}.final_layer_norm.weight": (d,),
        f"{p}.final_layer_norm.bias": (d,),
        f"{name}.transformer.text_projection.weight": (d, d),
    }
    for i in range(layers):
        lp = f"{p}.encoder.layers.{i}"
        for n in ("layer_norm1", "layer_norm2"):
            s[f"{lp}.{n}.weight"] = (d,)
            s[f"{lp}.{n}.bias"] = (d,)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{lp}.self_attn.{n}.weight"] = (d, d)
            s[f"{lp}.self_attn.{n}.bias"] = (d,)
        s[f"{lp}.mlp.fc1.weight"] = (ff, d)
        s[f"{lp}.mlp.fc1.bias"] = (ff,)
        s[f"{lp}.mlp.fc2.weight"] = (d, ff)
        s[f"{lp}.mlp.fc2.bias"] = (d,)
    return s


def t5xxl_layout(name: str = "t5xxl") -> Shapes:
    """Keys and shapes of the T5-XXL encoder under ComfyUI's ``t5xxl.transformer.`` prefix."""
    d, ff, blocks, heads = T5XXL_SPEC
    inner = heads * 64
    p = f"{name}.transformer"
    s: Shapes = {f"{p}.shared.weight": (32128, d), f"{p}.encoder.final_layer_norm.weight": (d,)}
    for i in range(blocks):
        bp = f"{p}.encoder.block.{i}.layer"
        for n in ("q", "k", "v"):
            s[f"{bp}.0.SelfAttention.{n}.weight"] = (inner, d)
        s[f"{bp}.0.SelfAttention.o.weight"] = (d, inner)
        if i == 0:
            s[f"{bp}.0.SelfAttention.relative_attention_bias.weight"] = (32, heads)
        s[f"{bp}.0.layer_norm.weight"] = (d,)
        s[f"{bp}.1.DenseReluDense.wi_0.weight"] = (ff, d)
        s[f"{bp}.1.DenseReluDense.wi_1.weight"] = (ff, d)
        s[f"{bp}.1.DenseReluDense.wo.weight"] = (d, ff)
        s[f"{bp}.1.layer_norm.weight"] = (d,)
    return s


def text_encoder_layout(name: str) -> Shapes:
    """Keys and shapes of one of ComfyUI's text encoders by its name (``clip_l``, ``t5xxl``...)."""
    return t5xxl_layout(name) if name == "t5xxl" else clip_layout(name)
