"""Wan 2.1/2.2 and Qwen-Image in the real ComfyUI: our generated layouts equal ComfyUI's own model
classes (meta device), every name ComfyUI's key map knows resolves to the same key, and on tiny
models built with ComfyUI's classes our loader equals core's LoraLoader bit for bit where core
loads the file, applies what core drops (diffusers/PEFT Wan) as the math says, and a block spec
changes exactly the keys of its blocks."""
import os

import pytest
import torch

from host import train_kit
from loralab.files.safetensors import save_tensors
from loralab_testkit import fit_fixture_to_layout, fixture

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


def _model(cls_name, cfg, device=None):
    import comfy.supported_models as sm
    mc = getattr(sm, cls_name)(dict(cfg))
    mc.set_inference_dtype(torch.float32, None)
    if device == "meta":
        with torch.device("meta"):
            return mc.get_model({}, "")
    return mc.get_model({}, "")


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_layout_equals_comfyui_model_class(host, arch_id):
    layouts = host.module("loralab.layouts")
    model = _model(RELEASED[arch_id], layouts.STANDARD_CONFIGS[arch_id], "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == dict(layouts.layout_for(arch_id).shapes)


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_comfy_lora_names_resolve_to_the_same_keys_and_host_map_matches(host, arch_id):
    import comfy.lora
    layouts = host.module("loralab.layouts")
    canonical = host.module("loralab.formats.canonical")
    host_keys = host.module("loralab.formats.host_keys")
    model = _model(RELEASED[arch_id], layouts.STANDARD_CONFIGS[arch_id], "meta")
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
    import comfy.model_management as mm
    import comfy.model_patcher
    built = {}

    def get(variant):
        if variant not in built:
            model = _model(*TINY[variant])
            g = torch.Generator().manual_seed(0)
            sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.diffusion_model.state_dict().items()}
            model.diffusion_model.load_state_dict(sd, strict=True)
            built[variant] = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                              offload_device=mm.unet_offload_device())
        return built[variant]
    return get


def _layout(host, mp):
    return host.module("nodes.host.models").model_layout(mp)


def _fitted(host, mp, name, seed=0):
    tensors = fit_fixture_to_layout(name, _layout(host, mp), rank=4, seed=seed)
    file_name = f"wanqwen_{name}_{seed}_{len(tensors)}.safetensors"
    path = os.path.join(host.folder("loras"), file_name)
    if not os.path.exists(path):
        save_tensors(path, tensors, fixture("loras", name).get("metadata", {}))
    return file_name, tensors


def _ours(host, mp, file_name, sm=1.0, spec=""):
    return host.module("nodes.loader").apply_lora(mp, None, file_name, sm, 1.0, spec, 1.0, 1.0, 0, ("test", 0))


def _loaded(patcher):
    import comfy.model_management
    with torch.no_grad():
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items()}


def _deltas(host, tensors, layout):
    """(model key, block, ΔW in float64) for every entry, from the engine's adapter math."""
    lora = host.module("loralab.lora").Lora.from_state_dict(tensors, {}, layout)
    block_of = host.module("loralab.blocks.map").block_of
    out = []
    for m in lora.mapped():
        shape = layout.shapes[m.target.key]
        out.append((m.target.key, block_of(m.target.key, layout.arch.family),
                    lora.adapter(m.entry).delta_flat(torch.float64).reshape(shape)))
    return out


def _assert_changed_by(base, patched, deltas, weight_of):
    expected = {}
    for key, block, d in deltas:
        if weight_of(block):
            expected[key] = expected.get(key, 0) + weight_of(block) * d
    assert expected
    for k, v in base.items():
        if k in expected:
            err = float((patched[k].double() - v.double() - expected[k]).abs().max())
            assert err <= 2e-6 * max(1.0, float(v.abs().max())), f"{k}: off by {err}"
        else:
            assert torch.equal(patched[k], v), f"{k} changed but is not in a weighted block"


CORE_LOADS = [("musubi_wan21_t2v_14b_lora", "wan_t2v"), ("diffusion_pipe_wan21_i2v_14b_lora", "wan_i2v"),
              ("musubi_wan21_t2v_14b_lora", "wan22_5b"), ("musubi_qwen_image_lora", "qwen"),
              ("diffusers_peft_qwen_image_lora", "qwen")]


@pytest.mark.parametrize("name,variant", CORE_LOADS)
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, variant):
    mp = tiny(variant)
    file_name, tensors = _fitted(host, mp, name)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 0.7)[0]
    ours, _, info = _ours(host, mp, file_name, sm=0.7)
    assert core.patches.keys() == ours.patches.keys() and len(ours.patches) >= 16
    assert "not applied" not in info
    a, b = _loaded(core), _loaded(ours)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("name,variant", [("diffusers_peft_wan21_t2v_14b_lora", "wan_t2v"),
                                          ("peft_default_wan21_t2v_1_3b_lora", "wan_t2v")])
def test_diffusers_peft_wan_core_drops_is_applied_as_the_math_says(host, tiny, name, variant):
    mp = tiny(variant)
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=1)
    base = _loaded(mp)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0]
    assert not core.patches  # ComfyUI 0.3.64 has no diffusers names for Wan (#6673, #6531)
    ours, _, info = _ours(host, mp, file_name, sm=0.8)
    assert "not applied" not in info
    _assert_changed_by(base, _loaded(ours), _deltas(host, tensors, layout), lambda b: 0.8)


