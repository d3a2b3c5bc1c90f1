"""loralab.formats.host_keys emulates ComfyUI's LoRA key handling; here it is checked against the real
comfy.lora (model_lora_keys_unet/clip, lora_convert.convert_lora, load_lora) of the running host,
with the emulation's rules for that host's version, on the full-size models, built on the meta
device with ComfyUI's own classes, for every fixture layout."""
import logging

import pytest
import torch

from host.dit_configs import host_dit_config
from loralab_testkit import LORA_FIXTURES, fixture, fixture_tensors, xlabs_keys

COMFY_CLASS = {"sd1": "SD15", "sd2": "SD20", "sdxl": "SDXL", "sdxl_refiner": "SDXLRefiner", "flux": "Flux",
               "sd3": "SD3", "sd35m": "SD3", "sd35l": "SD3",
               "wan21_t2v_14b": "WAN21_T2V", "wan21_i2v_14b": "WAN21_I2V", "wan21_t2v_1_3b": "WAN21_T2V",
               "wan22_ti2v_5b": "WAN22_T2V", "qwen_image": "QwenImage",
               "flux2_dev": "Flux2", "flux2_klein_4b": "Flux2", "flux2_klein_9b": "Flux2", "z_image": "ZImage",
               "chroma": "Chroma", "hunyuan_video": "HunyuanVideo", "lumina2": "Lumina2", "hidream": "HiDream",
               "ltxv": "LTXV", "ltxv_13b": "LTXV", "ltx2": "LTXAV",
               "hunyuan_image21": "HunyuanImage21", "hunyuan_image21_refiner": "HunyuanImage21Refiner",
               "hunyuan_video15": "HunyuanVideo15"}
TEXT_ENCODER_FIXTURES = {"clip_l": "clip_l", "clip_g": "clip_g", "clip_h": None, "t5xxl": "t5xxl"}


class _StateDictOnly:
    """What model_lora_keys_clip reads of a CLIP model: its state-dict keys."""

    def __init__(self, keys):
        self._sd = dict.fromkeys(keys)

    def state_dict(self):
        return self._sd


@pytest.fixture(scope="module")
def rules(host):
    """The emulation's rules for the running ComfyUI."""
    return host.module("loralab.formats.host_keys").host_rules(host.version)


def test_the_running_host_has_rules_of_its_own_version(host, rules):
    """A host these tests run on is a known version (add its rules to HOSTS when it is not)."""
    assert rules.name == f"ComfyUI {host.version}"


@pytest.fixture(scope="module")
def comfy_models(host, tiny_models):
    import comfy.supported_models as sm
    configs = host.module("loralab.layouts").STANDARD_CONFIGS
    archs = host.module("loralab.layouts.archs").ARCHS
    out = {}
    for arch_id, cls in COMFY_CLASS.items():
        if not hasattr(sm, cls):  # ComfyUI 0.3.64 has no Flux2, ZImage or LTXAV
            continue
        cfg = dict(configs[arch_id])
        if arch_id == "flux":
            cfg.update(image_model="flux", axes_dim=[16, 56, 56], theta=10000)
            cfg = tiny_models.host_config(cfg)
        elif cls == "SD3":
            cfg.update(pos_embed_scaling_factor=None, input_size=None, pos_embed_max_size=round(cfg["num_patches"] ** 0.5))
        elif cls.startswith("SD"):
            cfg.update(use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
                       use_temporal_resblock=False, use_temporal_attention=False)
        with torch.device("meta"):
            model = getattr(sm, cls)(host_dit_config(cfg)).get_model({}, "", device=torch.device("meta"))
        te_keys = []
        for te in archs[arch_id].text_encoders:
            source = TEXT_ENCODER_FIXTURES[te]
            if source is None:  # no OpenCLIP-H fixture: the layout's own keys (checked in tests/test_layouts.py)
                layout = host.module("loralab.layouts").layout_for(arch_id)
                te_keys += [k for k in layout.shapes if k.startswith(f"{te}.")]
            else:
                te_keys += [f"{te}.transformer.{k}" for k in fixture("models", source)["tensors"]]
        out[arch_id] = (model, _StateDictOnly(te_keys))
    return out


def _comfy_key_map(comfy_models, arch_id):
    import comfy.lora
    if arch_id not in comfy_models:
        pytest.skip(f"this ComfyUI has no {COMFY_CLASS[arch_id]} model config")
    model, clip = comfy_models[arch_id]
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    return comfy.lora.model_lora_keys_clip(clip, key_map), set(model.state_dict()) | set(clip.state_dict())


@pytest.mark.parametrize("arch_id", sorted(COMFY_CLASS))
def test_key_map_equals_comfys_for_every_weight_the_model_has(host, comfy_models, rules, arch_id):
    host_keys = host.module("loralab.formats.host_keys")
    layout = host_keys.host_layout(host.module("loralab.layouts").layout_for(arch_id), rules)
    ours = host_keys.host_key_map(layout, rules)
    theirs, model_keys = _comfy_key_map(comfy_models, arch_id)
    assert set(layout.shapes) <= model_keys

    def norm(target):
        if isinstance(target, str):
            return target, None
        key, offset = target[0], target[1]
        if offset is None or (offset[1], offset[2]) == (0, layout.shapes[key][0]):
            return key, None
        return key, (offset[1], offset[2])

    theirs = {name: norm(t) for name, t in theirs.items() if (t if isinstance(t, str) else t[0]) in layout.shapes}
    ours = {name: (k, None if rows is None or rows == (0, layout.shapes[k][0]) else rows)
            for name, (k, rows) in ours.items()}
    assert sorted(set(theirs) - set(ours))[:10] == [] and sorted(set(ours) - set(theirs))[:10] == []
    assert {n for n in theirs if theirs[n] != ours[n]} == set()


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.not_loaded = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("lora key not loaded: "):
            self.not_loaded.append(msg[len("lora key not loaded: "):])


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_fixture_keys_comfy_drops_equal_ours(host, comfy_models, rules, name):
    import comfy.lora
    import comfy.lora_convert
    arch_id = host.module("loralab.lora").Lora(host_fixture_source(host, name)).detection.arch
    layout = host.module("loralab.layouts").layout_for(arch_id)
    tensors = fixture_tensors(name, rank=1)
    key_map, model_keys = _comfy_key_map(comfy_models, arch_id)
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        patches = comfy.lora.load_lora(comfy.lora_convert.convert_lora(dict(tensors)), key_map)
    finally:
        root.removeHandler(capture)
    patched = {k if isinstance(k, str) else k[0] for k in patches} & model_keys
    ours = host.module("loralab.formats.host_keys").host_targets(list(tensors), layout, rules=rules)
    assert sorted(capture.not_loaded) == sorted(k for k, v in ours.items() if v is None)
    assert patched == {v for v in ours.values() if v is not None}


