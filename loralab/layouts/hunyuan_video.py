"""HunyuanVideo layouts: ComfyUI key names and shapes from a HunyuanVideo config (the ``dit_config``
ComfyUI detects), the original Tencent module names (HunyuanVideo's own code, musubi-tuner and
diffusion-pipe), the names ComfyUI's diffusion-pipe mapping writes, and the diffusers names
(``HunyuanVideoTransformer3DModel``), with the diffusers modules that are slices of a fused weight.

HunyuanImage 2.1 (and its refiner) and HunyuanVideo 1.5 are the same ComfyUI class with more modules,
which their configs switch on: the ByT5 glyph mapper (``byt5``), the mean-flow timestep embedder
(``meanflow``), HunyuanVideo 1.5's SigLIP projection (``vision_in_dim``) and condition-type embedding
(``use_cond_type_embedding``). Their original code splits q, k and v (``img_attn_q``, ``linear1_q``,
``linear1_mlp``, ``linear2.fc``): slices of ComfyUI's fused weights here. diffusers names their blocks as
HunyuanVideo's and the new modules ``context_embedder_2`` (ByT5), ``image_embedder`` and ``cond_type_embed``.
"""
from __future__ import annotations

from .flux import NORM_PARAMS, FusedSlice
from .unet import Shapes

#: the token refiner's depth (fixed in HunyuanVideo's code, not in the config)
REFINER_DEPTH = 2
#: the width of ByT5-small's states that HunyuanImage 2.1 and HunyuanVideo 1.5 map in
BYT5_DIM = 1472


def comfy_dp_name(module: str) -> str:
    """The name ComfyUI's key map gives a ComfyUI HunyuanVideo module for diffusion-pipe LoRAs
    (``img_mod.lin`` -> ``img_mod.linear``, ``img_attn.qkv`` -> ``img_attn_qkv``, ``mlp.0`` -> ``mlp.fc1``...)."""
    key = module + "."
    for a, b in (("_mod.lin.", "_mod.linear."), ("_attn.qkv.", "_attn_qkv."), ("_attn.proj.", "_attn_proj."),
                 ("mlp.0.", "mlp.fc1."), ("mlp.2.", "mlp.fc2."), (".modulation.lin.", ".modulation.linear.")):
        key = key.replace(a, b)
    return key[:-1]


