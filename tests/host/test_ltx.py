"""LTX-Video (ComfyUI's LTXV, both hosts) and LTX-2 (LTXAV, 0.33 and later; 0.3.64 has no LTXAV class and
skips) in the real ComfyUI: our generated layouts equal ComfyUI's own model classes (meta device), every
name ComfyUI's key map knows resolves to the same weight, and on tiny models built with ComfyUI's classes
our loader equals core's LoraLoader bit for bit where core loads the file, applies LTX-Video-Trainer's
diffusers file (every host) and bare names (0.3.64) core drops as the math says, and a block spec changes exactly its blocks (LTX-2's audio
part of each block apart from its video part)."""
from types import SimpleNamespace

import pytest

from host.dit_kit import (apply_ours, assert_changed_by, assert_equals_core, assert_spec_weights, comfy_model,
                          entry_deltas, fitted, layout_of, loaded_weights, save_once, tiny_patchers)

_LTXV_TINY = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 32, "cross_attention_dim": 64,
              "caption_channels": 48, "in_channels": 16}
_LTX2_TINY = dict(_LTXV_TINY, audio_num_attention_heads=2, audio_attention_head_dim=16, audio_cross_attention_dim=32,
                  audio_in_channels=8, connector_num_attention_heads=2, connector_attention_head_dim=24)
#: arch id -> (ComfyUI model_config class, tiny config on top of the released one)
CLASSES = {"ltxv": ("LTXV", _LTXV_TINY), "ltxv_13b": ("LTXV", None), "ltx2": ("LTXAV", _LTX2_TINY)}


def _needs(host, arch_id):
    import comfy.supported_models as sm
    cls = CLASSES[arch_id][0]
    if not hasattr(sm, cls):
        pytest.skip(f"ComfyUI {host.version} has no {cls} model config (LTX-2 arrived after 0.3.64)")
    return cls


def _standard(host, arch_id):
    return host.module("loralab.layouts").STANDARD_CONFIGS[arch_id]


@pytest.mark.parametrize("arch_id,extra", [
    ("ltxv", {}), ("ltxv_13b", {}), ("ltx2", {}),
    ("ltx2", {"apply_gated_attention": True, "ff_bias": False, "connector_apply_gated_attention": True}),
], ids=["ltxv_2b", "ltxv_13b", "ltx2", "ltx2_gated_no_ff_bias"])
def test_layout_equals_comfyui_model_class(host, arch_id, extra):
    cls = _needs(host, arch_id)
    layouts = host.module("loralab.layouts")
    cfg = dict(_standard(host, arch_id), **extra)
    model = comfy_model(cls, cfg, "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == dict(layouts.ModelLayout.from_config(arch_id, cfg).shapes)
    if not extra:
        assert len(real) == {"ltxv": 715, "ltxv_13b": 1215, "ltx2": 3568}[arch_id]


@pytest.mark.parametrize("arch_id", ["ltxv", "ltx2"])
def test_every_name_comfy_maps_resolves_to_the_same_weight(host, arch_id):
    """0.3.64 maps the generic names only, 0.33 also LTX's own names without a prefix."""
    import comfy.lora
    cls = _needs(host, arch_id)
    canonical = host.module("loralab.formats.canonical")
    layout = host.module("loralab.layouts").layout_for(arch_id)
    key_map = comfy.lora.model_lora_keys_unet(comfy_model(cls, _standard(host, arch_id), "meta"), {})
    checked = 0
    for name, key in key_map.items():
        if not key.endswith(".weight"):
            continue
        res = canonical.resolve_module(name, layout)
        assert res is not None and layout.key_for(res, "weight") == key and res.rows is None, name
        checked += 1
    assert checked > 300
    assert ("transformer_blocks.0.attn1.to_q" in key_map) == (host.version != "0.3.64")
    assert "transformer.transformer_blocks.0.attn1.to_q" not in key_map


@pytest.fixture(scope="module")
def tiny(host):
    """arch id -> a ModelPatcher of the tiny model, seeded random weights."""
    def build(arch_id):
        cls = _needs(host, arch_id)
        return comfy_model(cls, dict(_standard(host, arch_id), **CLASSES[arch_id][1]))
    return tiny_patchers(build)


def test_model_classes_map_to_their_arch(host, tiny):
    models = host.module("nodes.host.models")
    assert models.model_arch(tiny("ltxv")) == "ltxv"
    import comfy.supported_models as sm
    big = SimpleNamespace(model=SimpleNamespace(model_config=sm.LTXV(dict(_standard(host, "ltxv_13b")))))
    assert models.model_arch(big) == "ltxv_13b"  # LTX-Video 13B by its width
    if hasattr(sm, "LTXAV"):  # LTXAV subclasses LTXV: it maps through its own class
        assert models.model_arch(tiny("ltx2")) == "ltx2"
        newer = SimpleNamespace(model=SimpleNamespace(model_config=sm.LTXAV(dict(_standard(host, "ltx2"),
                                                                                  cross_attention_adaln=True))))
        assert models.model_arch(newer) is None  # a release whose prompt AdaLN has no layout here


def _fitted(host, mp, name, seed=0):
    return fitted(host, mp, name, "ltx", seed)


@pytest.mark.parametrize("name,arch_id", [("ltx_video_trainer_comfy_ltxv_lora", "ltxv"),
                                          ("ltx2_trainer_ltx2_lora", "ltx2")])
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, arch_id):
    mp = tiny(arch_id)
    file_name, _ = _fitted(host, mp, name)
    assert_equals_core(host, mp, file_name, 8)


