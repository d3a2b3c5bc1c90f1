"""Z-Image in the real ComfyUI (0.33 and later; 0.3.64 has no ZImage class and skips): our generated
layout equals ComfyUI's own ZImage model class (meta device), every name ComfyUI's key map loads
resolves to the same weight and rows, and on a tiny model built with ComfyUI's class our loader
equals core's LoraLoader bit for bit where core loads the file, applies the musubi-tuner attention
core drops as the math says, and a block spec changes exactly its blocks (layers and refiners)."""
import os

import pytest
import torch

from loralab.files.safetensors import save_tensors
from loralab_testkit import fit_fixture_to_layout, fixture

#: a tiny Z-Image: ComfyUI's ZImage class at a small width and depth (head dim 32)
_TINY = {"dim": 64, "n_heads": 2, "n_kv_heads": 2, "n_layers": 2, "cap_feat_dim": 48, "axes_dims": [8, 12, 12]}


@pytest.fixture(scope="module")
def sm(host):
    import comfy.supported_models as sm
    if not hasattr(sm, "ZImage"):
        pytest.skip(f"ComfyUI {host.version} has no Z-Image model config (comfy.supported_models.ZImage)")
    return sm


def _model(sm, cfg, device=None):
    mc = sm.ZImage(dict(cfg))
    mc.set_inference_dtype(torch.float32, None)
    if device == "meta":
        with torch.device("meta"):
            return mc.get_model({}, "", device=torch.device("meta"))
    return mc.get_model({}, "")


@pytest.mark.parametrize("extra", [{}, {"siglip_feat_dim": 1152}], ids=["released", "with_siglip"])
def test_layout_equals_comfyui_model_class(host, sm, extra):
    """The released config, and one with the SigLIP image input ComfyUI's detection reads from a
    ``siglip_embedder`` (its refiner blocks are ``SR``)."""
    layouts = host.module("loralab.layouts")
    cfg = dict(layouts.STANDARD_CONFIGS["z_image"], **extra)
    model = _model(sm, cfg, "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    layout = layouts.ModelLayout.from_config("z_image", cfg)
    assert real == dict(layout.shapes)
    assert ("SR01" in host.module("loralab.blocks.map").layout_blocks(layout)) == bool(extra)


def test_every_name_comfy_loads_resolves_to_the_same_weight_and_rows(host, sm):
    import comfy.lora
    layouts = host.module("loralab.layouts")
    canonical = host.module("loralab.formats.canonical")
    model = _model(sm, layouts.STANDARD_CONFIGS["z_image"], "meta")
    layout = layouts.layout_for("z_image")
    checked = 0
    for name, target in comfy.lora.model_lora_keys_unet(model, {}).items():
        key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        if key not in layout.shapes or not key.endswith(".weight"):
            continue  # a bias Z-Image lacks (attention.to_out.0.bias): core patches nothing
        res = canonical.resolve_module(name, layout)
        assert res is not None and layout.key_for(res, "weight") == key, name
        assert res.rows == (None if offset is None else (offset[1], offset[2])), name
        checked += 1
    assert checked > 1000


@pytest.fixture(scope="module")
def tiny(host, sm):
    """A ModelPatcher of the tiny Z-Image, seeded random weights."""
    import comfy.model_management as mm
    import comfy.model_patcher
    model = _model(sm, dict(host.module("loralab.layouts").STANDARD_CONFIGS["z_image"], **_TINY))
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.diffusion_model.state_dict().items()}
    model.diffusion_model.load_state_dict(sd, strict=True)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def _layout(host, mp):
    return host.module("nodes.host.models").model_layout(mp)


def _fitted(host, mp, name, seed=0):
    tensors = fit_fixture_to_layout(name, _layout(host, mp), rank=4, seed=seed)
    file_name = f"zimage_{name}_{seed}_{len(tensors)}.safetensors"
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
    """(model key, block, ΔW of the whole weight in float64) for every entry, from the engine's
    adapter math, q/k/v placed in their rows of the fused qkv."""
    lora = host.module("loralab.lora").Lora.from_state_dict(tensors, {}, layout)
    block_of = host.module("loralab.blocks.map").block_of
    out = []
    for m in lora.mapped():
        shape = layout.shapes[m.target.key]
        full = torch.zeros(shape, dtype=torch.float64)
        start, count = m.target.rows or (0, shape[0])
        full[start:start + count] = lora.adapter(m.entry).delta_flat(torch.float64).reshape(count, *shape[1:])
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


@pytest.mark.parametrize("name", ["aitoolkit_z_image_lora", "musubi_comfy_z_image_lora"])
def test_equals_core_loraloader_bit_for_bit(host, tiny, name):
    file_name, _ = _fitted(host, tiny, name)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(tiny, file_name, 0.7)[0]
    ours, _, info = _ours(host, tiny, file_name, sm=0.7)
    assert core.patches.keys() == ours.patches.keys() and len(ours.patches) >= 8
    assert "not applied" not in info
    a, b = _loaded(core), _loaded(ours)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_musubi_attention_core_drops_is_applied_as_the_math_says(host, tiny):
    """musubi-tuner writes Z-Image's attention under diffusers names (lora_unet_layers_N_attention_to_q);
    core loads only the feed-forward part, we apply all of it, q/k/v into their rows of qkv."""
    layout = _layout(host, tiny)
    file_name, tensors = _fitted(host, tiny, "musubi_z_image_lora", seed=1)
    base = _loaded(tiny)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(tiny, file_name, 1.0)[0]
    assert {k.rsplit(".", 2)[1] for k in core.patches} == {"w1", "w2", "w3"}
    ours, _, info = _ours(host, tiny, file_name, sm=0.8)
    assert "not applied" not in info
    deltas = _deltas(host, tensors, layout)
    assert any(k.endswith("attention.qkv.weight") for k, _, _ in deltas)
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: 0.8)


def test_block_spec_changes_exactly_the_named_blocks(host, tiny):
    layout = _layout(host, tiny)
    file_name, tensors = _fitted(host, tiny, "aitoolkit_z_image_lora", seed=2)
    base = _loaded(tiny)
    deltas = _deltas(host, tensors, layout)
    assert sorted({b for _, b, _ in deltas}) == ["L00", "L01"]
    ours, _, info = _ours(host, tiny, file_name, sm=1.5, spec="L01=0.6, default=0")
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: 1.5 * 0.6 if b == "L01" else 0.0)


def test_raw_peft_state_dict_core_drops_is_applied_as_the_math_says(host, tiny):
    """Every Linear of diffusers' ZImageTransformer2DModel under PEFT's base_model.model. wrapper with
    .default adapters (refiners, embedders and final layer included): core loads none of it, we apply
    all of it, q/k/v into their rows of qkv; a spec weights the refiners apart from the layers."""
    layout = _layout(host, tiny)
    file_name, tensors = _fitted(host, tiny, "peft_default_z_image_lora", seed=3)
    base = _loaded(tiny)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(tiny, file_name, 1.0)[0]
    assert not core.patches
    deltas = _deltas(host, tensors, layout)
    assert sorted({b for _, b, _ in deltas}) == ["CR00", "CR01", "IN", "L00", "L01", "NR00", "NR01", "OUT"]
    ours, _, info = _ours(host, tiny, file_name, sm=0.8)
    assert "not applied" not in info
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: 0.8)
    ours, _, info = _ours(host, tiny, file_name, spec="NR=0.5, CR=0, L=0")
    _assert_changed_by(base, _loaded(ours), deltas, lambda b: {"NR00": 0.5, "NR01": 0.5, "IN": 1.0, "OUT": 1.0}.get(b, 0.0))
