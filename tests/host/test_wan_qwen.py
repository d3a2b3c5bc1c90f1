"""Wan 2.1/2.2 and Qwen-Image in the real ComfyUI: our generated layouts equal ComfyUI's own model
classes (meta device), every name ComfyUI's key map knows resolves to the same key, and on tiny
models built with ComfyUI's classes our loader equals core's LoraLoader bit for bit where core
loads the file, applies what core drops (diffusers/PEFT Wan) as the math says, and a block spec
changes exactly the keys of its blocks."""
import pytest
import torch

from host import train_kit
from host.dit_kit import (apply_ours, assert_changed_by, assert_equals_core, assert_spec_weights, comfy_model,
                          entry_deltas, fitted, layout_of, loaded_weights, save_once, tiny_patchers)
from loralab_testkit import fit_fixture_to_layout

#: arch id -> ComfyUI model_config class of the released model
RELEASED = {"wan21_t2v_14b": "WAN21_T2V", "wan21_i2v_14b": "WAN21_I2V", "wan21_t2v_1_3b": "WAN21_T2V",
            "wan22_ti2v_5b": "WAN22_T2V", "qwen_image": "QwenImage"}

_WAN_TINY = train_kit.WAN_MICRO[1]
#: tiny variant -> (model_config class, unet_config): real classes, small widths and depths
TINY = {
    "wan_t2v": ("WAN21_T2V", dict(_WAN_TINY, model_type="t2v")),
    "wan_i2v": ("WAN21_I2V", dict(_WAN_TINY, model_type="i2v", in_dim=36)),
    "wan22_5b": ("WAN22_T2V", dict(_WAN_TINY, model_type="t2v", in_dim=48, out_dim=48)),
    "qwen": ("QwenImage", {"image_model": "qwen_image", "in_channels": 64, "num_layers": 4,
                           "num_attention_heads": 2, "attention_head_dim": 32}),
}


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_layout_equals_comfyui_model_class(host, arch_id):
    layouts = host.module("loralab.layouts")
    model = comfy_model(RELEASED[arch_id], layouts.STANDARD_CONFIGS[arch_id], "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == dict(layouts.layout_for(arch_id).shapes)


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_comfy_lora_names_resolve_to_the_same_keys_and_host_map_matches(host, arch_id):
    import comfy.lora
    layouts = host.module("loralab.layouts")
    canonical = host.module("loralab.formats.canonical")
    host_keys = host.module("loralab.formats.host_keys")
    model = comfy_model(RELEASED[arch_id], layouts.STANDARD_CONFIGS[arch_id], "meta")
    layout = layouts.layout_for(arch_id)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    assert host_keys.host_key_map(layout) == {k: (v, None) for k, v in key_map.items()}
    for name, key in key_map.items():
        if key.endswith(".weight"):
            res = canonical.resolve_module(name, layout)
            assert res is not None and layout.key_for(res, "weight") == key, name


@pytest.fixture(scope="module")
def tiny(host):
    """variant -> a ModelPatcher of the tiny model, seeded random weights."""
    return tiny_patchers(lambda variant: comfy_model(*TINY[variant]))


def _fitted(host, mp, name, seed=0):
    return fitted(host, mp, name, "wanqwen", seed)


CORE_LOADS = [("musubi_wan21_t2v_14b_lora", "wan_t2v"), ("diffusion_pipe_wan21_i2v_14b_lora", "wan_i2v"),
              ("musubi_wan21_t2v_14b_lora", "wan22_5b"), ("musubi_qwen_image_lora", "qwen"),
              ("diffusers_peft_qwen_image_lora", "qwen")]


@pytest.mark.parametrize("name,variant", CORE_LOADS)
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, variant):
    mp = tiny(variant)
    file_name, _ = _fitted(host, mp, name)
    assert_equals_core(host, mp, file_name, 16)


@pytest.mark.parametrize("name,variant", [("diffusers_peft_wan21_t2v_14b_lora", "wan_t2v"),
                                          ("peft_default_wan21_t2v_1_3b_lora", "wan_t2v")])
def test_diffusers_peft_wan_core_drops_is_applied_as_the_math_says(host, tiny, name, variant):
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=1)
    base = loaded_weights(mp)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0]
    assert not core.patches  # ComfyUI 0.3.64 has no diffusers names for Wan (#6673, #6531)
    ours, _, info = apply_ours(host, mp, file_name, sm=0.8)
    assert "not applied" not in info
    assert_changed_by(base, loaded_weights(ours), entry_deltas(host, tensors, layout), lambda b: 0.8)


@pytest.mark.parametrize("name,variant", [("musubi_wan21_t2v_14b_lora", "wan_t2v"), ("musubi_qwen_image_lora", "qwen")])
def test_block_spec_changes_exactly_the_named_blocks(host, tiny, name, variant):
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=2)
    base = loaded_weights(mp)
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == ["B00", "B01", "B02", "B03"]
    weights = {"B01": 1.5 * 0.6, "B03": 1.5 * 0.2}
    assert_spec_weights(host, mp, base, file_name, deltas,
                        "B01=0.6, B03=0.2, default=0", lambda b: weights.get(b, 0.0), sm=1.5)
    assert_spec_weights(host, mp, base, file_name, deltas, "B02=0", lambda b: 0.0 if b == "B02" else 1.0)


