"""Flux.2 (dev, Klein 4B and 9B) in the real ComfyUI (0.33 and later; 0.3.64 has no Flux2 class and
skips): our generated layouts equal ComfyUI's own Flux2 model class (meta device), every name
ComfyUI's key map loads resolves to the same weight and rows, and on tiny models built with
ComfyUI's classes our loader equals core's LoraLoader bit for bit where core loads the file, applies
what core drops (a raw PEFT state dict, Flux.2's own diffusers names of its embedders and shared
modulation) as the math says, a block spec changes exactly its blocks, and a Flux.1 LoRA on a
Flux.2 model is refused as the wrong architecture."""
import pytest

from host.dit_kit import (apply_ours, assert_changed_by, assert_equals_core, assert_spec_weights, comfy_model,
                          entry_deltas, fitted, layout_of, loaded_weights, save_once, tiny_patchers)
from loralab_testkit import fixture, fixture_tensors

RELEASED = ("flux2_dev", "flux2_klein_4b", "flux2_klein_9b")
#: tiny variant -> unet_config: ComfyUI's Flux2 class at small widths and depths (head dim 64)
_TINY = {"hidden_size": 128, "num_heads": 2, "axes_dim": [16, 16, 16, 16], "depth": 2, "depth_single_blocks": 2,
         "context_in_dim": 48, "in_channels": 8, "out_channels": 8}
TINY = {"dev": ("flux2_dev", True), "klein": ("flux2_klein_4b", False)}


@pytest.fixture(scope="module")
def sm(host):
    import comfy.supported_models as sm
    if not hasattr(sm, "Flux2"):
        pytest.skip(f"ComfyUI {host.version} has no Flux.2 model config (comfy.supported_models.Flux2)")
    return sm


def _host_layout(host, arch_id):
    rules = host.module("loralab.formats.host_keys").host_rules(host.version)
    return host.module("loralab.layouts").layout_for(arch_id).with_norm_param(rules.flux_norm_param)


@pytest.mark.parametrize("arch_id", RELEASED)
def test_layout_equals_comfyui_model_class(host, sm, arch_id):
    model = comfy_model("Flux2", host.module("loralab.layouts").STANDARD_CONFIGS[arch_id], "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == dict(_host_layout(host, arch_id).shapes)


@pytest.mark.parametrize("arch_id", RELEASED)
def test_every_name_comfy_loads_resolves_to_the_same_weight_and_rows(host, sm, arch_id):
    import comfy.lora
    canonical = host.module("loralab.formats.canonical")
    model = comfy_model("Flux2", host.module("loralab.layouts").STANDARD_CONFIGS[arch_id], "meta")
    layout = _host_layout(host, arch_id)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    checked = 0
    for name, target in key_map.items():
        key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        if key not in layout.shapes or not key.endswith(".weight"):
            continue  # a Flux.1 name of a weight Flux.2 lacks (norm1.linear, biases): core patches nothing
        res = canonical.resolve_module(name, layout)
        assert res is not None and layout.key_for(res, "weight") == key, name
        rows = None if offset is None or (offset[1], offset[2]) == (0, layout.shapes[key][0]) else (offset[1], offset[2])
        assert res.rows == rows, name
        assert res.swap_halves == (isinstance(target, tuple) and len(target) > 2), name
        checked += 1
    assert checked > 100


@pytest.fixture(scope="module")
def tiny(host, sm):
    """variant -> a ModelPatcher of the tiny Flux.2 model, seeded random weights."""
    configs = host.module("loralab.layouts").STANDARD_CONFIGS

    def build(variant):
        arch_id, guidance = TINY[variant]
        return comfy_model("Flux2", dict(configs[arch_id], **_TINY, guidance_embed=guidance))
    return tiny_patchers(build)


def _fitted(host, mp, name, seed=0):
    return fitted(host, mp, name, "flux2", seed)


CORE_LOADS = [("aitoolkit_flux2_klein_4b_lora", "klein"), ("musubi_flux2_klein_4b_lora", "klein"),
              ("diffusers_peft_flux2_dev_lora", "dev"), ("aitoolkit_flux2_klein_4b_lora", "dev")]


@pytest.mark.parametrize("name,variant", CORE_LOADS)
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, variant):
    mp = tiny(variant)
    file_name, _ = _fitted(host, mp, name)
    assert_equals_core(host, mp, file_name, 8)


@pytest.mark.parametrize("variant", ["klein", "dev"])
def test_raw_peft_state_dict_core_drops_is_applied_as_the_math_says(host, tiny, variant):
    """Every Linear of diffusers' Flux2Transformer2DModel under PEFT's base_model.model. wrapper
    with .default adapters: core loads none of it (nor has it the diffusers names of the embedders
    and the shared modulation); we apply all of it, q/k/v into their rows, norm_out's halves swapped."""
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, "peft_default_flux2_klein_9b_lora", seed=1)
    base = loaded_weights(mp)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0]
    assert not core.patches
    ours, _, info = apply_ours(host, mp, file_name, sm=0.8)
    assert "not applied" not in info
    deltas = entry_deltas(host, tensors, layout)
    touched = {d.key for d in deltas}
    assert {"diffusion_model.double_stream_modulation_img.lin.weight", "diffusion_model.single_stream_modulation.lin.weight",
            "diffusion_model.time_in.in_layer.weight", "diffusion_model.final_layer.adaLN_modulation.1.weight"} <= touched
    assert_changed_by(base, loaded_weights(ours), deltas, lambda b: 0.8)


def test_block_spec_changes_exactly_the_named_blocks(host, tiny):
    mp = tiny("klein")
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, "peft_default_flux2_klein_9b_lora", seed=2)
    base = loaded_weights(mp)
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == ["D00", "D01", "IN", "OUT", "S00", "S01"]
    weights = {"D01": 1.5 * 0.6, "S00": 1.5 * 0.2, "IN": 1.5 * 0.5}
    assert_spec_weights(host, mp, base, file_name, deltas,
                        "D01=0.6, S00=0.2, IN=0.5, default=0", lambda b: weights.get(b, 0.0), sm=1.5)


def test_flux1_lora_on_a_flux2_model_is_the_wrong_architecture(host, tiny):
    """A Flux.1 LoRA shares Flux.2's key names (double_blocks.N.img_attn.qkv...): it is refused by
    its fit to the released models, not applied where a name happens to match."""
    mp = tiny("klein")
    file_name = save_once(host, "flux2_kohya_flux1_lora.safetensors", fixture_tensors("kohya_flux_lora", rank=1),
                           fixture("loras", "kohya_flux_lora").get("metadata", {}))
    ours, _, info = apply_ours(host, mp, file_name)
    assert not ours.patches
    assert info.startswith("nothing applied: a Flux.1 LoRA on a Flux.2 Klein 4B model\n"
                           "fix: pick a LoRA made for Flux.2 Klein 4B, or load a Flux.1 model"), info
