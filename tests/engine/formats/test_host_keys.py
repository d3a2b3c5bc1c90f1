"""The emulation of ComfyUI's LoRA key handling (per host version) on the real trainers' layouts
(the fixtures' README table); tests/host checks the same against the real comfy.lora."""
import pytest

from loralab.formats.canonical import resolve_module
from loralab.formats.host_keys import HOSTS, NEWEST, host_key_map, host_layout, host_rules, host_targets
from loralab.layouts import layout_for
from loralab.layouts.archs import ARCHS
from loralab.lora import Lora
from loralab_testkit import LORA_FIXTURES, FixtureSource, fixture, xlabs_keys

DROPPED_ENTIRELY = {"diffusers_sdxl_dreambooth_lora", "xlabs_flux_lora", "diffusers_peft_wan21_t2v_14b_lora",
                    "peft_default_wan21_t2v_1_3b_lora", "peft_default_flux2_klein_9b_lora",
                    "peft_default_z_image_lora", "diffusers_peft_hunyuan_video_lora", "diffusers_peft_lumina2_lora",
                    "ltx_video_trainer_ltxv_lora",
                    "diffusers_peft_hunyuan_video15_lora"}
#: fixture -> the keys the host drops of a file it loads in part: musubi's Z-Image attention under
#: diffusers names, musubi's HunyuanVideo MLP names (``img_mlp_fc1``; ComfyUI maps ``img_mlp_0`` only)
DROPPED_PARTLY = {"musubi_z_image_lora": lambda k: ".attention." in k or "_attention_" in k,
                  "musubi_hunyuan_video_lora": lambda k: "_mlp_fc" in k,
                  # sd-scripts' HunyuanImage 2.1 names of ComfyUI's mod.lin, mlp.0/2 and modulation.lin
                  "kohya_hunyuan_image21_lora": lambda k: "_mod_linear" in k or "_mlp_fc" in k
                  or "_modulation_linear" in k,
                  # musubi's HunyuanVideo 1.5: split q/k/v of ComfyUI's fused qkv, mod.linear and mlp.fc1/fc2
                  "musubi_hunyuan_video15_lora": lambda k: "_attn_proj" not in k}


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_fixture_keys_the_host_loads(name):
    lora = Lora(FixtureSource(name))
    keys = list(fixture("loras", name)["tensors"])
    targets = host_targets(keys, lora.layout)
    dropped = [k for k, v in targets.items() if v is None]
    if name in DROPPED_ENTIRELY:
        assert len(dropped) == len(keys)
    else:
        assert dropped == [k for k in keys if DROPPED_PARTLY.get(name, lambda _: False)(k)]
        assert len(dropped) < len(keys)
        ours = {k: m.target.key for m in lora.mapped() for r, k in m.entry.keys.items() if k not in dropped}
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


OLD, NEW = HOSTS["0.3.64"], HOSTS["0.33.0"]


def test_host_rules_are_the_nearest_known_version_at_or_below():
    assert host_rules(None) is NEWEST is NEW
    assert host_rules("0.3.64") is OLD and host_rules("0.3.70") is OLD
    assert host_rules("0.33.0") is NEW and host_rules("v0.40.2") is NEW
    assert host_rules("0.2.1") is OLD  # older than every known version: the oldest rules
    with pytest.raises(ValueError, match="'nightly' is not a ComfyUI version"):
        host_rules("nightly")


