"""SD1.x / SD2.x / SDXL UNet layouts: ComfyUI (LDM) key names and shapes from a UNet config,
and the diffusers name of every LDM module.

The config is the dict ComfyUI's model detection produces (``model.model_config.unet_config``),
so the same code describes the full-size models and the tiny test models exactly.
"""
from __future__ import annotations

from typing import Any

Shapes = dict[str, tuple[int, ...]]

# LDM ResBlock sub-module -> diffusers ResnetBlock2D sub-module
_RESNET_SUBS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def _per_level(value: Any, levels: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * levels


class _Builder:
    def __init__(self, time_dim: int, context_dim: int, linear_proj: bool) -> None:
        self.shapes: Shapes = {}
        self.time_dim = time_dim
        self.context_dim = context_dim
        self.linear_proj = linear_proj

    def linear(self, name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        self.shapes[name + ".weight"] = (fan_out, fan_in)
        if bias:
            self.shapes[name + ".bias"] = (fan_out,)

    def conv(self, name: str, fan_in: int, fan_out: int, kernel: int) -> None:
        self.shapes[name + ".weight"] = (fan_out, fan_in, kernel, kernel)
        self.shapes[name + ".bias"] = (fan_out,)

    def norm(self, name: str, channels: int) -> None:
        self.shapes[name + ".weight"] = (channels,)
        self.shapes[name + ".bias"] = (channels,)

    def resblock(self, p: str, ch: int, out: int) -> None:
        self.norm(p + ".in_layers.0", ch)
        self.conv(p + ".in_layers.2", ch, out, 3)
        self.linear(p + ".emb_layers.1", self.time_dim, out)
        self.norm(p + ".out_layers.0", out)
        self.conv(p + ".out_layers.3", out, out, 3)
        if ch != out:
            self.conv(p + ".skip_connection", ch, out, 1)

    def transformer(self, p: str, ch: int, depth: int) -> None:
        self.norm(p + ".norm", ch)
        if self.linear_proj:
            self.linear(p + ".proj_in", ch, ch)
        else:
            self.conv(p + ".proj_in", ch, ch, 1)
        for d in range(depth):
            b = f"{p}.transformer_blocks.{d}"
            for attn, kv_dim in (("attn1", ch), ("attn2", self.context_dim)):
                self.linear(f"{b}.{attn}.to_q", ch, ch, bias=False)
                self.linear(f"{b}.{attn}.to_k", kv_dim, ch, bias=False)
                self.linear(f"{b}.{attn}.to_v", kv_dim, ch, bias=False)
                self.linear(f"{b}.{attn}.to_out.0", ch, ch)
            self.linear(f"{b}.ff.net.0.proj", ch, ch * 8)
            self.linear(f"{b}.ff.net.2", ch * 4, ch)
            for n in ("norm1", "norm2", "norm3"):
                self.norm(f"{b}.{n}", ch)
        if self.linear_proj:
            self.linear(p + ".proj_out", ch, ch)
        else:
            self.conv(p + ".proj_out", ch, ch, 1)


def unet_layout(cfg: dict) -> tuple[Shapes, dict[str, str]]:
    """Return ``(shapes, diffusers_names)`` for a UNet config.

    ``shapes`` maps every ComfyUI diffusion-model key (without the ``diffusion_model.`` prefix) to
    its shape; ``diffusers_names`` maps diffusers module names to LDM module names (keys without
    ``.weight``/``.bias``); every LDM module has one, some have two (``class_embedding`` is the
    other diffusers name of SDXL's ``add_embedding``).
    """
    mc = int(cfg["model_channels"])
    mult = list(cfg["channel_mult"])
    levels = len(mult)
    nrb = _per_level(cfg["num_res_blocks"], levels)
    depth_in = list(cfg.get("transformer_depth") or [])
    depth_out = list(cfg.get("transformer_depth_output") or [])
    if len(depth_in) < sum(nrb):
        depth_in += [0] * (sum(nrb) - len(depth_in))
    depth_mid = cfg.get("transformer_depth_middle")
    if depth_mid is None:  # ComfyUI's default: the deepest input level's depth
        depth_mid = depth_in[-1] if depth_in else -1
    time_dim = mc * 4
    b = _Builder(time_dim, int(cfg.get("context_dim") or 0), bool(cfg.get("use_linear_in_transformer")))
    names: dict[str, str] = {}

    b.linear("time_embed.0", mc, time_dim)
    b.linear("time_embed.2", time_dim, time_dim)
    names["time_embedding.linear_1"] = "time_embed.0"
    names["time_embedding.linear_2"] = "time_embed.2"
    if cfg.get("num_classes") == "sequential":
        b.linear("label_emb.0.0", int(cfg["adm_in_channels"]), time_dim)
        b.linear("label_emb.0.2", time_dim, time_dim)
        for diffusers in ("add_embedding", "class_embedding"):
            names[f"{diffusers}.linear_1"] = "label_emb.0.0"
            names[f"{diffusers}.linear_2"] = "label_emb.0.2"

    b.conv("input_blocks.0.0", int(cfg["in_channels"]), mc, 3)
    names["conv_in"] = "input_blocks.0.0"
    prefix_map: list[tuple[str, str, bool]] = []  # (ldm prefix, diffusers prefix, is_resnet)
    ch = mc
    skip_chans = [mc]
    idx = 1
    depth_i = 0
    for level, m in enumerate(mult):
        for j in range(nrb[level]):
            out = m * mc
            b.resblock(f"input_blocks.{idx}.0", ch, out)
            prefix_map.append((f"input_blocks.{idx}.0", f"down_blocks.{level}.resnets.{j}", True))
            ch = out
            depth = depth_in[depth_i]
            depth_i += 1
            if depth > 0:
                b.transformer(f"input_blocks.{idx}.1", ch, depth)
                prefix_map.append((f"input_blocks.{idx}.1", f"down_blocks.{level}.attentions.{j}", False))
            skip_chans.append(ch)
            idx += 1
        if level != levels - 1:
            b.conv(f"input_blocks.{idx}.0.op", ch, ch, 3)
            names[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{idx}.0.op"
            skip_chans.append(ch)
            idx += 1

    if depth_mid >= -1:
        b.resblock("middle_block.0", ch, ch)
        prefix_map.append(("middle_block.0", "mid_block.resnets.0", True))
        if depth_mid >= 0:
            b.transformer("middle_block.1", ch, depth_mid)
            b.resblock("middle_block.2", ch, ch)
            prefix_map.append(("middle_block.1", "mid_block.attentions.0", False))
            prefix_map.append(("middle_block.2", "mid_block.resnets.1", True))

    idx = 0
    for up, level in enumerate(reversed(range(levels))):
        for j in range(nrb[level] + 1):
            out = mult[level] * mc
            b.resblock(f"output_blocks.{idx}.0", ch + skip_chans.pop(), out)
            prefix_map.append((f"output_blocks.{idx}.0", f"up_blocks.{up}.resnets.{j}", True))
            ch = out
            depth = depth_out.pop() if depth_out else 0
            sub = 1
            if depth > 0:
                b.transformer(f"output_blocks.{idx}.1", ch, depth)
                prefix_map.append((f"output_blocks.{idx}.1", f"up_blocks.{up}.attentions.{j}", False))
                sub = 2
            if level and j == nrb[level]:
                b.conv(f"output_blocks.{idx}.{sub}.conv", ch, ch, 3)
                names[f"up_blocks.{up}.upsamplers.0.conv"] = f"output_blocks.{idx}.{sub}.conv"
            idx += 1

    b.norm("out.0", ch)
    b.conv("out.2", mc, int(cfg["out_channels"]), 3)
    names["conv_norm_out"] = "out.0"
    names["conv_out"] = "out.2"

    modules = {k.rsplit(".", 1)[0] for k in b.shapes}
    for ldm_prefix, diff_prefix, is_resnet in prefix_map:
        for module in modules:
            if module.startswith(ldm_prefix + "."):
                rest = module[len(ldm_prefix) + 1:]
                if is_resnet:
                    rest = _RESNET_SUBS.get(rest, rest)
                names[f"{diff_prefix}.{rest}"] = module
    return b.shapes, names


#: The UNet configs of the released models, as ComfyUI detects them.
SD15_CONFIG: dict = {
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "adm_in_channels": None,
}
SD2_CONFIG: dict = dict(SD15_CONFIG, use_linear_in_transformer=True, context_dim=1024)
SDXL_CONFIG: dict = {
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10,
    "use_linear_in_transformer": True, "context_dim": 2048, "adm_in_channels": 2816, "num_classes": "sequential",
}
SDXL_REFINER_CONFIG: dict = {
    "in_channels": 4, "out_channels": 4, "model_channels": 384, "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4], "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
    "transformer_depth_output": [0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0], "transformer_depth_middle": 4,
    "use_linear_in_transformer": True, "context_dim": 1280, "adm_in_channels": 2560, "num_classes": "sequential",
}
