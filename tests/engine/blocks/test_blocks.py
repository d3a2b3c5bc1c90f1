"""Absolute block ids from canonical keys."""
import pytest

from loralab.blocks.map import OTHER, block_of, block_sort_key, layout_blocks, split_block_id
from loralab.layouts import layout_for
from loralab.lora import Lora
from loralab_testkit import FixtureSource, model_shapes

LBW_SD15_17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
               "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]


def test_unet_keys():
    assert block_of("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", "unet") == "IN04"
    assert block_of("diffusion_model.middle_block.1.proj_in.weight", "unet") == "M00"
    assert block_of("diffusion_model.output_blocks.11.0.out_layers.3.weight", "unet") == "OUT11"
    assert block_of("clip_g.transformer.text_model.encoder.layers.3.mlp.fc1.weight", "unet") == "BASE"
    for k in ("diffusion_model.time_embed.0.weight", "diffusion_model.out.2.weight", "diffusion_model.label_emb.0.0.weight"):
        assert block_of(k, "unet") == OTHER


def test_flux_keys():
    assert block_of("diffusion_model.double_blocks.18.img_attn.qkv.weight", "flux") == "D18"
    assert block_of("diffusion_model.single_blocks.0.linear1.weight", "flux") == "S00"
    assert block_of("diffusion_model.guidance_in.in_layer.weight", "flux") == "IN"
    assert block_of("diffusion_model.final_layer.linear.weight", "flux") == "OUT"
    assert block_of("t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight", "flux") == "T5"
    assert block_of("clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "flux") == "CLIP"


@pytest.mark.parametrize("arch_id,count", [("sd1", 26), ("sd2", 26), ("sdxl", 20), ("flux", 61)])
def test_layout_block_lists_are_the_lbw_forms(arch_id, count):
    blocks = layout_blocks(layout_for(arch_id))
    assert len(blocks) == count
    assert list(blocks) == sorted(blocks, key=lambda b: block_sort_key(b, layout_for(arch_id).arch.family))


def test_every_sdxl_weight_key_has_a_block_or_is_other():
    keys = model_shapes("sdxl", "unet")
    blocks = {block_of(k, "unet") for k in keys}
    assert blocks == {f"IN{i:02d}" for i in range(9)} | {"M00"} | {f"OUT{i:02d}" for i in range(9)} | {OTHER}
    others = sorted(k for k in keys if block_of(k, "unet") == OTHER)
    assert all(k.startswith(("diffusion_model.time_embed", "diffusion_model.label_emb", "diffusion_model.out."))
               for k in others)


def test_kohya_sd15_touches_exactly_the_lbw17_blocks():
    lora = Lora(FixtureSource("kohya_sd15_lora"))
    touched = {block_of(m.target.key, "unet") for m in lora.mapped()}
    assert sorted(touched, key=lambda b: block_sort_key(b, "unet")) == LBW_SD15_17


def test_aitoolkit_flux_single_and_double_blocks():
    lora = Lora(FixtureSource("aitoolkit_flux_lora"))
    touched = {block_of(m.target.key, "flux") for m in lora.mapped()}
    assert touched == {f"D{i:02d}" for i in range(19)} | {f"S{i:02d}" for i in range(38)}


def test_xlabs_single_blocks_are_absolute():
    lora = Lora(FixtureSource("xlabs_flux_lora"))
    singles = {block_of(m.target.key, "flux") for m in lora.mapped() if ".single_blocks." in m.target.key}
    assert singles == {"S01", "S02", "S03", "S04"}


def test_split_block_id():
    assert split_block_id("OUT07") == ("OUT", 7)
    assert split_block_id("T5") == ("T5", None)
    assert split_block_id("IN") == ("IN", None)
