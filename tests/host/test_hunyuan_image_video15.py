"""HunyuanImage 2.1 (and its refiner) and HunyuanVideo 1.5 in the real ComfyUI (HunyuanVideo 1.5 on 0.33 and
later; 0.3.64 has no HunyuanVideo15 class and skips it): our generated layouts equal ComfyUI's own model classes
(meta device), every name ComfyUI's key map knows resolves to the same key (and row slice), and on tiny models
built with ComfyUI's classes our loader equals core's LoraLoader bit for bit where core loads the file, applies
what core drops (sd-scripts' mod/MLP names, musubi-tuner's split q/k/v, diffusers names) as the math says, and a block spec
changes exactly the keys of its blocks."""
import pytest
import torch

from host.dit_kit import (assert_changed_by, assert_equals_core, assert_equals_core_and_adds, assert_spec_weights,
                          comfy_model, entry_deltas, fitted, layout_of, loaded_weights, save_once, tiny_patchers)

#: arch id -> (ComfyUI model_config class of the released model, its diffusion-model key count)
RELEASED = {"hunyuan_image21": ("HunyuanImage21", 856), "hunyuan_image21_refiner": ("HunyuanImage21Refiner", 856),
            "hunyuan_video15": ("HunyuanVideo15", 1361)}

_HV = {"image_model": "hunyuan_video", "vec_in_dim": None, "meanflow": False, "context_in_dim": 32, "hidden_size": 64,
       "mlp_ratio": 4.0, "num_heads": 2, "depth": 3, "depth_single_blocks": 3, "theta": 256, "qkv_bias": True,
       "byt5": True, "guidance_embed": False}
#: tiny variant -> (model_config class, unet_config): real classes, small widths and depths (head dim 32)
TINY = {
    "hunyuan_image21": ("HunyuanImage21", dict(_HV, in_channels=16, out_channels=16, patch_size=[1, 1],
                                               axes_dim=[16, 16])),
    "hunyuan_image21_distilled": ("HunyuanImage21", dict(_HV, in_channels=16, out_channels=16, patch_size=[1, 1],
                                                         axes_dim=[16, 16], guidance_embed=True, meanflow=True)),
    "hunyuan_image21_refiner": ("HunyuanImage21Refiner", dict(_HV, in_channels=32, out_channels=16,
                                                              patch_size=[1, 1, 1], axes_dim=[8, 12, 12], byt5=False,
                                                              guidance_embed=True, meanflow=True)),
    "hunyuan_video15": ("HunyuanVideo15", dict(_HV, in_channels=33, out_channels=16, patch_size=[1, 1, 1],
                                               axes_dim=[8, 12, 12], depth_single_blocks=0,
                                               use_cond_type_embedding=True, vision_in_dim=24, meanflow_sum=True)),
    "hunyuan_video15_sr": ("HunyuanVideo15_SR_Distilled", dict(_HV, in_channels=50, out_channels=16,
                                                               patch_size=[1, 1, 1], axes_dim=[8, 12, 12],
                                                               depth_single_blocks=0, use_cond_type_embedding=True,
                                                               vision_in_dim=24, meanflow_sum=True)),
}


def _class_or_skip(host, name):
    import comfy.supported_models as sm
    if not hasattr(sm, name):
        pytest.skip(f"ComfyUI {host.version} has no {name} model config (comfy.supported_models.{name})")
    return name