def host_fixture_source(host, name):
    """The fixture's shapes as a tensor source of the pack's own engine."""
    sources = host.module("loralab.files.sources")
    d = fixture("loras", name)

    class Source(sources.TensorSource):
        path = name
        metadata = dict(d.get("metadata", {}))

        def keys(self):
            return list(d["tensors"])

        def shape(self, key):
            return tuple(d["tensors"][key]["shape"])

        def dtype(self, key):
            return d["tensors"][key]["dtype"]

        def scalar(self, key):
            return float(d.get("scalar_values", {}).get(key, 1.0))

    return Source()


def _bfl_control():
    return ["img_in.lora_A.weight", "img_in.lora_B.weight", "img_in.lora_B.bias",
            "single_blocks.0.norm.key_norm.scale", "double_blocks.0.img_attn.qkv.lora_A.weight",
            "double_blocks.0.img_attn.qkv.lora_B.weight", "double_blocks.0.img_attn.norm.query_norm.scale"]


@pytest.mark.parametrize("keys", [xlabs_keys(), _bfl_control()], ids=["xlabs_all_blocks", "bfl_control"])
def test_renamed_layouts_comfy_converts_equal_ours(host, comfy_models, rules, keys):
    """convert_lora: XLabs names with every block (USO), BFL control LoRAs."""
    import comfy.lora
    import comfy.lora_convert
    layout = host.module("loralab.layouts").layout_for("flux")
    tensors = {k: torch.ones(2, 2) for k in keys}
    key_map, model_keys = _comfy_key_map(comfy_models, "flux")
    capture = _Capture()
    logging.getLogger().addHandler(capture)
    try:
        patches = comfy.lora.load_lora(comfy.lora_convert.convert_lora(tensors), key_map)
    finally:
        logging.getLogger().removeHandler(capture)
    ours = host.module("loralab.formats.host_keys").host_targets(keys, layout, rules=rules)
    assert capture.not_loaded == []
    assert all(ours.values())
    assert {k if isinstance(k, str) else k[0] for k in patches} & model_keys == set(ours.values())


#: spellings newer hosts added (0.33: T5 without its wrapper, DiffSynth's bare Flux names, LyCORIS
#: LoKr's ff.linear_in/out, Flux.2's single-block names): the emulation must load what the host loads
NEWER_SPELLINGS = {
    "sd3_t5_unwrapped": ("sd3", ["text_encoders.transformer.encoder.block.0.layer.0.SelfAttention.q.lora_up.weight",
                                 "text_encoders.transformer.encoder.block.0.layer.0.SelfAttention.q.lora_down.weight"]),
    "sd35l_t5_unwrapped": ("sd35l", ["text_encoders.transformer.encoder.block.3.layer.1.DenseReluDense.wo.lora_B.weight",
                                     "text_encoders.transformer.encoder.block.3.layer.1.DenseReluDense.wo.lora_A.weight"]),
    "flux_lycoris_ff_linear": ("flux", [f"lycoris_transformer_blocks_0_{ff}_{io}.{w}" for ff in ("ff", "ff_context")
                                        for io in ("linear_in", "linear_out") for w in ("lokr_w1", "lokr_w2")]),
    "flux_diffsynth_bare": ("flux", ["transformer_blocks.0.attn.to_q.lora_A.weight",
                                     "transformer_blocks.0.attn.to_q.lora_B.weight",
                                     "single_transformer_blocks.2.attn.to_qkv_mlp_proj.lora_A.weight",
                                     "single_transformer_blocks.2.attn.to_qkv_mlp_proj.lora_B.weight"]),
}


@pytest.mark.parametrize("case", sorted(NEWER_SPELLINGS))
def test_newer_spellings_comfy_loads_equal_ours(host, comfy_models, rules, case):
    import comfy.lora
    arch_id, keys = NEWER_SPELLINGS[case]
    layout = host.module("loralab.layouts").layout_for(arch_id)
    tensors = {k: torch.ones(2, 2) for k in keys}
    key_map, model_keys = _comfy_key_map(comfy_models, arch_id)
    capture = _Capture()
    logging.getLogger().addHandler(capture)
    try:
        patches = comfy.lora.load_lora(tensors, key_map)
    finally:
        logging.getLogger().removeHandler(capture)
    ours = host.module("loralab.formats.host_keys").host_targets(keys, layout, rules=rules)
    assert sorted(capture.not_loaded) == sorted(k for k, v in ours.items() if v is None)
    assert {k if isinstance(k, str) else k[0] for k in patches} & model_keys == {v for v in ours.values() if v}
