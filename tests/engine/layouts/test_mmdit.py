"""SD3 / SD3.5 (MMDiT): layouts, names, blocks and detection."""
import json
import os

import pytest
import torch

from loralab.blocks.spec import parse_block_weights, standard_blocks
from loralab.blocks.map import block_of
from loralab.layouts import STANDARD_CONFIGS, layout_for
from loralab.layouts.mmdit import mmdit_layout, mmdit_variant
from loralab.lora import Lora
from loralab_testkit import REPO

REFERENCE = json.load(open(os.path.join(REPO, "tests", "data", "mmdit_layouts.json"), encoding="utf-8"))["models"]


@pytest.mark.parametrize("arch_id,ref", [("sd3", "sd3m"), ("sd35m", "sd35m"), ("sd35l", "sd35l")])
def test_layout_equals_comfyui_model(arch_id, ref):
    shapes, names, fused = mmdit_layout(STANDARD_CONFIGS[arch_id])
    assert shapes == {k: tuple(v) for k, v in REFERENCE[ref]["shapes"].items()}
    assert mmdit_variant(STANDARD_CONFIGS[arch_id]) == arch_id


def test_diffusers_names_and_slices():
    layout = layout_for("sd3")
    r = layout.resolve_unet("transformer_blocks.5.attn.add_v_proj")
    assert (r.module, r.rows) == ("diffusion_model.joint_blocks.5.context_block.attn.qkv", (3072, 1536))
    r = layout.resolve_unet("transformer_blocks.23.norm1_context.linear")
    assert (r.module, r.rows, r.swap_halves) == ("diffusion_model.joint_blocks.23.context_block.adaLN_modulation.1",
                                                 None, True)
    assert layout.resolve_unet("transformer_blocks.3.norm1_context.linear").swap_halves is False
    assert layout.resolve_unet("joint_blocks_7_x_block_mlp_fc2", underscore=True).module == \
        "diffusion_model.joint_blocks.7.x_block.mlp.fc2"
    r = layout_for("sd35m").resolve_unet("transformer_blocks.2.attn2.to_k")
    assert (r.module, r.rows) == ("diffusion_model.joint_blocks.2.x_block.attn2.qkv", (1536, 1536))


def test_blocks():
    assert block_of("diffusion_model.joint_blocks.12.x_block.attn.qkv.weight", "mmdit") == "J12"
    assert block_of("diffusion_model.context_embedder.weight", "mmdit") == "IN"
    assert block_of("diffusion_model.pos_embed", "mmdit") == "IN"
    assert block_of("clip_g.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "mmdit") == "CLIP"
    assert standard_blocks("sd35l")[-2:] == ["J37", "OUT"]
    bw = parse_block_weights("J0-5=0, default=1", "sd3")
    assert bw.weight("J05") == 0 and bw.weight("J06") == 1


def _lora(names_shapes):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(*s, generator=g) for k, s in names_shapes.items()}


def test_detects_sd3_and_sd35_large_from_shapes():
    kohya = {}
    for i in range(3):
        kohya[f"lora_unet_joint_blocks_{i}_x_block_attn_qkv.lora_down.weight"] = (4, 1536)
        kohya[f"lora_unet_joint_blocks_{i}_x_block_attn_qkv.lora_up.weight"] = (4608, 4)
    lora = Lora.from_state_dict(_lora(kohya))
    assert lora.detection.arch == "sd3" and not list(lora.unmapped())
    peft = {}
    for part in ("to_q", "to_k", "to_v"):
        peft[f"transformer.transformer_blocks.30.attn.{part}.lora_A.weight"] = (4, 2432)
        peft[f"transformer.transformer_blocks.30.attn.{part}.lora_B.weight"] = (2432, 4)
    lora = Lora.from_state_dict(_lora(peft))
    assert lora.detection.arch == "sd35l"
    assert {m.target.rows for m in lora.mapped()} == {(0, 2432), (2432, 2432), (4864, 2432)}
