"""Flux.2 (dev, Klein 4B and 9B) in the real ComfyUI (0.33 and later; 0.3.64 has no Flux2 class and
skips): our generated layouts equal ComfyUI's own Flux2 model class (meta device), every name
ComfyUI's key map loads resolves to the same weight and rows, and on tiny models built with
ComfyUI's classes our loader equals core's LoraLoader bit for bit where core loads the file, applies
what core drops (a raw PEFT state dict, Flux.2's own diffusers names of its embedders and shared
modulation) as the math says, a block spec changes exactly its blocks, and a Flux.1 LoRA on a
Flux.2 model is refused as the wrong architecture."""
import os

import pytest
import torch

from loralab.files.safetensors import save_tensors
from loralab_testkit import fit_fixture_to_layout, fixture, fixture_tensors

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


def _model(sm, cfg, device=None):
    mc = sm.Flux2(dict(cfg))
    mc.set_inference_dtype(torch.float32, None)
    if device == "meta":
        with torch.device("meta"):
            return mc.get_model({}, "", device=torch.device("meta"))
    return mc.get_model({}, "")


def _host_layout(host, arch_id):
    rules = host.module("loralab.formats.host_keys").host_rules(host.version)
    return host.module("loralab.layouts").layout_for(arch_id).with_norm_param(rules.flux_norm_param)


@pytest.mark.parametrize("arch_id", RELEASED)
def test_layout_equals_comfyui_model_class(host, sm, arch_id):
    model = _model(sm, host.module("loralab.layouts").STANDARD_CONFIGS[arch_id], "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == dict(_host_layout(host, arch_id).shapes)


@pytest.mark.parametrize("arch_id", RELEASED)
def test_every_name_comfy_loads_resolves_to_the_same_weight_and_rows(host, sm, arch_id):
    import comfy.lora
    canonical = host.module("loralab.formats.canonical")
    model = _model(sm, host.module("loralab.layouts").STANDARD_CONFIGS[arch_id], "meta")
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
    import comfy.model_management as mm
    import comfy.model_patcher
    configs = host.module("loralab.layouts").STANDARD_CONFIGS
    built = {}

    def get(variant):
        if variant not in built:
            arch_id, guidance = TINY[variant]
            model = _model(sm, dict(configs[arch_id], **_TINY, guidance_embed=guidance))
            g = torch.Generator().manual_seed(0)
            sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.diffusion_model.state_dict().items()}
            model.diffusion_model.load_state_dict(sd, strict=True)
            built[variant] = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                              offload_device=mm.unet_offload_device())
        return built[variant]
    return get


def _layout(host, mp):
    return host.module("nodes.host.models").model_layout(mp)


def _save_once(host, name, tensors, metadata):
    path = os.path.join(host.folder("loras"), name)
    if not os.path.exists(path):
        save_tensors(path, tensors, metadata)
    return name


def _fitted(host, mp, name, seed=0):
    tensors = fit_fixture_to_layout(name, _layout(host, mp), rank=4, seed=seed)
    file_name = f"flux2_{name}_{seed}_{len(tensors)}.safetensors"
    return _save_once(host, file_name, tensors, fixture("loras", name).get("metadata", {})), tensors


def _ours(host, mp, file_name, sm=1.0, spec=""):
    return host.module("nodes.loader").apply_lora(mp, None, file_name, sm, 1.0, spec, 1.0, 1.0, 0, ("test", 0))


def _loaded(patcher):
    import comfy.model_management
    with torch.no_grad():
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items()}


