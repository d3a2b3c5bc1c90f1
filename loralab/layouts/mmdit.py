"""SD3 / SD3.5 (MMDiT) layouts: ComfyUI key names and shapes from an MMDiT config, diffusers names,
and the diffusers modules that are row slices of a fused ``qkv`` weight."""
from __future__ import annotations

from .flux import FusedSlice
from .unet import Shapes


def mmdit_layout(cfg: dict) -> tuple[Shapes, dict[str, str], dict[str, FusedSlice]]:
    """Return ``(shapes, diffusers_names, fused)`` for an MMDiT config (as ComfyUI detects it)."""
    depth = int(cfg["depth"])
    h = 64 * depth
    patch = int(cfg.get("patch_size", 2))
    rms = cfg.get("qk_norm") == "rms"
    dual = set(int(i) for i in cfg.get("x_block_self_attn_layers") or [])
    shapes: Shapes = {}
    names: dict[str, str] = {}
    fused: dict[str, FusedSlice] = {}

    def linear(name: str, fan_in: int, fan_out: int, diffusers: str | None = None) -> None:
        shapes[name + ".weight"] = (fan_out, fan_in)
        shapes[name + ".bias"] = (fan_out,)
        if diffusers:
            names[diffusers] = name

    def attention(p: str, d: str, parts: tuple[str, str, str], proj: str | None, norms: tuple[str, str]) -> None:
        linear(f"{p}.qkv", h, 3 * h)
        for n, part in enumerate(parts):
            fused[f"{d}.{part}"] = (f"{p}.qkv", n * h, h, False)
        if proj is not None:
            linear(f"{p}.proj", h, h, diffusers=f"{d}.{proj}")
        if rms:
            for ln, dn in zip(("ln_q", "ln_k"), norms):
                shapes[f"{p}.{ln}.weight"] = (64,)
                names[f"{d}.{dn}"] = f"{p}.{ln}"

    shapes["pos_embed"] = (1, int(cfg["num_patches"]), h)
    shapes["x_embedder.proj.weight"] = (h, int(cfg["in_channels"]), patch, patch)
    shapes["x_embedder.proj.bias"] = (h,)
    names["pos_embed.proj"] = "x_embedder.proj"
    linear("t_embedder.mlp.0", 256, h, "time_text_embed.timestep_embedder.linear_1")
    linear("t_embedder.mlp.2", h, h, "time_text_embed.timestep_embedder.linear_2")
    linear("y_embedder.mlp.0", int(cfg["adm_in_channels"]), h, "time_text_embed.text_embedder.linear_1")
    linear("y_embedder.mlp.2", h, h, "time_text_embed.text_embedder.linear_2")
    linear("context_embedder", int(cfg["context_embedder_config"]["params"]["in_features"]), h, "context_embedder")

    for i in range(depth):
        p, d = f"joint_blocks.{i}", f"transformer_blocks.{i}"
        last = i == depth - 1
        ctx = f"{p}.context_block"
        attention(f"{ctx}.attn", f"{d}.attn", ("add_q_proj", "add_k_proj", "add_v_proj"),
                  None if last else "to_add_out", ("norm_added_q", "norm_added_k"))
        if not last:
            linear(f"{ctx}.mlp.fc1", h, 4 * h, f"{d}.ff_context.net.0.proj")
            linear(f"{ctx}.mlp.fc2", 4 * h, h, f"{d}.ff_context.net.2")
            linear(f"{ctx}.adaLN_modulation.1", h, 6 * h, f"{d}.norm1_context.linear")
        else:  # the last context block only modulates (shift, scale): diffusers stores (scale, shift)
            linear(f"{ctx}.adaLN_modulation.1", h, 2 * h)
            fused[f"{d}.norm1_context.linear"] = (f"{ctx}.adaLN_modulation.1", 0, 2 * h, True)
        x = f"{p}.x_block"
        attention(f"{x}.attn", f"{d}.attn", ("to_q", "to_k", "to_v"), "to_out.0", ("norm_q", "norm_k"))
        if i in dual:
            attention(f"{x}.attn2", f"{d}.attn2", ("to_q", "to_k", "to_v"), "to_out.0", ("norm_q", "norm_k"))
        linear(f"{x}.mlp.fc1", h, 4 * h, f"{d}.ff.net.0.proj")
        linear(f"{x}.mlp.fc2", 4 * h, h, f"{d}.ff.net.2")
        linear(f"{x}.adaLN_modulation.1", h, (9 if i in dual else 6) * h, f"{d}.norm1.linear")

    linear("final_layer.linear", h, patch * patch * int(cfg.get("out_channels", cfg["in_channels"])), "proj_out")
    linear("final_layer.adaLN_modulation.1", h, 2 * h)
    fused["norm_out.linear"] = ("final_layer.adaLN_modulation.1", 0, 2 * h, True)
    return shapes, names, fused


def mmdit_variant(cfg: dict) -> str:
    """The LoRA Lab arch id of an MMDiT config: ``sd3`` (3 medium), ``sd35m`` (3.5 medium), ``sd35l`` (3.5 large)."""
    if int(cfg.get("depth", 0)) >= 38:
        return "sd35l"
    return "sd35m" if cfg.get("x_block_self_attn_layers") else "sd3"


def _config(depth: int, num_patches: int, rms: bool, dual: list[int]) -> dict:
    cfg = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "num_patches": num_patches,
           "adm_in_channels": 2048, "x_block_self_attn_layers": dual,
           "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096,
                                                                               "out_features": 64 * depth}}}
    if rms:
        cfg["qk_norm"] = "rms"
    return cfg


SD3_MEDIUM_CONFIG: dict = _config(24, 36864, False, [])
SD35_MEDIUM_CONFIG: dict = _config(24, 147456, True, list(range(13)))
SD35_LARGE_CONFIG: dict = _config(38, 147456, True, [])
