"""Wan's variants in the real ComfyUI (VACE, camera, Fun-control, HuMo, S2V, Animate and, on 0.33, causal AR,
Animate 2, FlowRVS, SCAIL, SCAIL 2, WanDancer): each tiny model built with ComfyUI's own class maps to the Wan
arch of its size, its layout is exactly its parameters and our host key emulation equals core's key map;
an ordinary Wan T2V LoRA and a LoRA on the variant's own modules load bit for bit as core's LoraLoader
loads them, and a block spec on VACE's blocks zeroes exactly those; training takes the base models only."""
import pytest
import torch

from host import train_kit
from host.dit_kit import (assert_equals_core, assert_spec_weights, comfy_model,
                          entry_deltas, fitted, layout_of, loaded_weights, save_once, seeded_patcher, tiny_patchers)

_T = train_kit.WAN_MICRO[1]
#: ComfyUI model_config class -> (its config beyond the tiny Wan's, the arch id it maps to)
VARIANTS = {
    "WAN21_FunControl2V": ({"model_type": "i2v", "in_dim": 48}, "wan21_i2v_14b"),
    "WAN21_Camera": ({"model_type": "camera", "in_dim": 32}, "wan21_i2v_14b"),
    "WAN22_Camera": ({"model_type": "camera_2.2", "in_dim": 36}, "wan21_t2v_1_3b"),
    "WAN21_Vace": ({"model_type": "vace", "vace_layers": 2, "vace_in_dim": 96}, "wan21_t2v_1_3b"),
    "WAN21_HuMo": ({"model_type": "humo"}, "wan21_t2v_1_3b"),
    "WAN22_S2V": ({"model_type": "s2v"}, "wan21_t2v_1_3b"),
    "WAN22_Animate": ({"model_type": "animate", "num_layers": 5}, "wan21_i2v_14b"),
    "WAN21_CausalAR_T2V": ({"model_type": "t2v", "causal_ar": True}, "wan21_t2v_1_3b"),
    "WAN_Animate2": ({"model_type": "animate2"}, "wan21_i2v_14b"),
    "WAN21_FlowRVS": ({"model_type": "flow_rvs"}, "wan21_t2v_1_3b"),
    "WAN21_SCAIL": ({"model_type": "scail"}, "wan21_i2v_14b"),
    "WAN21_SCAIL2": ({"model_type": "scail2"}, "wan21_i2v_14b"),
    "WAN22_WanDancer": ({"model_type": "wandancer", "in_dim": 36}, "wan21_i2v_14b"),
}
#: classes whose model has modules beyond the Wan base model (at these tiny sizes)
WITH_OWN_MODULES = ["WAN21_Camera", "WAN22_Camera", "WAN21_Vace", "WAN21_HuMo", "WAN22_S2V", "WAN22_Animate",
                    "WAN21_SCAIL", "WAN21_SCAIL2", "WAN22_WanDancer"]


def _config(cls: str) -> dict:
    import comfy.supported_models as sm
    return {**_T, **getattr(sm, cls).unet_config, **VARIANTS[cls][0]}


@pytest.fixture
def variant(request):
    """The class name, skipped where the running ComfyUI lacks it (0.3.64 has no causal AR, Animate 2,
    FlowRVS, SCAIL or WanDancer)."""
    import comfy.supported_models as sm
    if not hasattr(sm, request.param):
        pytest.skip(f"this ComfyUI has no {request.param}")
    return request.param


@pytest.fixture(scope="module")
def tiny(host):
    """class name -> a seeded ModelPatcher of its tiny model."""
    return tiny_patchers(lambda cls: comfy_model(cls, _config(cls)))


def _base_keys(host, layout) -> set[str]:
    """The keys of the Wan base model of the layout's size (no VACE, no variant modules)."""
    wan_layout = host.module("loralab.layouts.wan").wan_layout
    cfg = {k: v for k, v in layout.config.items() if k not in ("vace_layers", "extra_params")}
    return {"diffusion_model." + k for k in wan_layout(cfg)[0]}