def hunyuan_video_layout(cfg: dict, norm_param: str = "scale") -> tuple[Shapes, dict[str, str], dict[str, FusedSlice]]:
    """Return ``(shapes, other_names, fused)`` for a HunyuanVideo config, q/k norm weights named
    ``<norm>.<norm_param>`` (one of :data:`~loralab.layouts.flux.NORM_PARAMS`).

    ``other_names`` maps original, diffusion-pipe and diffusers module names to the ComfyUI module;
    ``fused`` maps diffusers modules to ``(comfy_module, row_start, row_count, swap_halves)``.
    """
    if norm_param not in NORM_PARAMS:
        raise ValueError(f"norm parameter {norm_param!r} is not one of {NORM_PARAMS}")
    h = int(cfg["hidden_size"])
    mlp = int(h * float(cfg.get("mlp_ratio", 4.0)))
    head_dim = h // int(cfg["num_heads"])
    patch = tuple(int(p) for p in cfg.get("patch_size", (1, 2, 2)))
    context = int(cfg.get("context_in_dim", 4096))
    qkv_bias = bool(cfg.get("qkv_bias", True))
    shapes: Shapes = {}
    names: dict[str, str] = {}
    fused: dict[str, FusedSlice] = {}

    def linear(name: str, fan_in: int, fan_out: int, *aliases: str, bias: bool = True) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            shapes[name + ".bias"] = (fan_out,)
        for alias in (comfy_dp_name(name), *aliases):
            if alias != name:
                names[alias] = name

    def layer_norm(name: str, diffusers: str) -> None:
        shapes[name + ".weight"] = (h,)
        shapes[name + ".bias"] = (h,)
        names[diffusers] = name

    def qk_norm(name: str, original: str, diffusers_q: str, diffusers_k: str) -> None:
        for part, orig, dn in (("query_norm", "q_norm", diffusers_q), ("key_norm", "k_norm", diffusers_k)):
            shapes[f"{name}.{part}.{norm_param}"] = (head_dim,)
            names[original + orig] = names[dn] = f"{name}.{part}"

    def split(name: str, *parts: tuple[str, int]) -> None:
        start = 0
        for dn, rows in parts:
            fused[dn] = (name, start, rows, False)
            start += rows

    def embedder(name: str, fan_in: int, original: tuple[str, str], diffusers: str) -> None:
        linear(f"{name}.in_layer", fan_in, h, f"{name}.{original[0]}", f"{diffusers}.linear_1")
        linear(f"{name}.out_layer", h, h, f"{name}.{original[1]}", f"{diffusers}.linear_2")

    shapes["img_in.proj.weight"] = (h, int(cfg.get("in_channels", 16)), *patch)
    shapes["img_in.proj.bias"] = (h,)
    names["x_embedder.proj"] = "img_in.proj"
    embedder("time_in", 256, ("mlp.0", "mlp.2"), "time_text_embed.timestep_embedder")
    if cfg.get("vec_in_dim"):
        embedder("vector_in", int(cfg["vec_in_dim"]), ("in_layer", "out_layer"), "time_text_embed.text_embedder")
    if cfg.get("guidance_embed"):
        embedder("guidance_in", 256, ("mlp.0", "mlp.2"), "time_text_embed.guidance_embedder")

    dc = "context_embedder"
    linear("txt_in.input_embedder", context, h, f"{dc}.proj_in")
    embedder("txt_in.t_embedder", 256, ("mlp.0", "mlp.2"), f"{dc}.time_text_embed.timestep_embedder")
    embedder("txt_in.c_embedder", context, ("linear_1", "linear_2"), f"{dc}.time_text_embed.text_embedder")
    for i in range(REFINER_DEPTH):
        p, d = f"txt_in.individual_token_refiner.blocks.{i}", f"{dc}.token_refiner.refiner_blocks.{i}"
        linear(f"{p}.adaLN_modulation.1", h, 2 * h, f"{d}.norm_out.linear")
        layer_norm(f"{p}.norm1", f"{d}.norm1")
        linear(f"{p}.self_attn.qkv", h, 3 * h)
        split(f"{p}.self_attn.qkv", (f"{d}.attn.to_q", h), (f"{d}.attn.to_k", h), (f"{d}.attn.to_v", h))
        linear(f"{p}.self_attn.proj", h, h, f"{d}.attn.to_out.0")
        layer_norm(f"{p}.norm2", f"{d}.norm2")
        linear(f"{p}.mlp.0", h, mlp, f"{d}.ff.net.0.proj")
        linear(f"{p}.mlp.2", mlp, h, f"{d}.ff.net.2")

    for i in range(int(cfg["depth"])):
        p, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        for stream, dmod, qkv, dproj, dff, dnorms in (
            ("img", "norm1", ("to_q", "to_k", "to_v"), "to_out.0", "ff", ("norm_q", "norm_k")),
            ("txt", "norm1_context", ("add_q_proj", "add_k_proj", "add_v_proj"), "to_add_out", "ff_context",
             ("norm_added_q", "norm_added_k")),
        ):
            linear(f"{p}.{stream}_mod.lin", h, 6 * h, f"{d}.{dmod}.linear")
            linear(f"{p}.{stream}_attn.qkv", h, 3 * h, bias=qkv_bias)
            split(f"{p}.{stream}_attn.qkv", *((f"{d}.attn.{part}", h) for part in qkv))
            split(f"{p}.{stream}_attn.qkv", *((f"{p}.{stream}_attn_{part}", h) for part in "qkv"))
            qk_norm(f"{p}.{stream}_attn.norm", f"{p}.{stream}_attn_", f"{d}.attn.{dnorms[0]}", f"{d}.attn.{dnorms[1]}")
            linear(f"{p}.{stream}_attn.proj", h, h, f"{d}.attn.{dproj}")
            linear(f"{p}.{stream}_mlp.0", h, mlp, f"{d}.{dff}.net.0.proj")
            linear(f"{p}.{stream}_mlp.2", mlp, h, f"{d}.{dff}.net.2")

    for i in range(int(cfg["depth_single_blocks"])):
        p, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        linear(f"{p}.linear1", h, 3 * h + mlp)
        split(f"{p}.linear1", (f"{d}.attn.to_q", h), (f"{d}.attn.to_k", h), (f"{d}.attn.to_v", h),
              (f"{d}.proj_mlp", mlp))
        split(f"{p}.linear1", (f"{p}.linear1_q", h), (f"{p}.linear1_k", h), (f"{p}.linear1_v", h),
              (f"{p}.linear1_mlp", mlp))
        linear(f"{p}.linear2", h + mlp, h, f"{d}.proj_out", f"{p}.linear2.fc")
        qk_norm(f"{p}.norm", f"{p}.", f"{d}.attn.norm_q", f"{d}.attn.norm_k")
        linear(f"{p}.modulation.lin", h, 3 * h, f"{d}.norm.linear")

    if cfg.get("byt5"):  # the ByT5 glyph mapper: ByT5's 1472 wide states through 2048 to the model's width
        shapes["byt5_in.layernorm.weight"] = shapes["byt5_in.layernorm.bias"] = (BYT5_DIM,)
        names["context_embedder_2.norm"] = "byt5_in.layernorm"
        linear("byt5_in.fc1", BYT5_DIM, 2048, "context_embedder_2.linear_1")
        linear("byt5_in.fc2", 2048, 2048, "context_embedder_2.linear_2")
        linear("byt5_in.fc3", 2048, h, "context_embedder_2.linear_3")
    if cfg.get("meanflow"):
        linear("time_r_in.in_layer", 256, h, "time_r_in.mlp.0")
        linear("time_r_in.out_layer", h, h, "time_r_in.mlp.2")
    if cfg.get("vision_in_dim"):  # layer norm, linear, GELU, linear, layer norm
        v = int(cfg["vision_in_dim"])
        shapes["vision_in.proj.0.weight"] = shapes["vision_in.proj.0.bias"] = (v,)
        linear("vision_in.proj.1", v, v, "image_embedder.linear_1")
        linear("vision_in.proj.3", v, h, "image_embedder.linear_2")
        shapes["vision_in.proj.4.weight"] = shapes["vision_in.proj.4.bias"] = (h,)
        names["image_embedder.norm_in"], names["image_embedder.norm_out"] = "vision_in.proj.0", "vision_in.proj.4"
    if cfg.get("use_cond_type_embedding"):  # text, ByT5 and vision tokens
        shapes["cond_type_embedding.weight"] = (3, h)
        names["cond_type_embed"] = "cond_type_embedding"

    out = int(cfg.get("out_channels", 16))
    linear("final_layer.linear", h, out * patch[-1] ** 2, "proj_out")
    linear("final_layer.adaLN_modulation.1", h, 2 * h)
    fused["norm_out.linear"] = ("final_layer.adaLN_modulation.1", 0, 2 * h, True)
    return shapes, names, fused


