"""Every real trainer's LoRA layout (../shared/fixtures/loras) is detected right and mapped whole:
format, architecture, per-module algorithm, rank and alpha, and every key onto a real key of the
matching model (from the model fixtures, not from our own layouts) with a fitting shape."""
import math
import os

import pytest

from loralab.lora import Lora
from loralab_testkit import FIXTURE_MODELS, LORA_FIXTURES, FixtureSource, fixture, materialize, model_shapes

#: fixture -> (format, arch, {algorithm: modules}, rank (or the set of ranks), alpha (or the set)) as the producers wrote
#: them (fixture notes)
EXPECTED = {
    "aitoolkit_flux_lora": ("aitoolkit", "flux", {"LoRA": 494}, 16, None),
    "comfyui_trainer_sd15_lora": ("comfyui", "sd1", {"LoRA": 230, "LoCon": 52, "Full diff": 404}, 8, 1.0),
    "diffusers_sdxl_dreambooth_lora": ("diffusers_dreambooth", "sdxl", {"LoRA": 560}, 4, None),
    "kohya_flux_lora": ("kohya", "flux", {"LoRA": 304}, 16, 16.0),
    "kohya_flux_lora_with_te1": ("kohya", "flux", {"LoRA": 376}, 16, 16.0),
    # split_qkv: fused qkv modules hold 3 rank-16 parts, single blocks' linear1 4
    "kohya_flux_split_qkv_lora": ("kohya", "flux", {"LoRA": 304}, {16, 48, 64}, 16.0),
    "kohya_sd15_lora": ("kohya", "sd1", {"LoRA": 264}, 16, 8.0),
    "kohya_sdxl_lora": ("kohya", "sdxl", {"LoRA": 986}, 32, 16.0),
    "lycoris_sd15_locon_dora": ("lycoris", "sd1", {"LoRA + DoRA": 302, "LoCon + DoRA": 52}, 16, 8.0),
    "lycoris_sd15_loha": ("lycoris", "sd1", {"LoHa": 354}, 8, 4.0),
    "lycoris_sd15_lokr": ("lycoris", "sd1", {"LoKr": 354}, 8, 4.0),
    "xlabs_flux_lora": ("xlabs", "flux", {"LoRA": 84}, 16, None),
    "musubi_wan21_t2v_14b_lora": ("musubi", "wan21_t2v_14b", {"LoRA": 400}, 32, 16.0),
    "diffusers_peft_wan21_t2v_14b_lora": ("diffusers_peft", "wan21_t2v_14b", {"LoRA": 320}, 16, None),
    "peft_default_wan21_t2v_1_3b_lora": ("diffusers_peft", "wan21_t2v_1_3b", {"LoRA": 300}, 8, None),
    "diffusion_pipe_wan21_i2v_14b_lora": ("diffusion_pipe", "wan21_i2v_14b", {"LoRA": 480}, 32, None),
    "musubi_qwen_image_lora": ("musubi", "qwen_image", {"LoRA": 840}, 16, 16.0),
    "diffusers_peft_qwen_image_lora": ("diffusers_peft", "qwen_image", {"LoRA": 240}, 16, None),
    "aitoolkit_flux2_klein_4b_lora": ("aitoolkit", "flux2_klein_4b", {"LoRA": 80}, 16, None),
    "musubi_flux2_klein_4b_lora": ("musubi", "flux2_klein_4b", {"LoRA": 80}, 32, 16.0),
    "diffusers_peft_flux2_dev_lora": ("diffusers_peft", "flux2_dev", {"LoRA": 128}, 4, None),
    "peft_default_flux2_klein_9b_lora": ("diffusers_peft", "flux2_klein_9b", {"LoRA": 153}, 8, None),
    "aitoolkit_z_image_lora": ("aitoolkit", "z_image", {"LoRA": 240}, 16, None),
    "musubi_z_image_lora": ("musubi", "z_image", {"LoRA": 210}, 32, 16.0),
    "musubi_comfy_z_image_lora": ("musubi", "z_image", {"LoRA": 150}, {32, 96}, {16.0, 48.0}),
    "peft_default_z_image_lora": ("diffusers_peft", "z_image", {"LoRA": 276}, 8, None),
    "aitoolkit_chroma_lora": ("aitoolkit", "chroma", {"LoRA": 228}, 16, None),
    "kohya_chroma_lora": ("kohya", "chroma", {"LoRA": 228}, 16, 8.0),
    # attention-only diffusers names fit Flux.1 and Chroma alike and the file says nothing else: Flux.1 (the first)
    "diffusers_peft_chroma_lora": ("diffusers_peft", "flux", {"LoRA": 190}, 8, None),
    "musubi_hunyuan_video_lora": ("musubi", "hunyuan_video", {"LoRA": 240}, 32, 16.0),
    "diffusion_pipe_hunyuan_video_lora": ("diffusion_pipe", "hunyuan_video", {"LoRA": 320}, 32, None),
    "diffusers_peft_hunyuan_video_lora": ("diffusers_peft", "hunyuan_video", {"LoRA": 208}, 16, None),
    "diffusion_pipe_lumina2_lora": ("diffusion_pipe", "lumina2", {"LoRA": 178}, 32, None),
    "kohya_lumina2_lora": ("kohya", "lumina2", {"LoRA": 180}, 16, 16.0),
    "diffusers_peft_lumina2_lora": ("diffusers_peft", "lumina2", {"LoRA": 120}, 4, None),
    "diffusion_pipe_hidream_lora": ("diffusion_pipe", "hidream", {"LoRA": 1072}, 32, None),
    "diffusers_peft_hidream_lora": ("diffusers_peft", "hidream", {"LoRA": 192}, 16, None),
    "simpletuner_lycoris_hidream_lokr": ("simpletuner_lycoris", "hidream", {"LoKr (full-dimension)": 256}, None, 10000.0),
    "ltx_video_trainer_ltxv_lora": ("diffusers_peft", "ltxv", {"LoRA": 224}, 32, None),
    "ltx_video_trainer_comfy_ltxv_lora": ("diffusion_pipe", "ltxv", {"LoRA": 224}, 32, None),
    "ltx2_trainer_ltx2_lora": ("diffusion_pipe", "ltx2", {"LoRA": 1344}, 32, None),
    "kohya_hunyuan_image21_lora": ("kohya", "hunyuan_image21", {"LoRA": 320}, 16, 16.0),
    "musubi_hunyuan_video15_lora": ("musubi", "hunyuan_video15", {"LoRA": 756}, 32, 16.0),
    "diffusers_peft_hunyuan_video15_lora": ("diffusers_peft", "hunyuan_video15", {"LoRA": 224}, 16, None),
}


