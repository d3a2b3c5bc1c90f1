"""Chroma, HunyuanVideo, Lumina 2 and HiDream-I1 in the real ComfyUI: our generated layouts equal ComfyUI's own model
classes (meta device), every name ComfyUI's key map knows resolves to the same key (and row slice),
and on tiny models built with ComfyUI's classes our loader equals core's LoraLoader bit for bit
where core loads the file, applies what core drops (musubi's HunyuanVideo MLP names, diffusers
HunyuanVideo and Lumina 2 files) as the math says, and a block spec changes exactly the keys of its blocks."""
import pytest

from host.dit_kit import (apply_ours, assert_changed_by, assert_equals_core, assert_equals_core_and_adds,
                          assert_spec_weights, comfy_model, entry_deltas, fitted, layout_of, loaded_weights,
                          tiny_patchers)

#: arch id -> ComfyUI model_config class of the released model
RELEASED = {"chroma": "Chroma", "hunyuan_video": "HunyuanVideo", "lumina2": "Lumina2", "hidream": "HiDream"}

_CHROMA_TINY = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "patch_size": 2, "context_in_dim": 32,
                "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 3, "depth_single_blocks": 3,
                "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True, "in_dim": 64, "out_dim": 64,
                "hidden_dim": 32, "n_layers": 2}
_HV_TINY = {"image_model": "hunyuan_video", "in_channels": 16, "patch_size": [1, 2, 2], "out_channels": 16,
            "vec_in_dim": 32, "axes_dim": [8, 12, 12], "meanflow": False, "context_in_dim": 32, "hidden_size": 64,
            "mlp_ratio": 4.0, "num_heads": 2, "depth": 3, "depth_single_blocks": 3, "theta": 256, "qkv_bias": True,
            "byt5": False, "guidance_embed": True}
_LUMINA_TINY = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "cap_feat_dim": 32,
                "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "qk_norm": True, "axes_dims": [4, 6, 6],
                "axes_lens": [300, 512, 512]}
_HIDREAM_TINY = {"image_model": "hidream", "attention_head_dim": 32, "axes_dims_rope": [16, 8, 8],
                 "caption_channels": [32, 32], "max_resolution": [128, 128], "in_channels": 16, "llama_layers": [0] * 6,
                 "num_attention_heads": 2, "num_routed_experts": 2, "num_activated_experts": 1, "num_layers": 3,
                 "num_single_layers": 3, "out_channels": 16, "patch_size": 2, "text_emb_dim": 32}
#: tiny variant -> (model_config class, unet_config): real classes, small widths and depths
TINY = {"chroma": ("Chroma", _CHROMA_TINY), "hunyuan_video": ("HunyuanVideo", _HV_TINY),
        "hunyuan_video_i2v": ("HunyuanVideoI2V", dict(_HV_TINY, in_channels=33)), "lumina2": ("Lumina2", _LUMINA_TINY),
        "hidream": ("HiDream", _HIDREAM_TINY)}


def _rules(host):
    return host.module("loralab.formats.host_keys").host_rules(host.version)


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_layout_equals_comfyui_model_class(host, arch_id):
    layouts = host.module("loralab.layouts")
    model = comfy_model(RELEASED[arch_id], layouts.STANDARD_CONFIGS[arch_id], "meta")
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    layout = host.module("loralab.formats.host_keys").host_layout(layouts.layout_for(arch_id), _rules(host))
    assert real == {k: v for k, v in layout.shapes.items() if k.startswith("diffusion_model.")}
    assert len(real) == {"chroma": 643, "hunyuan_video": 856, "lumina2": 400 - (host.version != "0.3.64"),
                         "hidream": 1615}[arch_id]


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_every_name_comfy_maps_resolves_to_the_same_key_and_rows(host, arch_id):
    """Our canonicalizer knows every name of ComfyUI's key map (core's Flux names of modules Chroma does
    not have, such as ``img_mod``, point at no weight in either; 0.33's Z-Image ``to_k``/``to_v`` on
    Lumina 2 name rows past the end of its ``qkv``, which patch nothing)."""
    import comfy.lora
    layouts = host.module("loralab.layouts")
    canonical = host.module("loralab.formats.canonical")
    model = comfy_model(RELEASED[arch_id], layouts.STANDARD_CONFIGS[arch_id], "meta")
    layout = host.module("loralab.formats.host_keys").host_layout(layouts.layout_for(arch_id), _rules(host))
    checked = 0
    for name, target in comfy.lora.model_lora_keys_unet(model, {}).items():
        key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        rows = None if offset is None else offset[1:]
        if key not in layout.shapes or key.endswith(".bias") or name.endswith("linear1_qkv"):
            continue  # a bias by its full key (addressed by param); ComfyUI's alias for converted XLabs keys
        if rows is not None and rows[0] + rows[1] > layout.shapes[key][0]:
            continue
        res = canonical.resolve_module(name, layout)
        assert res is not None and layout.key_for(res, "weight") == key, name
        full = rows is None or tuple(rows) == (0, layout.shapes[key][0])
        assert res.rows == (None if full else tuple(rows)), name
        checked += 1
    assert checked > 300


