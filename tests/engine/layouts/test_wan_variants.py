"""Wan's variants as the engine describes them: the base model of their size plus VACE's blocks generated
from its config, or a variant's own modules given as ``extra_params``; their block ids (VACE ``V00``..,
condition embedders ``IN``, injectors ``OTHER``); a T2V LoRA still maps whole and a VACE LoRA too."""
import pytest

from loralab.blocks.map import block_of, layout_blocks
from loralab.blocks.spec import parse_block_weights
from loralab.layouts import ModelLayout, layout_for
from loralab.layouts.wan import (WAN21_T2V_1_3B_CONFIG, WAN21_T2V_14B_CONFIG, WAN21_VACE_1_3B_CONFIG, wan_layout,
                                 wan_variant)
from loralab.lora import Lora
from loralab.ops.apply import plan_application
from loralab_testkit import FixtureSource, fit_fixture_to_layout

#: VACE 14B as ComfyUI's model detection reads it (8 VACE blocks, a 96-channel VACE context)
VACE_14B = dict(WAN21_T2V_14B_CONFIG, model_type="vace", vace_layers=8, vace_in_dim=96)


def _vace_lora(layout: ModelLayout, blocks: int) -> dict:
    """The T2V fixture fitted to ``layout``, its first ``blocks`` blocks renamed to VACE's blocks."""
    return {k.replace("lora_unet_blocks_", "lora_unet_vace_blocks_"): v
            for k, v in fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout, rank=4).items()
            if k.startswith("lora_unet_blocks_") and int(k.split("_")[3]) < blocks}


def _vace_keys(layers: int, dim: int) -> dict[str, tuple]:
    """What one VACE block and the VACE patch embedding add, written out by hand."""
    out = {"vace_patch_embedding.weight": (dim, 96, 1, 2, 2), "vace_patch_embedding.bias": (dim,)}
    for i in range(layers):
        p = f"vace_blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for part in "qkvo":
                out[f"{p}.{attn}.{part}.weight"], out[f"{p}.{attn}.{part}.bias"] = (dim, dim), (dim,)
            out[f"{p}.{attn}.norm_q.weight"] = out[f"{p}.{attn}.norm_k.weight"] = (dim,)
        out[f"{p}.norm3.weight"] = out[f"{p}.norm3.bias"] = (dim,)
        out[f"{p}.ffn.0.weight"], out[f"{p}.ffn.0.bias"] = (13824, dim), (13824,)
        out[f"{p}.ffn.2.weight"], out[f"{p}.ffn.2.bias"] = (dim, 13824), (dim,)
        out[f"{p}.modulation"] = (1, 6, dim)
        for proj in ("before_proj", "after_proj") if i == 0 else ("after_proj",):
            out[f"{p}.{proj}.weight"], out[f"{p}.{proj}.bias"] = (dim, dim), (dim,)
    return out


def test_vace_is_the_t2v_model_of_its_size_plus_its_blocks_and_patch_embedding():
    base = wan_layout(WAN21_T2V_14B_CONFIG)[0]
    vace = wan_layout(VACE_14B)[0]
    assert {k: v for k, v in vace.items() if k not in base} == _vace_keys(8, 5120)
    assert {k: vace[k] for k in base} == base
    assert wan_variant(VACE_14B) == "wan21_t2v_14b"


def test_vace_blocks_have_block_ids_and_their_diffusers_names():
    layout = ModelLayout.from_config("wan21_t2v_14b", VACE_14B)
    assert layout_blocks(layout) == ("IN", *(f"B{i:02d}" for i in range(40)), *(f"V{i:02d}" for i in range(8)), "OUT")
    assert block_of("diffusion_model.vace_patch_embedding.weight", "wan") == "IN"
    for name, key in (("vace_blocks.3.attn1.to_q", "vace_blocks.3.self_attn.q"),
                      ("vace_blocks.0.proj_in", "vace_blocks.0.before_proj"),
                      ("vace_blocks.7.proj_out", "vace_blocks.7.after_proj"),
                      ("vace_blocks.2.ffn.net.0.proj", "vace_blocks.2.ffn.0")):
        assert layout.resolve_unet(name).module == "diffusion_model." + key