def _released(host, arch_id):
    layouts = host.module("loralab.layouts")
    model = comfy_model(_class_or_skip(host, RELEASED[arch_id][0]), layouts.STANDARD_CONFIGS[arch_id], "meta")
    rules = host.module("loralab.formats.host_keys").host_rules(host.version)
    return model, host.module("loralab.formats.host_keys").host_layout(layouts.layout_for(arch_id), rules)


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_layout_equals_comfyui_model_class(host, arch_id):
    model, layout = _released(host, arch_id)
    real = {"diffusion_model." + k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == {k: v for k, v in layout.shapes.items() if k.startswith("diffusion_model.")}
    assert len(real) == RELEASED[arch_id][1]


@pytest.mark.parametrize("arch_id", sorted(RELEASED))
def test_every_name_comfy_maps_resolves_to_the_same_key(host, arch_id):
    """ComfyUI maps the generic and diffusion-pipe names of every weight of these classes, none of them a row slice."""
    import comfy.lora
    canonical = host.module("loralab.formats.canonical")
    model, layout = _released(host, arch_id)
    checked = 0
    for name, target in comfy.lora.model_lora_keys_unet(model, {}).items():
        assert isinstance(target, str), name
        if target.endswith(".bias"):
            continue  # a bias by its full key (addressed by param)
        res = canonical.resolve_module(name, layout)
        assert res is not None and layout.key_for(res, "weight") == target and res.rows is None, name
        checked += 1
    assert checked > 600  # 348 Linear weights of HunyuanImage 2.1 in two forms at least


@pytest.fixture(scope="module")
def tiny(host):
    """variant -> a ModelPatcher of the tiny model (seeded random weights), skipped where the host lacks its class."""
    built = tiny_patchers(lambda variant: comfy_model(*TINY[variant]))

    def get(variant):
        _class_or_skip(host, TINY[variant][0])
        return built(variant)
    return get


@pytest.mark.parametrize("variant,arch_id", [
    ("hunyuan_image21", "hunyuan_image21"), ("hunyuan_image21_distilled", "hunyuan_image21"),
    ("hunyuan_image21_refiner", "hunyuan_image21_refiner"), ("hunyuan_video15", "hunyuan_video15"),
    ("hunyuan_video15_sr", "hunyuan_video15")])
def test_model_classes_map_to_their_arch_and_own_layout(host, tiny, variant, arch_id):
    mp = tiny(variant)
    assert host.module("nodes.host.models").model_arch(mp) == arch_id
    real = {k: tuple(v.shape) for k, v in mp.model.state_dict().items() if k.startswith("diffusion_model.")}
    assert {k: v for k, v in layout_of(host, mp).shapes.items() if k.startswith("diffusion_model.")} == real


def _fitted(host, mp, name, seed=0):
    return fitted(host, mp, name, "hy15", seed)


@pytest.mark.parametrize("name,variant", [
    ("diffusion_pipe_hunyuan_video_lora", "hunyuan_video15"),
    ("comfy_names_hunyuan_image21", "hunyuan_image21"), ("comfy_names_hunyuan_image21", "hunyuan_image21_distilled"),
    ("comfy_names_hunyuan_image21", "hunyuan_image21_refiner"), ("comfy_names_hunyuan_image21", "hunyuan_video15")])
def test_equals_core_loraloader_bit_for_bit(host, tiny, name, variant):
    """Files core loads whole: diffusion-pipe's names on HunyuanVideo 1.5 (a HunyuanVideo model to ComfyUI's key
    map; HunyuanImage 2.1's is not, and maps ComfyUI's own names only), and ComfyUI's own names
    (``diffusion_model.*``, kohya's ``lora_unet_*``) of every Linear on each model."""
    mp = tiny(variant)
    if name == "comfy_names_hunyuan_image21":
        file_name = _comfy_names_file(host, mp, variant)
    else:
        file_name, _ = _fitted(host, mp, name)
    assert_equals_core(host, mp, file_name, 9)


def _comfy_names_file(host, mp, variant):
    """A LoRA (rank 4, seeded) on every 2D weight of ``mp`` by ComfyUI's names: ``lora_unet_*`` with alphas for the
    even keys, ``diffusion_model.*`` PEFT for the odd ones."""
    g = torch.Generator().manual_seed(5)
    tensors = {}
    weights = [(k, v.shape) for k, v in mp.model.state_dict().items() if k.startswith("diffusion_model.") and v.ndim == 2
               and k.endswith(".weight")]
    for i, (k, (out, fan_in)) in enumerate(weights):
        module = k[:-len(".weight")]
        down, up = torch.randn(4, fan_in, generator=g) * 0.1, torch.randn(out, 4, generator=g) * 0.1
        if i % 2:
            tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"] = down, up
        else:
            name = "lora_unet_" + module[len("diffusion_model."):].replace(".", "_")
            tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, up
            tensors[f"{name}.alpha"] = torch.tensor(2.0)
    return save_once(host, f"hy15_comfy_names_{variant}_{len(tensors)}.safetensors", tensors, {})


@pytest.mark.parametrize("name,variant,extra", [
    # sd-scripts' mod.linear, mlp.fc1/fc2 and modulation.linear: ComfyUI knows them as mod.lin, mlp.0/2, modulation.lin
    ("kohya_hunyuan_image21_lora", "hunyuan_image21",
     {f"double_blocks.{i}.{s}_{m}" for i in range(3) for s in ("img", "txt") for m in ("mod.lin", "mlp.0", "mlp.2")}
     | {f"single_blocks.{i}.modulation.lin" for i in range(3)}),
    # musubi's split q/k/v land in ComfyUI's fused qkv
    ("musubi_hunyuan_video15_lora", "hunyuan_video15",
     {f"double_blocks.{i}.{s}_{m}" for i in range(3) for s in ("img", "txt")
      for m in ("mod.lin", "attn.qkv", "mlp.0", "mlp.2")}),
    # diffusers' names: ComfyUI maps diffusion-pipe's for this class, drops these whole
    ("diffusers_peft_hunyuan_video15_lora", "hunyuan_video15",
     {f"double_blocks.{i}.img_attn.{m}" for i in range(3) for m in ("qkv", "proj")}
     | {f"txt_in.individual_token_refiner.blocks.{i}.self_attn.{m}" for i in range(2) for m in ("qkv", "proj")}),
])
def test_core_drops_are_applied_as_the_math_says(host, tiny, name, variant, extra):
    """What core loads of the file we load bit for bit as core does; what it drops we apply too, as the
    engine's ΔW (q, k and v placed in their rows of the fused weight) at the strength asked."""
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=3)
    base = loaded_weights(mp)
    core, ours = assert_equals_core_and_adds(host, mp, file_name, 0.9, {f"diffusion_model.{m}.weight" for m in extra})
    deltas = entry_deltas(host, tensors, layout)
    if not name.startswith("kohya"):
        assert {d.rows for d in deltas if d.rows} == {(0, 64), (64, 64), (128, 64)}
    if name.startswith("diffusers"):
        assert not core.patches
    assert_changed_by(base, loaded_weights(ours), deltas, lambda block: 0.9)


@pytest.mark.parametrize("name,variant,expected,spec,weights", [
    ("kohya_hunyuan_image21_lora", "hunyuan_image21", ["D00", "D01", "D02", "S00", "S01", "S02"],
     "D01=0.6, S02=0.2, default=0", {"D01": 0.6, "S02": 0.2}),
    ("musubi_hunyuan_video15_lora", "hunyuan_video15", ["D00", "D01", "D02"],
     "D00=0.6, D02=0.2, default=0", {"D00": 0.6, "D02": 0.2}),
])
def test_block_spec_changes_exactly_the_named_blocks(host, tiny, name, variant, expected, spec, weights):
    mp = tiny(variant)
    layout = layout_of(host, mp)
    file_name, tensors = _fitted(host, mp, name, seed=2)
    base = loaded_weights(mp)
    deltas = entry_deltas(host, tensors, layout)
    assert sorted({d.block for d in deltas}) == expected
    assert_spec_weights(host, mp, base, file_name, deltas, spec, lambda b: 1.5 * weights.get(b, 0.0), sm=1.5)
    assert_spec_weights(host, mp, base, file_name, deltas, "D01=0", lambda b: 0.0 if b == "D01" else 1.0)