#: HunyuanVideo T2V (720p, guidance-distilled) as ComfyUI's detection reads it from the weights; its I2V
#: models differ in ``in_channels`` only (33, SkyReels 32), which no LoRA of these trainers touches
HUNYUAN_VIDEO_CONFIG: dict = {
    "image_model": "hunyuan_video", "in_channels": 16, "patch_size": [1, 2, 2], "out_channels": 16,
    "vec_in_dim": 768, "axes_dim": [16, 56, 56], "meanflow": False, "context_in_dim": 4096, "hidden_size": 3072,
    "mlp_ratio": 4.0, "num_heads": 24, "depth": 20, "depth_single_blocks": 40, "theta": 256, "qkv_bias": True,
    "byt5": False, "guidance_embed": True,
}

#: HunyuanImage 2.1 (the base model; the distilled one adds guidance_in and time_r_in) as ComfyUI's
#: detection reads it from the weights: 2D patches, no CLIP vector, ByT5 glyph mapper
HUNYUAN_IMAGE21_CONFIG: dict = {
    "image_model": "hunyuan_video", "in_channels": 64, "patch_size": [1, 1], "out_channels": 64, "vec_in_dim": None,
    "axes_dim": [64, 64], "meanflow": False, "context_in_dim": 3584, "hidden_size": 3584, "mlp_ratio": 4.0,
    "num_heads": 28, "depth": 20, "depth_single_blocks": 40, "theta": 256, "qkv_bias": True, "byt5": True,
    "guidance_embed": False,
}

#: HunyuanImage 2.1's refiner (3D patches over noise and the image to refine, guidance- and mean-flow-distilled)
HUNYUAN_IMAGE21_REFINER_CONFIG: dict = {
    "image_model": "hunyuan_video", "in_channels": 128, "patch_size": [1, 1, 1], "out_channels": 64,
    "vec_in_dim": None, "axes_dim": [16, 56, 56], "meanflow": True, "context_in_dim": 3584, "hidden_size": 3328,
    "mlp_ratio": 4.0, "num_heads": 26, "depth": 20, "depth_single_blocks": 40, "theta": 256, "qkv_bias": True,
    "byt5": False, "guidance_embed": True,
}

#: HunyuanVideo 1.5 (480p and 720p, T2V and I2V share it: 32 latent channels, the conditioning latent and its
#: mask in; 54 double blocks, no single block); its super-resolution model differs in ``in_channels`` (98) only
HUNYUAN_VIDEO15_CONFIG: dict = {
    "image_model": "hunyuan_video", "in_channels": 65, "patch_size": [1, 1, 1], "out_channels": 32, "vec_in_dim": None,
    "axes_dim": [16, 56, 56], "meanflow": False, "context_in_dim": 3584, "hidden_size": 2048, "mlp_ratio": 4.0,
    "num_heads": 16, "depth": 54, "depth_single_blocks": 0, "theta": 256, "qkv_bias": True, "byt5": True,
    "guidance_embed": False, "use_cond_type_embedding": True, "vision_in_dim": 1152, "meanflow_sum": True,
}
