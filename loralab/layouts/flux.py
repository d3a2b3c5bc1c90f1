"""Flux and Chroma layouts: ComfyUI (BFL) key names and shapes from a Flux or Chroma config,
diffusers names of every BFL module, and the diffusers modules that are slices of a fused BFL weight.

Chroma is Flux.1 schnell's blocks without their modulation layers (``img_mod``, ``txt_mod``,
``modulation``, the final ``adaLN_modulation``) and without ``time_in``/``vector_in``/``guidance_in``:
one ``distilled_guidance_layer`` computes every block's modulation.
"""
from __future__ import annotations

from .unet import Shapes

#: The parameter name of Flux's q/k RMSNorm weights: ``scale`` in BFL's files and ComfyUI up to
#: 0.3.x, ``weight`` where ComfyUI builds them as ``torch.nn.RMSNorm`` (0.33 and later).
NORM_PARAMS = ("scale", "weight")

#: A diffusers module that writes rows [start, start + length) of a fused BFL weight, or that
#: needs the two halves of its output rows swapped (``norm_out``: diffusers orders scale, shift).
FusedSlice = tuple[str, int, int, bool]


def flux_layout(cfg: dict, norm_param: str = "scale") -> tuple[Shapes, dict[str, str], dict[str, FusedSlice]]:
    """Return ``(shapes, diffusers_names, fused)`` for a Flux or Chroma config (:func:`is_chroma`),
    with the q/k norm weights (and Chroma's approximator norms) named ``<norm>.<norm_param>`` (one
    of :data:`NORM_PARAMS`).

    ``shapes`` maps every ComfyUI diffusion-model key (without ``diffusion_model.``) to its shape;
    ``diffusers_names`` maps diffusers modules to the BFL module they are; ``fused`` maps
    diffusers modules to ``(bfl_module, row_start, row_count, swap_halves)``.
    """
    if norm_param not in NORM_PARAMS:
        raise ValueError(f"Flux norm parameter {norm_param!r} is not one of {NORM_PARAMS}")
    h = int(cfg["hidden_size"])
    mlp = int(h * float(cfg.get("mlp_ratio", 4.0)))
    head_dim = h // int(cfg["num_heads"])
    patch = int(cfg.get("patch_size", 2))
    qkv_bias = bool(cfg.get("qkv_bias", True))
    chroma = is_chroma(cfg)
    shapes: Shapes = {}
    names: dict[str, str] = {}
    fused: dict[str, FusedSlice] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True, diffusers: str | None = None) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            shapes[name + ".bias"] = (fan_out,)
        if diffusers:
            names[diffusers] = name

    def mlp_embedder(name: str, fan_in: int, diffusers: str) -> None:
        linear(name + ".in_layer", fan_in, h, diffusers=diffusers + ".linear_1")
        linear(name + ".out_layer", h, h, diffusers=diffusers + ".linear_2")

    def qk_norm(name: str, diffusers_q: str, diffusers_k: str) -> None:
        shapes[f"{name}.query_norm.{norm_param}"] = (head_dim,)
        shapes[f"{name}.key_norm.{norm_param}"] = (head_dim,)
        names[diffusers_q] = name + ".query_norm"
        names[diffusers_k] = name + ".key_norm"

    if chroma:
        linear("img_in", int(cfg["in_channels"]), h, diffusers="x_embedder")
        g, hidden = "distilled_guidance_layer", int(cfg["hidden_dim"])
        linear(f"{g}.in_proj", int(cfg["in_dim"]), hidden)
        for n in range(int(cfg["n_layers"])):
            linear(f"{g}.layers.{n}.in_layer", hidden, hidden)
            linear(f"{g}.layers.{n}.out_layer", hidden, hidden)
            shapes[f"{g}.norms.{n}.{norm_param}"] = (hidden,)
        linear(f"{g}.out_proj", hidden, int(cfg["out_dim"]))
    else:
        linear("img_in", int(cfg["in_channels"]) * patch * patch, h, diffusers="x_embedder")
        mlp_embedder("time_in", 256, "time_text_embed.timestep_embedder")
        mlp_embedder("vector_in", int(cfg["vec_in_dim"]), "time_text_embed.text_embedder")
        if cfg.get("guidance_embed"):
            mlp_embedder("guidance_in", 256, "time_text_embed.guidance_embedder")
    linear("txt_in", int(cfg["context_in_dim"]), h, diffusers="context_embedder")

    for i in range(int(cfg["depth"])):
        p, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for stream, dattn, dff, dnorm, qkv_names, dproj, dqn in (
            ("img", "attn", "ff", "norm1", ("to_q", "to_k", "to_v"), "attn.to_out.0", ("norm_q", "norm_k")),
            ("txt", "attn", "ff_context", "norm1_context", ("add_q_proj", "add_k_proj", "add_v_proj"),
             "attn.to_add_out", ("norm_added_q", "norm_added_k")),
        ):
            if not chroma:
                linear(f"{p}.{stream}_mod.lin", h, 6 * h, diffusers=f"{d}.{dnorm}.linear")
            linear(f"{p}.{stream}_attn.qkv", h, 3 * h, bias=qkv_bias)
            for n, part in enumerate(qkv_names):
                fused[f"{d}.{dattn}.{part}"] = (f"{p}.{stream}_attn.qkv", n * h, h, False)
            qk_norm(f"{p}.{stream}_attn.norm", f"{d}.attn.{dqn[0]}", f"{d}.attn.{dqn[1]}")
            linear(f"{p}.{stream}_attn.proj", h, h, diffusers=f"{d}.{dproj}")
            linear(f"{p}.{stream}_mlp.0", h, mlp, diffusers=f"{d}.{dff}.net.0.proj")
            linear(f"{p}.{stream}_mlp.2", mlp, h, diffusers=f"{d}.{dff}.net.2")

    for i in range(int(cfg["depth_single_blocks"])):
        p, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        linear(f"{p}.linear1", h, 3 * h + mlp)
        for n, part in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
            fused[f"{d}.{part}"] = (f"{p}.linear1", n * h, h, False)
        fused[f"{d}.proj_mlp"] = (f"{p}.linear1", 3 * h, mlp, False)
        linear(f"{p}.linear2", h + mlp, h, diffusers=f"{d}.proj_out")
        qk_norm(f"{p}.norm", f"{d}.attn.norm_q", f"{d}.attn.norm_k")
        if not chroma:
            linear(f"{p}.modulation.lin", h, 3 * h, diffusers=f"{d}.norm.linear")

    out_channels = int(cfg.get("out_channels", cfg["in_channels"]))
    if chroma:  # Chroma's last layer has patch size 1 and no modulation of its own
        linear("final_layer.linear", h, out_channels, diffusers="proj_out")
        return shapes, names, fused
    linear("final_layer.linear", h, patch * patch * out_channels, diffusers="proj_out")
    linear("final_layer.adaLN_modulation.1", h, 2 * h)
    fused["norm_out.linear"] = ("final_layer.adaLN_modulation.1", 0, 2 * h, True)
    return shapes, names, fused


