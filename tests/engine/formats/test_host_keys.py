"""The emulation of ComfyUI 0.3.64's LoRA key handling on the real trainers' layouts (the fixtures'
README table); tests/host checks the same against the real comfy.lora."""
import pytest

from loralab.formats.host_keys import host_key_map, host_targets
from loralab.layouts import layout_for
from loralab.lora import Lora
from loralab_testkit import LORA_FIXTURES, FixtureSource, fixture, xlabs_keys

DROPPED_ENTIRELY = {"diffusers_sdxl_dreambooth_lora", "xlabs_flux_lora", "diffusers_peft_wan21_t2v_14b_lora",
                    "peft_default_wan21_t2v_1_3b_lora"}


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_fixture_keys_the_host_loads(name):
    lora = Lora(FixtureSource(name))
    keys = list(fixture("loras", name)["tensors"])
    targets = host_targets(keys, lora.layout)
    dropped = [k for k, v in targets.items() if v is None]
    if name in DROPPED_ENTIRELY:
        assert len(dropped) == len(keys)
    else:
        assert dropped == []
        ours = {k: m.target.key for m in lora.mapped() for r, k in m.entry.keys.items()}
        assert {k: targets[k] for k in ours} == ours  # where the host loads a key, it patches our target


def test_full_xlabs_file_is_converted_by_the_host():
    """ComfyUI converts XLabs names only when blocks 37 (single) and 18 (double) are present."""
    flux = layout_for("flux")
    keys = xlabs_keys()
    targets = host_targets(keys, flux)
    assert all(targets.values())
    assert targets["single_blocks.3.processor.qkv_lora.up.weight"] == "diffusion_model.single_blocks.3.linear1.weight"
    assert targets["double_blocks.0.processor.proj_lora2.down.weight"] == \
        "diffusion_model.double_blocks.0.txt_attn.proj.weight"
    partial = [k for k in keys if not k.startswith("single_blocks.37.")]
    assert not any(host_targets(partial, flux).values())


def test_key_map_spellings():
    sdxl = host_key_map(layout_for("sdxl"))
    to_q = "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                 "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
                 "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q",
                 "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q"):
        assert sdxl[name] == (to_q, None), name
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q" not in sdxl
    assert sdxl["lora_te2_text_model_encoder_layers_0_mlp_fc1"][0] == \
        "clip_g.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    flux = host_key_map(layout_for("flux"))
    assert flux["transformer.transformer_blocks.0.attn.to_k"] == \
        ("diffusion_model.double_blocks.0.img_attn.qkv.weight", (3072, 3072))
    assert flux["lora_te3_encoder_block_0_layer_0_SelfAttention_q"][0].startswith("t5xxl.")
    assert flux["lora_te2_encoder_block_0_layer_0_SelfAttention_q"][0].startswith("t5xxl.")