def test_model_classes_map_to_their_arch(host, tiny):
    models = host.module("nodes.host.models")
    assert models.model_arch(tiny("chroma")) == "chroma"
    assert models.model_arch(tiny("hunyuan_video")) == "hunyuan_video"
    assert models.model_arch(tiny("hunyuan_video_i2v")) == "hunyuan_video"
    assert models.model_layout(tiny("hunyuan_video_i2v")).shapes["diffusion_model.img_in.proj.weight"] == (64, 33, 1, 2, 2)
    assert models.model_arch(tiny("lumina2")) == "lumina2"
    assert models.model_arch(tiny("hidream")) == "hidream"


@pytest.fixture(scope="module")
def tiny(host):
    """variant -> a ModelPatcher of the tiny model, seeded random weights."""
    return tiny_patchers(lambda variant: comfy_model(*TINY[variant]))


def _fitted(host, mp, name, seed=0):
    return fitted(host, mp, name, "chromahv", seed)


CORE_LOADS = [("aitoolkit_chroma_lora", "chroma"), ("kohya_chroma_lora", "chroma"),
              ("diffusers_peft_chroma_lora", "chroma"), ("diffusion_pipe_hunyuan_video_lora", "hunyuan_video"),
              ("diffusion_pipe_hunyuan_video_lora", "hunyuan_video_i2v"), ("diffusion_pipe_lumina2_lora", "lumina2"),
              ("kohya_lumina2_lora", "lumina2"), ("diffusion_pipe_hidream_lora", "hidream"),
              ("diffusers_peft_hidream_lora", "hidream"), ("simpletuner_lycoris_hidream_lokr", "hidream")]


@pytest.mark.parametrize("name,variant", CORE_LOADS)
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, variant):
    mp = tiny(variant)
    file_name, _ = _fitted(host, mp, name)
    assert_equals_core(host, mp, file_name, 9)


def test_musubi_hunyuan_video_mlp_core_drops_is_applied(host, tiny):
    """ComfyUI maps musubi's attention and linear1/2 names but not ``img_mlp_fc1``/``fc2``: we apply
    those too, and everything core loads is bit for bit core's."""
    mp = tiny("hunyuan_video")
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, "musubi_hunyuan_video_lora", seed=3)
    base = loaded_weights(mp)
    mlp = {f"diffusion_model.double_blocks.{i}.{s}_mlp.{n}.weight" for i in range(3)
           for s in ("img", "txt") for n in (0, 2)}
    _, ours = assert_equals_core_and_adds(host, mp, file_name, 0.9, mlp)
    assert_changed_by(base, loaded_weights(ours), entry_deltas(host, tensors, layout), lambda block: 0.9)


@pytest.mark.parametrize("name,variant,slices", [
    ("diffusers_peft_hunyuan_video_lora", "hunyuan_video", {(0, 64), (64, 64), (128, 64)}),
    ("diffusers_peft_lumina2_lora", "lumina2", {(0, 64), (64, 32), (96, 32)}),  # 4 query, 2 key/value heads
])
def test_diffusers_files_core_drops_are_applied_as_the_math_says(host, tiny, name, variant, slices):
    """ComfyUI maps diffusion-pipe's names for HunyuanVideo and Lumina 2's own, not diffusers'."""
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=1)
    base = loaded_weights(mp)
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 1.0)[0]
    assert not core.patches
    ours, _, info = apply_ours(host, mp, file_name, sm=0.8)
    assert "not applied" not in info
    deltas = entry_deltas(host, tensors, layout)
    assert {d.rows for d in deltas if d.rows} == slices  # q, k, v of the fused qkv
    assert_changed_by(base, loaded_weights(ours), deltas, lambda block: 0.8)


@pytest.mark.parametrize("name,variant,expected", [
    ("kohya_chroma_lora", "chroma", ["D00", "D01", "D02", "S00", "S01", "S02"]),
    ("diffusers_peft_hunyuan_video_lora", "hunyuan_video", ["D00", "D01", "D02", "IN", "S00", "S01", "S02"]),
    ("kohya_lumina2_lora", "lumina2", ["IN", "L00", "L01", "L02", "OUT"]),
    ("diffusion_pipe_hidream_lora", "hidream", ["D00", "D01", "D02", "S00", "S01", "S02"]),
])
def test_block_spec_changes_exactly_the_named_blocks(host, tiny, name, variant, expected):
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=2)
    base = loaded_weights(mp)
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == expected
    first, second, late = ("L01", "L02", "L") if variant == "lumina2" else ("D01", "S02", "S")
    weights = {first: 1.5 * 0.6, second: 1.5 * 0.2}
    assert_spec_weights(host, mp, base, file_name, deltas,
                        f"{first}=0.6, {second}=0.2, default=0", lambda b: weights.get(b, 0.0), sm=1.5)
    assert_spec_weights(host, mp, base, file_name, deltas, f"{late}=0", lambda b: 0.0 if b.startswith(late) else 1.0)
