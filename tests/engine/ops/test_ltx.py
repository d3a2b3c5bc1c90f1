"""LTX-Video and LTX-2 through the engine: layouts against ComfyUI's model fixtures, detection (every
producer, metadata strings), what each host itself loads of each producer's file, absolute block specs
with LTX-2's audio part of each block apart from its video part, presets, and inspect, merge and
convert against the math on the real fixture layouts."""
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import parse_block_weights, preset_names, standard_blocks
from loralab.errors import SpecError
from loralab.formats.canonical import resolve_module
from loralab.formats.host_keys import HOSTS, host_targets
from loralab.layouts import layout_for
from loralab.layouts.archs import arch_from_metadata_string
from loralab.layouts.ltxv import ltxv_variant
from loralab.lora import Lora
from loralab.ops.coverage import refusal
from loralab.ops.inspect import summarize
from loralab.ops.lowrank import one_thread
from loralab_testkit import FixtureSource, fit_fixture_to_layout, materialize, model_shapes
from loralab_testkit.fixture_checks import assert_host_loads, assert_spec_zeroes

from engine.ops.test_merge import (assert_converts_to_a_file_hosts_load, assert_merges_to_dense_sum,
                                   lora as fixture_lora)

F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("arch_id", ["ltxv", "ltx2"])
def test_layout_equals_comfyuis_model_keys(arch_id):
    """The generated layout has exactly the keys and shapes of ComfyUI's model class (the fixture)."""
    assert dict(layout_for(arch_id).shapes) == model_shapes(arch_id, "unet")


def test_block_ids():
    assert standard_blocks("ltxv") == ["IN", *(f"B{i:02d}" for i in range(28)), "OUT"]
    assert standard_blocks("ltxv_13b") == ["IN", *(f"B{i:02d}" for i in range(48)), "OUT"]
    assert standard_blocks("ltx2") == ["IN", *(f"B{i:02d}" for i in range(48)), *(f"A{i:02d}" for i in range(48)), "OUT"]
    for arch_id in ("ltxv", "ltx2"):
        assert "OTHER" not in {block_of(k, "ltxv") for k in layout_for(arch_id).shapes}
    parts = {"attn1.to_q": "B07", "audio_to_video_attn.to_out.0": "B07", "scale_shift_table_a2v_ca_video": "B07",
             "audio_attn1.to_q": "A07", "audio_ff.net.2": "A07", "video_to_audio_attn.to_k": "A07",
             "audio_scale_shift_table": "A07", "scale_shift_table_a2v_ca_audio": "A07"}
    for part, block in parts.items():
        key = next(k for k in layout_for("ltx2").shapes if k.startswith(f"diffusion_model.transformer_blocks.7.{part}"))
        assert block_of(key, "ltxv") == block, part
    assert block_of("diffusion_model.video_embeddings_connector.transformer_1d_blocks.1.ff.net.2.weight", "ltxv") == "IN"
    assert block_of("diffusion_model.audio_scale_shift_table", "ltxv") == "OUT"


@pytest.mark.parametrize("value,arch_id", [("ltx2", "ltx2"), ("LTX-2/lora", "ltx2"), ("ltx-video/lora", "ltxv"),
                                           ("ltxv", "ltxv"), ("LTX-Video-0.9.7", "ltxv")])
def test_metadata_strings(value, arch_id):
    assert arch_from_metadata_string(value) == arch_id


@pytest.mark.parametrize("name,key", [
    ("transformer.proj_in", "patchify_proj.weight"),
    ("transformer.time_embed.emb.timestep_embedder.linear_2", "adaln_single.emb.timestep_embedder.linear_2.weight"),
    ("transformer.time_embed.linear", "adaln_single.linear.weight"),
    ("transformer.caption_projection.linear_1", "caption_projection.linear_1.weight"),
])
def test_diffusers_embedder_names_land_on_comfyuis(name, key):
    """diffusers' LTXVideoTransformer3DModel names under ``transformer.`` (two embedders renamed): no host maps them, we do."""
    layout = layout_for("ltxv")
    res = resolve_module(name, layout)
    assert res is not None and layout.key_for(res, "weight") == "diffusion_model." + key
    for rules in HOSTS.values():
        assert host_targets([name + ".lora_A.weight"], layout, rules=rules) == {name + ".lora_A.weight": None}


def test_configs_name_their_arch():
    assert [ltxv_variant(layout_for(a).config) for a in ("ltxv", "ltxv_13b", "ltx2")] == ["ltxv", "ltxv_13b", "ltx2"]
    assert ltxv_variant(dict(layout_for("ltx2").config, cross_attention_adaln=True)) is None