def is_chroma(cfg: dict) -> bool:
    """Whether a Flux-family config is Chroma's (it has the distilled guidance layer's ``n_layers``)."""
    return "n_layers" in cfg


def flux_aliases(cfg: dict) -> dict[str, str]:
    """More diffusers-style names of BFL modules, which ComfyUI maps since 0.33: LyCORIS LoKr's
    ``ff.linear_in``/``ff.linear_out`` (and ``ff_context.*``) for the double blocks' MLPs, and the
    Flux.2 single-block names ``attn.to_qkv_mlp_proj`` (all of ``linear1``) and ``attn.to_out``."""
    out: dict[str, str] = {}
    for i in range(int(cfg["depth"])):
        p, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for stream, dff in (("img", "ff"), ("txt", "ff_context")):
            out[f"{d}.{dff}.linear_in"] = f"{p}.{stream}_mlp.0"
            out[f"{d}.{dff}.linear_out"] = f"{p}.{stream}_mlp.2"
    for i in range(int(cfg["depth_single_blocks"])):
        p, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        out[f"{d}.attn.to_qkv_mlp_proj"] = f"{p}.linear1"
        out[f"{d}.attn.to_out"] = f"{p}.linear2"
    return out


def chroma_aliases(cfg: dict) -> dict[str, str]:
    """The diffusers names of Chroma's distilled guidance layer (``layers.N.linear_1``/``linear_2``),
    which ComfyUI does not map; empty for a Flux config."""
    if not is_chroma(cfg):
        return {}
    g = "distilled_guidance_layer"
    return {f"{g}.layers.{n}.{dn}": f"{g}.layers.{n}.{m}"
            for n in range(int(cfg["n_layers"])) for dn, m in (("linear_1", "in_layer"), ("linear_2", "out_layer"))}


def xlabs_names(cfg: dict) -> dict[str, FusedSlice]:
    """XLabs x-flux LoRA processor names -> BFL module slices."""
    h = int(cfg["hidden_size"])
    out: dict[str, FusedSlice] = {}
    for i in range(int(cfg["depth"])):
        p = f"double_blocks.{i}"
        out[f"{p}.processor.qkv_lora1"] = (f"{p}.img_attn.qkv", 0, 3 * h, False)
        out[f"{p}.processor.qkv_lora2"] = (f"{p}.txt_attn.qkv", 0, 3 * h, False)
        out[f"{p}.processor.proj_lora1"] = (f"{p}.img_attn.proj", 0, h, False)
        out[f"{p}.processor.proj_lora2"] = (f"{p}.txt_attn.proj", 0, h, False)
    for i in range(int(cfg["depth_single_blocks"])):
        p = f"single_blocks.{i}"
        out[f"{p}.processor.qkv_lora"] = (f"{p}.linear1", 0, 3 * h, False)
        out[f"{p}.processor.proj_lora"] = (f"{p}.linear2", 0, h, False)
    return out


FLUX_DEV_CONFIG: dict = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768, "context_in_dim": 4096,
    "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38,
    "qkv_bias": True, "guidance_embed": True,
}
FLUX_SCHNELL_CONFIG: dict = dict(FLUX_DEV_CONFIG, guidance_embed=False)
#: Chroma (HD, v1 to v50: 19 double and 38 single blocks) as ComfyUI's detection reads it
CHROMA_CONFIG: dict = {
    "image_model": "chroma", "in_channels": 64, "out_channels": 64, "patch_size": 2, "context_in_dim": 4096,
    "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38,
    "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True, "in_dim": 64, "out_dim": 3072, "hidden_dim": 5120,
    "n_layers": 5,
}
