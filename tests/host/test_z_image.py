"""Z-Image in the real ComfyUI (0.33 and later; 0.3.64 has no ZImage class and skips): our generated
layout equals ComfyUI's own ZImage model class (meta device), every name ComfyUI's key map loads
resolves to the same weight and rows, and on a tiny model built with ComfyUI's class our loader
equals core's LoraLoader bit for bit where core loads the file, applies the musubi-tuner attention
core drops as the math says, and a block spec changes exactly its blocks (layers and refiners)."""
import pytest

from host.dit_kit import (apply_ours, assert_changed_by, assert_equals_core, assert_spec_weights, comfy_model,
                          entry_deltas, fitted, layout_of, loaded_weights, seeded_patcher)

#: a tiny Z-Image: ComfyUI's ZImage class at a small width and depth (head dim 32)
_TINY = {"dim": 64, "n_heads": 2, "n_kv_heads": 2, "n_layers": 2, "cap_feat_dim": 48, "axes_dims": [8, 12, 12]}


@pytest.fixture(scope="module")
def sm(host):
    import comfy.supported_models as sm
    if not hasattr(sm, "ZImage"):
        pytest.skip(f"ComfyUI {host.version} has no Z-Image model config (comfy.supported_models.ZImage)")
    return sm


@pytest.mark.parametrize("extra", [{}, {"siglip_feat_dim": 1152}], ids=["released", "with_siglip"])
def test_layout_equals_comfyui_model_class(host, sm, extra):
    """The released config, and one with the SigLIP image input ComfyUI's detection reads from a
    ``siglip_embedder`` (its refiner blocks are ``SR``)."""
    layouts = host.module("loralab.layouts")
    cfg = dict(layouts.STANDARD_CONFIGS["z_image"], **extra)
    model = comfy_model("ZImage", cfg, "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    layout = layouts.ModelLayout.from_config("z_image", cfg)
    assert real == dict(layout.shapes)
    assert ("SR01" in host.module("loralab.blocks.map").layout_blocks(layout)) == bool(extra)


def test_every_name_comfy_loads_resolves_to_the_same_weight_and_rows(host, sm):
    import comfy.lora
    layouts = host.module("loralab.layouts")
    canonical = host.module("loralab.formats.canonical")
    model = comfy_model("ZImage", layouts.STANDARD_CONFIGS["z_image"], "meta")
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
    configs = host.module("loralab.layouts").STANDARD_CONFIGS
    return seeded_patcher(comfy_model("ZImage", dict(configs["z_image"], **_TINY)))


def _fitted(host, mp, name, seed=0):
    return fitted(host, mp, name, "zimage", seed)


@pytest.mark.parametrize("name", ["aitoolkit_z_image_lora", "musubi_comfy_z_image_lora"])
def test_equals_core_loraloader_bit_for_bit(host, tiny, name):
    file_name, _ = _fitted(host, tiny, name)
    assert_equals_core(host, tiny, file_name, 8)


def test_musubi_attention_core_drops_is_applied_as_the_math_says(host, tiny):
    """musubi-tuner writes Z-Image's attention under diffusers names (lora_unet_layers_N_attention_to_q);
    core loads only the feed-forward part, we apply all of it, q/k/v into their rows of qkv."""
    layout = layout_of(host, tiny)
    file_name, tensors = _fitted(host, tiny, "musubi_z_image_lora", seed=1)
    base = loaded_weights(tiny)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(tiny, file_name, 1.0)[0]
    assert {k.rsplit(".", 2)[1] for k in core.patches} == {"w1", "w2", "w3"}
    ours, _, info = apply_ours(host, tiny, file_name, sm=0.8)
    assert "not applied" not in info
    deltas = entry_deltas(host, tensors, layout)
    assert any(d.key.endswith("attention.qkv.weight") for d in deltas)
    assert_changed_by(base, loaded_weights(ours), deltas, lambda b: 0.8)


def test_block_spec_changes_exactly_the_named_blocks(host, tiny):
    layout = layout_of(host, tiny)
    file_name, tensors = _fitted(host, tiny, "aitoolkit_z_image_lora", seed=2)
    base = loaded_weights(tiny)
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == ["L00", "L01"]
    assert_spec_weights(host, tiny, base, file_name, deltas,
                        "L01=0.6, default=0", lambda b: 1.5 * 0.6 if b == "L01" else 0.0, sm=1.5)


def test_raw_peft_state_dict_core_drops_is_applied_as_the_math_says(host, tiny):
    """Every Linear of diffusers' ZImageTransformer2DModel under PEFT's base_model.model. wrapper with
    .default adapters (refiners, embedders and final layer included): core loads none of it, we apply
    all of it, q/k/v into their rows of qkv; a spec weights the refiners apart from the layers."""
    layout = layout_of(host, tiny)
    file_name, tensors = _fitted(host, tiny, "peft_default_z_image_lora", seed=3)
    base = loaded_weights(tiny)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(tiny, file_name, 1.0)[0]
    assert not core.patches
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == ["CR00", "CR01", "IN", "L00", "L01", "NR00", "NR01", "OUT"]
    ours, _, info = apply_ours(host, tiny, file_name, sm=0.8)
    assert "not applied" not in info
    assert_changed_by(base, loaded_weights(ours), deltas, lambda b: 0.8)
    assert_spec_weights(host, tiny, base, file_name, deltas,
                        "NR=0.5, CR=0, L=0", lambda b: {"NR00": 0.5, "NR01": 0.5, "IN": 1.0, "OUT": 1.0}.get(b, 0.0))