def test_every_fixture_has_an_expectation():
    assert sorted(EXPECTED) == LORA_FIXTURES


def _algorithms(lora):
    counts = {}
    for m in lora.items:
        a = m.algorithm(lora.layout)
        counts[a] = counts.get(a, 0) + 1
    return counts


def _check_targets(name, lora):
    models = {comp: model_shapes(m, comp) for comp, m in FIXTURE_MODELS[name].items()}
    for m in lora.items:
        assert m.mapped, (m.entry.module, m.reason)
        real = models[m.component]
        assert m.target.key in real, m.target.key
        shape = real[m.target.key]
        out = m.target.rows[1] if m.target.rows else shape[0]
        got = m.entry.delta_shape()
        if m.entry.param == "bias" or len(shape) == 1:
            assert got[0] * got[1] == math.prod(shape), m.entry.module
        else:
            assert got == (out, math.prod(shape[1:])), (m.entry.module, got, shape)


def _accounted(lora, keys):
    used = [k for e in lora.entries for k in e.keys.values()]
    assert len(used) == len(set(used))
    assert sorted(used + lora.unrecognized + lora.orphans) == sorted(keys)
    assert not lora.unrecognized and not lora.orphans


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_fixture_at_full_size(name):
    fmt, arch_id, algos, rank, alpha = EXPECTED[name]
    lora = Lora(FixtureSource(name))
    assert lora.detection.format == fmt
    assert lora.detection.arch == arch_id
    assert not lora.detection.warnings
    assert _algorithms(lora) == algos
    weight_entries = [e for e in lora.entries if e.kind != "diff"]
    assert {e.rank() for e in weight_entries} == (rank if isinstance(rank, set) else {rank})
    assert {e.alpha for e in weight_entries} == (alpha if isinstance(alpha, set) else {alpha})
    _accounted(lora, fixture("loras", name)["tensors"])
    _check_targets(name, lora)


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_fixture_as_real_file(name, tmp):
    """The same, from a real safetensors file written with seeded values (rank scaled down to 2)."""
    fmt, arch_id, algos, rank, alpha = EXPECTED[name]
    path = materialize(name, os.path.join(tmp, name + ".safetensors"), rank=2)
    with Lora.open(path) as lora:
        assert (lora.detection.format, lora.detection.arch) == (fmt, arch_id)
        assert _algorithms(lora) == algos
        weight_entries = [e for e in lora.entries if e.kind != "diff"]
        assert {e.rank() for e in weight_entries} == {rank if rank is None else min(min(rank) if isinstance(rank, set)
                                                                                  else rank, 2)}
        assert {e.alpha for e in weight_entries} == (alpha if isinstance(alpha, set) else {alpha})
        assert lora.metadata == fixture("loras", name).get("metadata", {})
        _accounted(lora, fixture("loras", name)["tensors"])
        _check_targets(name, lora)


def test_kohya_flux_variant_and_te_components():
    lora = Lora(FixtureSource("kohya_flux_lora_with_te1"))
    assert lora.detection.arch_variant == "dev"
    comps = {}
    for m in lora.mapped():
        comps[m.component] = comps.get(m.component, 0) + 1
    assert comps == {"unet": 304, "clip_l": 72}


def test_metadata_disagreement_is_reported_not_followed():
    src = FixtureSource("kohya_sd15_lora")
    src.metadata = dict(src.metadata, **{"modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
                                         "ss_base_model_version": "sdxl_base_v1-0"})
    lora = Lora(src)
    assert lora.detection.arch == "sd1"
    assert lora.detection.metadata_arch == "sdxl"
    assert any("metadata says SDXL" in w for w in lora.detection.warnings)


def test_detection_survives_hostile_software_metadata():
    from loralab.formats.detect import detect_format
    deep = '{"name":' * 100_000 + '"x"' + "}" * 100_000
    assert detect_format([], [], {"software": deep}) == "unknown"
    assert detect_format([], [], {"software": '{"name": "ai-toolkit"'}) == "unknown"