def test_i2v_lora_on_t2v_model_applies_what_fits_and_lists_the_image_attention(host, tiny):
    """ComfyUI #10222: k_img/v_img of an I2V LoRA on a T2V model; core warns, we say which and why."""
    mp = tiny("wan_t2v")
    i2v_tensors = fit_fixture_to_layout("diffusion_pipe_wan21_i2v_14b_lora", layout_of(host, tiny("wan_i2v")), rank=4)
    file_name = save_once(host, "wanqwen_i2v_on_t2v.safetensors", i2v_tensors, {"format": "pt"})
    layout = layout_of(host, mp)
    fits = {k: v for k, v in i2v_tensors.items() if "_img." not in k}
    base = loaded_weights(mp)
    ours, _, info = apply_ours(host, mp, file_name)
    assert_changed_by(base, loaded_weights(ours), entry_deltas(host, fits, layout), lambda b: 1.0)
    reasons = [line for line in info.splitlines() if " × " in line]  # one line per reason, counted
    assert len(reasons) == 1 and reasons[0].startswith("  8 × image cross-attention of Wan I2V (a T2V model has "
                                                       "none), e.g. ") and "_img" in reasons[0], info
    assert "\nlikely cause: an I2V LoRA on a T2V model: " in info and "\nfix: load a Wan I2V model for all of it" in info


def _pair(host, **inputs):
    defaults = dict(strength_high=1.0, strength_low=1.0, block_weights="", a=1.0, b=1.0, seed=0)
    return host.call_node("LoRALabWanPair", **{**defaults, **inputs})


def test_wan22_pair_applies_each_file_to_its_expert_as_core_does(host, tiny):
    """Wan 2.2 A14B: one pair node, lora_high on the high-noise model, lora_low (found by name) on
    the low-noise one; each side equal to core's LoraLoaderModelOnly bit for bit."""
    loader = host.module("nodes.loader")
    high_mp, low_mp = tiny("wan_t2v"), tiny("wan_t2v").clone()
    layout = layout_of(host, high_mp)
    high = save_once(host, "wanpair_char_high_noise.safetensors",
                      fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout, rank=4, seed=5),
                      {"ss_min_timestep": "875", "ss_max_timestep": "1000"})
    low = save_once(host, "wanpair_char_low_noise.safetensors",
                     fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout, rank=4, seed=6),
                     {"ss_min_timestep": "0", "ss_max_timestep": "875"})
    ours_high, ours_low, info = _pair(host, model_high=high_mp, model_low=low_mp, lora_high=high,
                                      lora_low=loader.AUTO_PARTNER, strength_low=0.6)
    core = host.nodes.LoraLoaderModelOnly()
    for ours, mp, name, strength in ((ours_high, high_mp, high, 1.0), (ours_low, low_mp, low, 0.6)):
        a, b = loaded_weights(core.load_lora_model_only(mp, name, strength)[0]), loaded_weights(ours)
        assert [k for k in a if not torch.equal(a[k], b[k])] == []
    sides = info.split("\n\n")
    assert sides[0].startswith("[high noise] ") and high in sides[0] and "not applied" not in sides[0], info
    assert sides[1].startswith("[low noise] ") and low in sides[1] and "not applied" not in sides[1], info
    assert len(sides) == 2  # no warning: the files' timesteps agree with their slots


def test_wan22_pair_says_when_a_file_looks_swapped_and_refuses_what_cannot_pair(host, tiny):
    loader = host.module("nodes.loader")
    errors = host.module("loralab.errors")
    mp = tiny("wan_t2v")
    plain, _ = _fitted(host, mp, "musubi_wan21_t2v_14b_lora", seed=7)
    high_trained = save_once(host, "wanpair_swapped_LOW.safetensors",
                              fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout_of(host, mp), rank=4, seed=8),
                              {"ss_min_timestep": "900", "ss_max_timestep": "1000"})
    *_, info = _pair(host, model_high=mp, model_low=mp.clone(), lora_high=plain, lora_low=high_trained)
    assert info.split("\n\n")[0] == ("check the pair: lora_low looks like a high-noise LoRA (trained on timesteps "
                                      "900-1000 (ss_min_timestep)); swap lora_high and lora_low if so"), info
    with pytest.raises(errors.LoRALabError, match="no low-noise partner"):
        _pair(host, model_high=mp, model_low=mp.clone(), lora_high=plain, lora_low=loader.AUTO_PARTNER)
    with pytest.raises(errors.LoRALabError, match="the two models differ"):
        _pair(host, model_high=mp, model_low=tiny("qwen"), lora_high=plain, lora_low=plain)
