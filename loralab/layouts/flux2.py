"""Flux.2 layouts (dev, Klein 4B and 9B): ComfyUI (BFL) key names and shapes from a Flux.2 config
(``image_model: flux2``, as ComfyUI's model detection reads it), the diffusers name of every module
(``Flux2Transformer2DModel``), and the diffusers modules that are slices of a fused BFL weight.

Flux.2 keeps Flux.1's BFL names but has no biases, a gated (SwiGLU) MLP whose first layer is twice
as wide, and three modulation layers shared by all blocks in place of each block's own."""
from __future__ import annotations

from .flux import NORM_PARAMS, FusedSlice
from .unet import Shapes


def flux2_layout(cfg: dict, norm_param: str = "scale") -> tuple[Shapes, dict[str, str], dict[str, FusedSlice]]:
    """Return ``(shapes, diffusers_names, fused)`` for a Flux.2 config, with the q/k norm weights
    named ``<norm>.<norm_param>`` (one of :data:`~.flux.NORM_PARAMS`).

    ``diffusers_names`` holds the diffusers Flux.2 names and the Flux.1 diffusers names ComfyUI also
    maps onto Flux.2 modules (``ff.net.0.proj``, ``time_text_embed``, single blocks' ``proj_out``,
    ``attn.to_q``.. and ``proj_mlp`` rows of ``linear1``, ComfyUI's own ``linear1_qkv``), so that every
    name ComfyUI loads lands where it does."""
    if norm_param not in NORM_PARAMS:
        raise ValueError(f"Flux norm parameter {norm_param!r} is not one of {NORM_PARAMS}")
    h = int(cfg["hidden_size"])
    mlp = int(h * float(cfg.get("mlp_ratio", 3.0)))
    head_dim = h // int(cfg["num_heads"])
    patch = int(cfg.get("patch_size", 1))
    shapes: Shapes = {}
    names: dict[str, str] = {}
    fused: dict[str, FusedSlice] = {}

    def linear(name: str, fan_in: int, fan_out: int, *diffusers: str) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        for dn in diffusers:
            names[dn] = name

    def qk_norm(name: str, diffusers_q: str, diffusers_k: str) -> None:
        shapes[f"{name}.query_norm.{norm_param}"] = (head_dim,)
        shapes[f"{name}.key_norm.{norm_param}"] = (head_dim,)
        names[diffusers_q] = name + ".query_norm"
        names[diffusers_k] = name + ".key_norm"

    linear("img_in", int(cfg["in_channels"]) * patch * patch, h, "x_embedder")
    linear("time_in.in_layer", 256, h, "time_guidance_embed.timestep_embedder.linear_1",
           "time_text_embed.timestep_embedder.linear_1")
    linear("time_in.out_layer", h, h, "time_guidance_embed.timestep_embedder.linear_2",
           "time_text_embed.timestep_embedder.linear_2")
    if cfg.get("guidance_embed"):
        linear("guidance_in.in_layer", 256, h, "time_guidance_embed.guidance_embedder.linear_1",
               "time_text_embed.guidance_embedder.linear_1")
        linear("guidance_in.out_layer", h, h, "time_guidance_embed.guidance_embedder.linear_2",
               "time_text_embed.guidance_embedder.linear_2")
    linear("txt_in", int(cfg["context_in_dim"]), h, "context_embedder")

    for i in range(int(cfg["depth"])):
        p, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for stream, dff, qkv_names, dproj, dqn in (
            ("img", "ff", ("to_q", "to_k", "to_v"), "attn.to_out.0", ("norm_q", "norm_k")),
            ("txt", "ff_context", ("add_q_proj", "add_k_proj", "add_v_proj"), "attn.to_add_out",
             ("norm_added_q", "norm_added_k")),
        ):
            linear(f"{p}.{stream}_attn.qkv", h, 3 * h)
            for n, part in enumerate(qkv_names):
                fused[f"{d}.attn.{part}"] = (f"{p}.{stream}_attn.qkv", n * h, h, False)
            qk_norm(f"{p}.{stream}_attn.norm", f"{d}.attn.{dqn[0]}", f"{d}.attn.{dqn[1]}")
            linear(f"{p}.{stream}_attn.proj", h, h, f"{d}.{dproj}")
            linear(f"{p}.{stream}_mlp.0", h, 2 * mlp, f"{d}.{dff}.linear_in", f"{d}.{dff}.net.0.proj")
            linear(f"{p}.{stream}_mlp.2", mlp, h, f"{d}.{dff}.linear_out", f"{d}.{dff}.net.2")

    for i in range(int(cfg["depth_single_blocks"])):
        p, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        linear(f"{p}.linear1", h, 3 * h + 2 * mlp, f"{d}.attn.to_qkv_mlp_proj")
        for n, part in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
            fused[f"{d}.{part}"] = (f"{p}.linear1", n * h, h, False)
        fused[f"{d}.proj_mlp"] = (f"{p}.linear1", 3 * h, 4 * h, False)  # ComfyUI's Flux.1 rows, kept as it maps them
        fused[f"{p}.linear1_qkv"] = (f"{p}.linear1", 0, 3 * h, False)  # ComfyUI's name of the q/k/v rows
        linear(f"{p}.linear2", h + mlp, h, f"{d}.attn.to_out", f"{d}.proj_out")
        qk_norm(f"{p}.norm", f"{d}.attn.norm_q", f"{d}.attn.norm_k")

    linear("final_layer.linear", h, patch * patch * int(cfg.get("out_channels", cfg["in_channels"])), "proj_out")
    linear("final_layer.adaLN_modulation.1", h, 2 * h)
    fused["norm_out.linear"] = ("final_layer.adaLN_modulation.1", 0, 2 * h, True)
    linear("double_stream_modulation_img.lin", h, 6 * h, "double_stream_modulation_img.linear")
    linear("double_stream_modulation_txt.lin", h, 6 * h, "double_stream_modulation_txt.linear")
    linear("single_stream_modulation.lin", h, 3 * h, "single_stream_modulation.linear")
    return shapes, names, fused