@pytest.mark.parametrize("name,fmt,arch_id", [("ltx_video_trainer_ltxv_lora", "diffusers_peft", "ltxv"),
                                              ("ltx_video_trainer_comfy_ltxv_lora", "diffusion_pipe", "ltxv"),
                                              ("ltx2_trainer_ltx2_lora", "diffusion_pipe", "ltx2")])
def test_detection(name, fmt, arch_id):
    det = Lora(FixtureSource(name)).detection
    assert (det.format, det.arch, det.warnings) == (fmt, arch_id, [])


def test_a_13b_lora_fits_ltx2s_video_stream_and_applies_to_both():
    """LTX-Video 13B's blocks have the names and sizes of LTX-2's video stream: a 13B LoRA fits both
    (reported as either) and applies to both models, never to the 2B."""
    tensors = fit_fixture_to_layout("ltx_video_trainer_comfy_ltxv_lora", layout_for("ltxv_13b"), rank=2, seed=3)
    det = Lora.from_state_dict(tensors).detection
    assert det.arch in ("ltxv_13b", "ltx2") and det.warnings == []
    assert refusal(det, "ltxv_13b") is None and refusal(det, "ltx2") is None
    assert refusal(det, "ltxv").text == f"an {det.arch_name} LoRA on an LTX-Video model"


#: fixture -> what ComfyUI 0.3.64 and 0.33 themselves patch of it (emulated; tests/host checks the emulation)
HOST_LOADS = {"ltx_video_trainer_ltxv_lora": ("none", "none"), "ltx_video_trainer_comfy_ltxv_lora": ("all", "all"),
              "ltx2_trainer_ltx2_lora": ("all", "all")}


@pytest.mark.parametrize("name", sorted(HOST_LOADS))
def test_what_comfyui_loads_and_what_we_map(name):
    for host, expected in zip(("0.3.64", "0.33.0"), HOST_LOADS[name]):
        assert_host_loads(name, expected, HOSTS[host])


@pytest.mark.parametrize("name,spec,zeroed", [
    ("ltx2_trainer_ltx2_lora", "A=0", {f"A{i:02d}" for i in range(48)}),
    ("ltx2_trainer_ltx2_lora", "LTX2-AUDIO-ONLY", {f"B{i:02d}" for i in range(48)}),
    ("ltx2_trainer_ltx2_lora", "B40-47=0, A00=0", {*(f"B{i}" for i in range(40, 48)), "A00"}),
    ("ltx_video_trainer_ltxv_lora", "LTXV-LATE", {f"B{i:02d}" for i in range(14)}),
    ("ltx_video_trainer_comfy_ltxv_lora", "B27=0", {"B27"}),
])
def test_spec_zeroes_exactly_the_named_absolute_blocks(name, spec, zeroed):
    assert_spec_zeroes(name, spec, zeroed)


def test_presets_are_offered_to_their_own_model():
    assert {"LTXV-BLOCKS-ONLY", "LTXV-EARLY", "LTXV-LATE"} <= set(preset_names("ltxv"))
    assert {"LTX2-VIDEO-ONLY", "LTX2-AUDIO-ONLY", "LTX2-BLOCKS-ONLY"} <= set(preset_names("ltx2"))
    assert "LTX2-AUDIO-ONLY" not in preset_names("ltxv")  # LTX-Video has no audio part
    with pytest.raises(SpecError):
        parse_block_weights("A=0", "ltxv")
    video = parse_block_weights("LTX2-VIDEO-ONLY", "ltx2")
    assert [b for b in standard_blocks("ltx2") if video.weight(b) == 0] == [f"A{i:02d}" for i in range(48)]


def test_inspect_reports_format_arch_and_blocks(tmp):
    path = materialize("ltx2_trainer_ltx2_lora", os.path.join(tmp, "ltx2.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name, s.family) == ("diffusion_pipe", "ltx2", "LTX-2", "ltxv")
    assert s.algorithms == {"LoRA": 1344}


def test_trainer_file_and_its_comfy_conversion_merge_to_the_dense_sum():
    a = fixture_lora("ltx_video_trainer_ltxv_lora", seed=1)
    b = fixture_lora("ltx_video_trainer_comfy_ltxv_lora", seed=2)
    assert_merges_to_dense_sum(a, b, 8)


def test_convert_makes_the_trainers_diffusers_file_one_comfyui_loads_whole(tmp):
    """LTX-Video-Trainer's ``transformer.*`` file, which ComfyUI drops whole on every host, converted: the
    same ΔW on every weight, under names both hosts load."""
    assert_converts_to_a_file_hosts_load("ltx_video_trainer_ltxv_lora", tmp, HOSTS.values())