#: names ComfyUI 0.33 loads and 0.3.64 drops: T5 without its wrapper (SD3/SD3.5, Flux), LyCORIS
#: LoKr's ff.linear_in/out, DiffSynth's bare diffusers names and the Flux.2 single-block names; LTX's bare names
NEW_NAMES = {
    ("sd3", "text_encoders.transformer.encoder.block.0.layer.0.SelfAttention.q"):
        "t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight",
    ("sd35l", "text_encoders.transformer.encoder.block.2.layer.1.DenseReluDense.wo"):
        "t5xxl.transformer.encoder.block.2.layer.1.DenseReluDense.wo.weight",
    ("flux", "lycoris_transformer_blocks_0_ff_linear_in"): "diffusion_model.double_blocks.0.img_mlp.0.weight",
    ("flux", "lycoris_transformer_blocks_5_ff_context_linear_out"): "diffusion_model.double_blocks.5.txt_mlp.2.weight",
    ("flux", "transformer_blocks.0.attn.to_out.0"): "diffusion_model.double_blocks.0.img_attn.proj.weight",
    ("flux", "transformer.single_transformer_blocks.1.attn.to_qkv_mlp_proj"):
        "diffusion_model.single_blocks.1.linear1.weight",
    ("flux", "single_transformer_blocks.1.attn.to_out"): "diffusion_model.single_blocks.1.linear2.weight",
    ("ltxv", "transformer_blocks.3.attn2.to_k"): "diffusion_model.transformer_blocks.3.attn2.to_k.weight",
    ("ltx2", "transformer_blocks.47.audio_ff.net.2"): "diffusion_model.transformer_blocks.47.audio_ff.net.2.weight",
}


@pytest.mark.parametrize("arch_id,name", sorted(NEW_NAMES))
def test_names_only_the_newer_host_loads(arch_id, name):
    layout = layout_for(arch_id)
    keys = [name + ".lora_up.weight", name + ".lora_down.weight"]
    assert set(host_targets(keys, layout, rules=NEW).values()) == {NEW_NAMES[arch_id, name]}
    assert set(host_targets(keys, layout, rules=OLD).values()) == {None}
    res = resolve_module(name, layout)  # LoRA Lab's own loader applies them on every host
    assert res is not None and layout.key_for(res, "weight") == NEW_NAMES[arch_id, name]


def test_flux_norms_are_named_as_each_host_names_them():
    flux = layout_for("flux")
    name = "transformer.transformer_blocks.0.attn.norm_q"
    assert host_key_map(flux, OLD)[name][0] == "diffusion_model.double_blocks.0.img_attn.norm.query_norm.scale"
    assert host_key_map(flux, NEW)[name][0] == "diffusion_model.double_blocks.0.img_attn.norm.query_norm.weight"
    assert host_layout(flux, NEW).norm_param == "weight" and host_layout(flux, OLD) is flux


def test_bfl_control_norms_are_set_on_each_hosts_norm_weights():
    keys = ["img_in.lora_A.weight", "img_in.lora_B.weight", "single_blocks.0.norm.key_norm.scale",
            "double_blocks.0.img_attn.norm.query_norm.scale"]
    for rules, param in ((OLD, "scale"), (NEW, "weight")):
        targets = host_targets(keys, layout_for("flux"), rules=rules)
        assert targets["single_blocks.0.norm.key_norm.scale"] == f"diffusion_model.single_blocks.0.norm.key_norm.{param}"
        assert all(targets.values())


@pytest.mark.parametrize("arch_id", sorted(ARCHS))
def test_canonical_resolves_every_name_the_newest_host_maps_to_the_diffusion_model(arch_id):
    """Every key-map name of the newest host that reaches a diffusion-model weight, and every
    name it added over the oldest, resolves in LoRA Lab's own loader to the same weight and rows
    (``linear1_qkv`` is ComfyUI's internal alias for converted XLabs keys, never in a file; names the host
    maps to weights or rows the model does not have patch nothing there either)."""
    layout = host_layout(layout_for(arch_id), NEWEST)
    older = host_key_map(layout_for(arch_id), OLD)
    checked = 0
    for name, (key, rows) in host_key_map(layout, NEWEST).items():
        if name.endswith(".linear1_qkv") or not key.endswith(".weight"):
            continue
        if not key.startswith("diffusion_model.") and name in older:
            continue
        if key not in layout.shapes or rows and rows[0] + rows[1] > layout.shapes[key][0]:
            continue  # 0.33's Z-Image names on Lumina 2: adaLN_modulation.0 and to_k/to_v rows past its qkv
        res = resolve_module(name, layout)
        assert res is not None and layout.key_for(res, "weight") == key, (name, key, res)
        full = (0, layout.shapes[key][0])
        assert res.rows == (None if rows in (None, full) else rows), (name, rows, res)
        checked += 1
    assert checked > 100