def test_diffusers_file_core_drops_is_applied_as_the_math_says(host, tiny):
    """LTX-Video-Trainer saves diffusers names (``transformer.transformer_blocks.N.attn1.to_q``): core maps no
    ``transformer.`` name for LTXV and drops the file whole; we apply all of it."""
    mp = tiny("ltxv")
    file_name, tensors = _fitted(host, mp, "ltx_video_trainer_ltxv_lora", seed=1)
    base = loaded_weights(mp)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0]
    assert not core.patches
    ours, _, info = apply_ours(host, mp, file_name, sm=0.8)
    assert "not applied" not in info and len(ours.patches) == 16
    assert_changed_by(base, loaded_weights(ours), entry_deltas(host, tensors, layout_of(host, mp)), lambda b: 0.8)


def test_bare_names_core_maps_on_033_only_are_applied_on_every_host(host, tiny):
    """ComfyUI 0.33 maps LTX's own names without a prefix (``transformer_blocks.0.attn1.to_q``), 0.3.64 drops
    such a file whole: we apply it on both, bit for bit 0.33's core."""
    mp = tiny("ltxv")
    _, tensors = _fitted(host, mp, "ltx_video_trainer_comfy_ltxv_lora", seed=3)
    bare = {k[len("diffusion_model."):]: v for k, v in tensors.items()}
    file_name = save_once(host, f"ltx_bare_names_{len(bare)}.safetensors", bare, {})
    if host.version != "0.3.64":
        assert_equals_core(host, mp, file_name, 8)
        return
    base = loaded_weights(mp)
    assert not host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0].patches
    ours, _, info = apply_ours(host, mp, file_name, sm=0.7)
    assert "not applied" not in info
    assert_changed_by(base, loaded_weights(ours), entry_deltas(host, bare, layout_of(host, mp)), lambda b: 0.7)


@pytest.mark.parametrize("name,arch_id,expected,spec,weights", [
    ("ltx_video_trainer_comfy_ltxv_lora", "ltxv", ["B00", "B01"], "B01=0.6, default=0", {"B01": 0.6}),
    ("ltx2_trainer_ltx2_lora", "ltx2", ["A00", "A01", "B00", "B01"], "A=0", {"B00": 1.0, "B01": 1.0}),
    ("ltx2_trainer_ltx2_lora", "ltx2", ["A00", "A01", "B00", "B01"], "LTX2-AUDIO-ONLY", {"A00": 1.0, "A01": 1.0}),
    ("ltx2_trainer_ltx2_lora", "ltx2", ["A00", "A01", "B00", "B01"], "A01=0.5, B00=0.2, default=0",
     {"A01": 0.5, "B00": 0.2}),
])
def test_block_spec_changes_exactly_the_named_blocks(host, tiny, name, arch_id, expected, spec, weights):
    """LTX-2's audio attentions, audio feed-forward and video-to-audio attention are the ``A`` part of a
    block, its video attentions, feed-forward and audio-to-video attention the ``B`` part."""
    mp = tiny(arch_id)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=2)
    base = loaded_weights(mp)
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == expected
    assert_spec_weights(host, mp, base, file_name, deltas, spec, lambda b: 1.5 * weights.get(b, 0.0), sm=1.5)