def is_flux2(cfg: dict) -> bool:
    """Whether a Flux-family config is a Flux.2 one (ComfyUI's ``image_model: flux2``)."""
    return cfg.get("image_model") == "flux2"


def flux2_variant(cfg: dict) -> str:
    """The LoRA Lab arch id of a Flux.2 config, by width: dev (6144), Klein 9B (4096), Klein 4B."""
    width = int(cfg.get("hidden_size", 0))
    return "flux2_dev" if width >= 6144 else "flux2_klein_9b" if width >= 4096 else "flux2_klein_4b"


def _config(hidden: int, depth: int, single: int, context: int, guidance: bool) -> dict:
    return {"image_model": "flux2", "axes_dim": [32, 32, 32, 32], "num_heads": hidden // 128, "mlp_ratio": 3.0,
            "theta": 2000, "out_channels": 128, "global_modulation": True, "mlp_silu_act": True, "qkv_bias": False,
            "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3],
            "patch_size": 1, "in_channels": 128, "hidden_size": hidden, "context_in_dim": context, "vec_in_dim": None,
            "depth": depth, "depth_single_blocks": single, "guidance_embed": guidance, "yak_mlp": False,
            "txt_norm": False}


#: the released models' configs, as ComfyUI's model detection reads them from the weights (text
#: width: Mistral Small 3.1 for dev, Qwen3 4B / 8B for Klein, three hidden layers each)
FLUX2_DEV_CONFIG: dict = _config(6144, 8, 48, 15360, True)
FLUX2_KLEIN_4B_CONFIG: dict = _config(3072, 5, 20, 7680, False)
FLUX2_KLEIN_9B_CONFIG: dict = _config(4096, 8, 24, 12288, False)
