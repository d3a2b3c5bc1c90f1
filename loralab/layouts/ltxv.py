"""LTX-Video and LTX-2 layouts: ComfyUI key names and shapes from an LTXV config (the ``dit_config``
ComfyUI detects; ``image_model`` ``ltxv`` for LTX-Video, ``ltxav`` for LTX-2's audio-video model).

ComfyUI keeps the module names of Lightricks' own code: ``transformer_blocks.N.attn1.to_q``... LTX-2
adds, inside each of its blocks, an audio stream (``audio_attn1``, ``audio_attn2``, ``audio_ff``) and the
two cross-modal attentions (``audio_to_video_attn`` writes into the video stream, ``video_to_audio_attn``
into the audio one). diffusers' ``LTXVideoTransformer3DModel`` shares the block names and renames two
LTX-Video embedders (``proj_in``, ``time_embed``); those are the only other names. Nothing is fused.
"""
from __future__ import annotations

from .unet import Shapes

#: diffusers' names of LTX-Video's embedders -> ComfyUI's
_DIFFUSERS_EMBEDDERS = {"proj_in": "patchify_proj", "time_embed.emb.timestep_embedder.linear_1":
                        "adaln_single.emb.timestep_embedder.linear_1", "time_embed.emb.timestep_embedder.linear_2":
                        "adaln_single.emb.timestep_embedder.linear_2", "time_embed.linear": "adaln_single.linear"}
#: config switches of newer LTX-2 releases (prompt AdaLN, projection before the connector) with no layout here
UNMODELLED = ("cross_attention_adaln", "caption_proj_before_connector")
#: the learnable registers of LTX-2's text embeddings connectors (video and audio)
_CONNECTOR_REGISTERS = 128


def ltxv_variant(cfg: dict) -> str | None:
    """The arch id of an LTXV config: ``ltx2`` for the audio-video model, ``ltxv_13b`` for LTX-Video 13B (by
    width), ``ltxv`` for LTX-Video 2B, None for a config this layout does not describe (see :data:`UNMODELLED`)."""
    if any(cfg.get(k) for k in UNMODELLED):
        return None
    if cfg.get("image_model") == "ltxav":
        return "ltx2"
    width = int(cfg.get("num_attention_heads", 32)) * int(cfg.get("attention_head_dim", 64))
    return "ltxv_13b" if width >= 4096 else "ltxv"