def test_a_variants_own_parameters_join_the_layout_with_their_block_ids():
    extra = {"control_adapter.conv.weight": (1536, 384, 2, 2), "audio_injector.injector.0.q.weight": (1536, 1536),
             "face_encoder.conv1_local.weight": (4096, 512, 3), "head_global.head.weight": (64, 1536)}
    layout = ModelLayout.from_config("wan21_t2v_1_3b", dict(WAN21_T2V_1_3B_CONFIG, extra_params=extra))
    plain = layout_for("wan21_t2v_1_3b")
    assert dict(layout.shapes) == {**plain.shapes, **{"diffusion_model." + k: v for k, v in extra.items()}}
    assert {k: block_of("diffusion_model." + k, "wan") for k in extra} == {
        "control_adapter.conv.weight": "IN", "audio_injector.injector.0.q.weight": "OTHER",
        "face_encoder.conv1_local.weight": "IN", "head_global.head.weight": "OUT"}
    assert layout.resolve_unet("audio_injector_injector_0_q", underscore=True).module == \
        "diffusion_model.audio_injector.injector.0.q"


def test_a_t2v_lora_maps_whole_onto_vace_and_a_spec_on_vace_blocks_zeroes_exactly_those():
    vace = ModelLayout.from_config("wan21_t2v_14b", VACE_14B)
    t2v = Lora(FixtureSource("musubi_wan21_t2v_14b_lora"), vace)
    assert not list(t2v.unmapped()) and len(list(t2v.mapped())) > 0
    tensors = _vace_lora(vace, 8)
    lora = Lora.from_state_dict(tensors, {}, vace)
    assert not list(lora.unmapped()) and {block_of(m.target.key, "wan") for m in lora.mapped()} == \
        {f"V{i:02d}" for i in range(8)}
    plan = plan_application(lora, parse_block_weights("V00=0, V05-07=0", "wan21_t2v_14b", layout=vace), 1.0, 1.0,
                            model_arch="wan21_t2v_14b", clip_connected=False)
    assert {p.block for p in plan.zero} == {"V00", "V05", "V06", "V07"}
    assert {p.block for p in plan.patches} == {"V01", "V02", "V03", "V04"} and not plan.not_applied


@pytest.mark.parametrize("model_type", ["t2v", "vace", "camera_2.2", "s2v", "humo"])
def test_anything_but_i2v_has_text_cross_attention_only(model_type):
    shapes = wan_layout(dict(WAN21_T2V_1_3B_CONFIG, model_type=model_type))[0]
    assert not any("_img" in k for k in shapes) and wan_variant(dict(WAN21_T2V_1_3B_CONFIG, model_type=model_type)) \
        == "wan21_t2v_1_3b"


@pytest.mark.parametrize("arch_id,config", [("wan21_t2v_14b", VACE_14B), ("wan21_t2v_1_3b", WAN21_VACE_1_3B_CONFIG)])
def test_a_vace_lora_opened_without_a_model_maps_whole_onto_the_released_vace_model(arch_id, config):
    vace = ModelLayout.from_config(arch_id, config)
    t2v = fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", vace, rank=4)
    lora = Lora.from_state_dict({**t2v, **_vace_lora(vace, config["vace_layers"])}, {})
    assert lora.detection.arch == arch_id and dict(lora.layout.shapes) == dict(vace.shapes)
    assert not list(lora.unmapped())
    assert {block_of(m.target.key, "wan")[0] for m in lora.mapped()} == {"B", "V"}
    assert Lora.from_state_dict(t2v, {}).layout.shapes == layout_for(arch_id).shapes  # no VACE key: the T2V model