def _deltas(host, tensors, layout):
    """(model key, block, ΔW of the whole weight in float64) for every entry, from the engine's
    adapter math: placed in its rows of a fused weight, halves swapped where diffusers orders them."""
    lora = host.module("loralab.lora").Lora.from_state_dict(tensors, {}, layout)
    block_of = host.module("loralab.blocks.map").block_of
    out = []
    for m in lora.mapped():
        shape = layout.shapes[m.target.key]
        full = torch.zeros(shape, dtype=torch.float64)
        start, count = m.target.rows or (0, shape[0])
        part = lora.adapter(m.entry).delta_flat(torch.float64).reshape(count, *shape[1:])
        if m.target.swap_halves:
            part = torch.cat(part.chunk(2, dim=0)[::-1])
        full[start:start + count] = part
        out.append((m.target.key, block_of(m.target.key, layout.arch.family), full))
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


CORE_LOADS = [("aitoolkit_flux2_klein_4b_lora", "klein"), ("musubi_flux2_klein_4b_lora", "klein"),
              ("diffusers_peft_flux2_dev_lora", "dev"), ("aitoolkit_flux2_klein_4b_lora", "dev")]


@pytest.mark.parametrize("name,variant", CORE_LOADS)
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, variant):
    mp = tiny(variant)
    file_name, _ = _fitted(host, mp, name)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 0.7)[0]
    ours, _, info = _ours(host, mp, file_name, sm=0.7)
    assert core.patches.keys() == ours.patches.keys() and len(ours.patches) >= 8
    assert "not applied" not in info
    a, b = _loaded(core), _loaded(ours)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("variant", ["klein", "dev"])
def test_raw_peft_state_dict_core_drops_is_applied_as_the_math_says(host, tiny, variant):
    """Every Linear of diffusers' Flux2Transformer2DModel under PEFT's base_model.model. wrapper
    with .default adapters: core loads none of it (nor has it the diffusers names of the embedders
    and the shared modulation); we apply all of it, q/k/v into their rows, norm_out's halves swapped."""
    mp = tiny(variant)
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, "peft_default_flux2_klein_9b_lora", seed=1)
    base = _loaded(mp)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0]
    assert not core.patches
    ours, _, info = _ours(host, mp, file_name, sm=0.8)
    assert "not applied" not in info
    deltas = _deltas(host, tensors, layout)
    touched = {k for k, _, _ in deltas}
    assert {"diffusion_model.double_stream_modulation_img.lin.weight", "diffusion_model.single_stream_modulation.lin.weight",
            "diffusion_model.time_in.in_layer.weight", "diffusion_model.final_layer.adaLN_modulation.1.weight"} <= touched
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: 0.8)


def test_block_spec_changes_exactly_the_named_blocks(host, tiny):
    mp = tiny("klein")
    layout = _layout(host, mp)
    file_name, tensors = _fitted(host, mp, "peft_default_flux2_klein_9b_lora", seed=2)
    base = _loaded(mp)
    deltas = _deltas(host, tensors, layout)
    assert sorted({b for _, b, _ in deltas}) == ["D00", "D01", "IN", "OUT", "S00", "S01"]
    ours, _, info = _ours(host, mp, file_name, sm=1.5, spec="D01=0.6, S00=0.2, IN=0.5, default=0")
    weights = {"D01": 1.5 * 0.6, "S00": 1.5 * 0.2, "IN": 1.5 * 0.5}
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: weights.get(b, 0.0))


def test_flux1_lora_on_a_flux2_model_is_the_wrong_architecture(host, tiny):
    """A Flux.1 LoRA shares Flux.2's key names (double_blocks.N.img_attn.qkv...): it is refused by
    its fit to the released models, not applied where a name happens to match."""
    mp = tiny("klein")
    file_name = _save_once(host, "flux2_kohya_flux1_lora.safetensors", fixture_tensors("kohya_flux_lora", rank=1),
                           fixture("loras", "kohya_flux_lora").get("metadata", {}))
    ours, _, info = _ours(host, mp, file_name)
    assert not ours.patches
    assert info.startswith("nothing applied: a Flux.1 LoRA on a Flux.2 Klein 4B model\n"
                           "fix: pick a LoRA made for Flux.2 Klein 4B, or load a Flux.1 model"), info