def ltxv_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict]:
    """Return ``(shapes, diffusers_names, {})`` for an LTX-Video or LTX-2 config (ComfyUI's class
    defaults for what its detection leaves out)."""
    av = cfg.get("image_model") == "ltxav"
    heads = int(cfg.get("num_attention_heads", 32))
    dim = heads * int(cfg.get("attention_head_dim", 128 if av else 64))
    channels = int(cfg.get("in_channels", 128))
    cross = int(cfg.get("cross_attention_dim", 4096 if av else 2048))
    caption = int(cfg.get("caption_channels", 3840 if av else 4096))
    gated = av and bool(cfg.get("apply_gated_attention", False))
    shapes: Shapes = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            shapes[name + ".bias"] = (fan_out,)

    def attention(name: str, query: int, context: int, inner: int, n_heads: int, out: int | None = None,
                  gate: bool = gated) -> None:
        shapes[f"{name}.q_norm.weight"] = (inner,)
        shapes[f"{name}.k_norm.weight"] = (inner,)
        linear(f"{name}.to_q", query, inner)
        linear(f"{name}.to_k", context, inner)
        linear(f"{name}.to_v", context, inner)
        linear(f"{name}.to_out.0", inner, query if out is None else out)
        if gate:
            linear(f"{name}.to_gate_logits", query, n_heads)

    def feed_forward(name: str, width: int, bias: bool = True) -> None:
        linear(f"{name}.net.0.proj", width, 4 * width, bias)
        linear(f"{name}.net.2", 4 * width, width, bias)

    def adaln(name: str, width: int, coefficient: int) -> None:
        linear(f"{name}.emb.timestep_embedder.linear_1", 256, width)
        linear(f"{name}.emb.timestep_embedder.linear_2", width, width)
        linear(f"{name}.linear", width, coefficient * width)

    def caption_projection(name: str, width: int) -> None:
        linear(f"{name}.linear_1", caption, width)
        linear(f"{name}.linear_2", width, width)

    shapes["scale_shift_table"] = (2, dim)
    linear("patchify_proj", channels, dim)
    adaln("adaln_single", dim, 6)
    caption_projection("caption_projection", dim)
    if cfg.get("use_keyframes_abs_pos_embedding"):
        shapes["keyframes_abs_pos_embedding"] = (1, dim)
    if av:
        a_heads = int(cfg.get("audio_num_attention_heads", 32))
        a_dim = a_heads * int(cfg.get("audio_attention_head_dim", 64))
        a_channels = int(cfg.get("audio_in_channels", 128))
        a_cross = int(cfg.get("audio_cross_attention_dim", 2048))
        shapes["audio_scale_shift_table"] = (2, a_dim)
        linear("audio_patchify_proj", a_channels, a_dim)
        adaln("audio_adaln_single", a_dim, 6)
        adaln("av_ca_video_scale_shift_adaln_single", dim, 4)
        adaln("av_ca_a2v_gate_adaln_single", dim, 1)
        adaln("av_ca_audio_scale_shift_adaln_single", a_dim, 4)
        adaln("av_ca_v2a_gate_adaln_single", a_dim, 1)
        caption_projection("audio_caption_projection", a_dim)
        c_heads, c_head_dim = int(cfg.get("connector_num_attention_heads", 30)), int(cfg.get("connector_attention_head_dim", 128))
        connectors = {"video": (c_heads, c_heads * c_head_dim),
                      "audio": (int(cfg.get("audio_connector_num_attention_heads", c_heads)),
                                int(cfg.get("audio_connector_num_attention_heads", c_heads))
                                * int(cfg.get("audio_connector_attention_head_dim", c_head_dim)))}
        for stream, (n_heads, width) in connectors.items():
            p = f"{stream}_embeddings_connector"
            shapes[f"{p}.learnable_registers"] = (_CONNECTOR_REGISTERS, width)
            for i in range(int(cfg.get("connector_num_layers", 2))):
                attention(f"{p}.transformer_1d_blocks.{i}.attn1", width, width, width, n_heads,
                          gate=bool(cfg.get("connector_apply_gated_attention", False)))
                feed_forward(f"{p}.transformer_1d_blocks.{i}.ff", width)
    for i in range(int(cfg.get("num_layers", 48 if av else 28))):
        p = f"transformer_blocks.{i}"
        shapes[f"{p}.scale_shift_table"] = (6, dim)
        attention(f"{p}.attn1", dim, dim, dim, heads)
        attention(f"{p}.attn2", dim, cross, dim, heads)
        feed_forward(f"{p}.ff", dim, bool(cfg.get("ff_bias", True)))
        if av:
            shapes[f"{p}.audio_scale_shift_table"] = (6, a_dim)
            shapes[f"{p}.scale_shift_table_a2v_ca_audio"] = (5, a_dim)
            shapes[f"{p}.scale_shift_table_a2v_ca_video"] = (5, dim)
            attention(f"{p}.audio_attn1", a_dim, a_dim, a_dim, a_heads)
            attention(f"{p}.audio_attn2", a_dim, a_cross, a_dim, a_heads)
            attention(f"{p}.audio_to_video_attn", dim, a_dim, a_dim, a_heads, out=dim)
            attention(f"{p}.video_to_audio_attn", a_dim, dim, a_dim, a_heads)
            feed_forward(f"{p}.audio_ff", a_dim, bool(cfg.get("audio_ff_bias", True)))
    linear("proj_out", dim, channels)
    if av:
        linear("audio_proj_out", a_dim, a_channels)
    return shapes, ({} if av else dict(_DIFFUSERS_EMBEDDERS)), {}


#: LTX-Video 2B (0.9.x) as ComfyUI's detection reads it from the weights
LTXV_CONFIG: dict = {"image_model": "ltxv", "num_layers": 28, "attention_head_dim": 64, "cross_attention_dim": 2048}
#: LTX-Video 13B (0.9.7, 0.9.8) as ComfyUI's detection reads it from the weights
LTXV_13B_CONFIG: dict = {"image_model": "ltxv", "num_layers": 48, "attention_head_dim": 128, "cross_attention_dim": 4096}
#: LTX-2 19B as ComfyUI's detection reads it from the weights
LTX2_CONFIG: dict = {"image_model": "ltxav", "num_layers": 48, "attention_head_dim": 128, "cross_attention_dim": 4096}