@pytest.mark.parametrize("name,variant", [("musubi_wan21_t2v_14b_lora", "wan_t2v"), ("musubi_qwen_image_lora", "qwen")])
def test_block_spec_changes_exactly_the_named_blocks(host, tiny, name, variant):
    mp = tiny(variant)
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=2)
    base = _loaded(mp)
    deltas = _deltas(host, tensors, layout)
    assert sorted({b for _, b, _ in deltas}) == ["B00", "B01", "B02", "B03"]
    ours, _, info = _ours(host, mp, file_name, sm=1.5, spec="B01=0.6, B03=0.2, default=0")
    weights = {"B01": 1.5 * 0.6, "B03": 1.5 * 0.2}
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: weights.get(b, 0.0))
    ours, _, info = _ours(host, mp, file_name, spec="B02=0")
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: 0.0 if b == "B02" else 1.0)


def test_i2v_lora_on_t2v_model_applies_what_fits_and_lists_the_image_attention(host, tiny):
    """ComfyUI #10222: k_img/v_img of an I2V LoRA on a T2V model; core warns, we say which and why."""
    mp = tiny("wan_t2v")
    i2v_tensors = fit_fixture_to_layout("diffusion_pipe_wan21_i2v_14b_lora", _layout(host, tiny("wan_i2v")), rank=4)
    file_name = "wanqwen_i2v_on_t2v.safetensors"
    path = os.path.join(host.folder("loras"), file_name)
    if not os.path.exists(path):
        save_tensors(path, i2v_tensors, {"format": "pt"})
    layout = _layout(host, mp)
    fits = {k: v for k, v in i2v_tensors.items() if "_img." not in k}
    base = _loaded(mp)
    ours, _, info = _ours(host, mp, file_name)
    _assert_changed_by(base, _loaded(ours), _deltas(host, fits, layout), lambda b: 1.0)
    reasons = [line for line in info.splitlines() if " × " in line]  # one line per reason, counted
    assert len(reasons) == 1 and reasons[0].startswith("  8 × image cross-attention of Wan I2V (a T2V model has "
                                                       "none), e.g. ") and "_img" in reasons[0], info
    assert "\nlikely cause: an I2V LoRA on a T2V model: " in info and "\nfix: load a Wan I2V model for all of it" in info



def _save_once(host, name, tensors, metadata):
    path = os.path.join(host.folder("loras"), name)
    if not os.path.exists(path):
        save_tensors(path, tensors, metadata)
    return name


def _pair(host, **inputs):
    defaults = dict(strength_high=1.0, strength_low=1.0, block_weights="", a=1.0, b=1.0, seed=0)
    return host.call_node("LoRALabWanPair", **{**defaults, **inputs})


def test_wan22_pair_applies_each_file_to_its_expert_as_core_does(host, tiny):
    """Wan 2.2 A14B: one pair node, lora_high on the high-noise model, lora_low (found by name) on
    the low-noise one; each side equal to core's LoraLoaderModelOnly bit for bit."""
    loader = host.module("nodes.loader")
    high_mp, low_mp = tiny("wan_t2v"), tiny("wan_t2v").clone()
    layout = _layout(host, high_mp)
    high = _save_once(host, "wanpair_char_high_noise.safetensors",
                      fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout, rank=4, seed=5),
                      {"ss_min_timestep": "875", "ss_max_timestep": "1000"})
    low = _save_once(host, "wanpair_char_low_noise.safetensors",
                     fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout, rank=4, seed=6),
                     {"ss_min_timestep": "0", "ss_max_timestep": "875"})
    ours_high, ours_low, info = _pair(host, model_high=high_mp, model_low=low_mp, lora_high=high,
                                      lora_low=loader.AUTO_PARTNER, strength_low=0.6)
    core = host.nodes.LoraLoaderModelOnly()
    for ours, mp, name, strength in ((ours_high, high_mp, high, 1.0), (ours_low, low_mp, low, 0.6)):
        a, b = _loaded(core.load_lora_model_only(mp, name, strength)[0]), _loaded(ours)
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
    high_trained = _save_once(host, "wanpair_swapped_LOW.safetensors",
                              fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", _layout(host, mp), rank=4, seed=8),
                              {"ss_min_timestep": "900", "ss_max_timestep": "1000"})
    *_, info = _pair(host, model_high=mp, model_low=mp.clone(), lora_high=plain, lora_low=high_trained)
    assert info.split("\n\n")[0] == ("check the pair: lora_low looks like a high-noise LoRA (trained on timesteps "
                                      "900-1000 (ss_min_timestep)); swap lora_high and lora_low if so"), info
    with pytest.raises(errors.LoRALabError, match="no low-noise partner"):
        _pair(host, model_high=mp, model_low=mp.clone(), lora_high=plain, lora_low=loader.AUTO_PARTNER)
    with pytest.raises(errors.LoRALabError, match="the two models differ"):
        _pair(host, model_high=mp, model_low=tiny("qwen"), lora_high=plain, lora_low=plain)