@pytest.mark.parametrize("variant", sorted(VARIANTS), indirect=True)
def test_variant_maps_to_its_size_its_layout_is_its_parameters_and_host_keys_equal_core(host, variant):
    import comfy.lora
    host_keys = host.module("loralab.formats.host_keys")
    models = host.module("nodes.host.models")
    model = comfy_model(variant, _config(variant), "meta")
    mp = type("Patcher", (), {"model": model})()
    assert models.model_arch(mp) == VARIANTS[variant][1]
    layout = models.model_layout(mp)
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert dict(layout.shapes) == real
    assert (set(real) > _base_keys(host, layout)) == (variant in WITH_OWN_MODULES)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    model.diffusion_model.blocks[0].self_attn.q.register_buffer("scale_weight", torch.ones((), device="meta"))
    assert models.model_layout(mp).shapes == layout.shapes  # what quantization adds to a module is no module
    assert host_keys.host_key_map(layout, host_keys.host_rules(host.version)) == {k: (v, None)
                                                                                   for k, v in key_map.items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS), indirect=True)
def test_t2v_lora_equals_core_loraloader_bit_for_bit(host, tiny, variant):
    mp = tiny(variant)
    file_name, _ = fitted(host, mp, "musubi_wan21_t2v_14b_lora", f"wanvar_{variant}")
    assert_equals_core(host, mp, file_name, 16)


def _own_module_lora(host, layout, seed: int) -> dict[str, torch.Tensor]:
    """A kohya LoRA (rank 4; LoCon on convolutions) on every linear and convolution weight of the variant's own
    modules."""
    g = torch.Generator().manual_seed(seed)
    base = _base_keys(host, layout)
    out = {}
    for key, shape in layout.shapes.items():
        if key in base or not key.endswith(".weight") or len(shape) < 2:
            continue
        name = "lora_unet_" + key[len("diffusion_model."):-len(".weight")].replace(".", "_")
        out[name + ".lora_down.weight"] = torch.randn(4, *shape[1:], generator=g) * 0.1
        out[name + ".lora_up.weight"] = torch.randn(shape[0], 4, *(1,) * (len(shape) - 2), generator=g) * 0.1
        out[name + ".alpha"] = torch.tensor(2.0)
    assert out
    return out


@pytest.mark.parametrize("variant", WITH_OWN_MODULES, indirect=True)
def test_lora_on_the_variants_own_modules_equals_core_bit_for_bit(host, tiny, variant):
    mp = tiny(variant)
    tensors = _own_module_lora(host, layout_of(host, mp), seed=3)
    file_name = save_once(host, f"wanvar_own_{variant}_{len(tensors)}.safetensors", tensors, {})
    assert_equals_core(host, mp, file_name, len(tensors) // 3)


def test_block_spec_on_vace_blocks_weights_exactly_those(host, tiny):
    mp = tiny("WAN21_Vace")
    layout = layout_of(host, mp)
    tensors = _own_module_lora(host, layout, seed=4)
    file_name = save_once(host, f"wanvar_vace_blocks_{len(tensors)}.safetensors", tensors, {})
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == ["IN", "V00", "V01"]  # IN: the VACE patch embedding
    base = loaded_weights(mp)
    assert_spec_weights(host, mp, base, file_name, deltas, "V00=0", lambda b: 0.0 if b == "V00" else 1.0)
    assert_spec_weights(host, mp, base, file_name, deltas,
                        "V01=0.4, default=0", lambda b: 0.2 if b == "V01" else 0.0, sm=0.5)


@pytest.mark.parametrize("variant", ["WAN21_Vace", "WAN21_FunControl2V"], indirect=True)
def test_training_refuses_a_variant_and_names_the_base_model_to_load(host, tiny, variant):
    training = host.module("nodes.host.training")
    errors = host.module("loralab.errors")
    with pytest.raises(errors.TrainingError, match=f"Wan base models only, not on {variant}") as e:
        training.model_info(tiny(variant), None)
    assert "load the Wan T2V or I2V model of this size" in e.value.hint
    assert training.model_info(seeded_patcher(comfy_model("WAN21_T2V", _T)), None)["arch"] == "wan21_t2v_1_3b"
