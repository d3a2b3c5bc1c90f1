"""Wan 2.1/2.2 and Qwen-Image through the engine: detection by width and image cross-attention,
what ComfyUI 0.3.64 itself loads of each producer's file, absolute block specs, and inspect, merge,
resize and convert against the math on the real fixture layouts."""
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import parse_block_weights, preset_names, standard_blocks
from loralab.layouts import ModelLayout, layout_for
from loralab.layouts.wan import WAN21_VACE_1_3B_CONFIG
from loralab.lora import Lora
from loralab.ops.inspect import summarize
from loralab.ops.lowrank import RankRule, one_thread
from loralab.ops.merge import MergeInput, resize
from loralab_testkit import FixtureSource, fit_fixture_to_layout, fixture, materialize
from loralab_testkit.fixture_checks import assert_host_loads, assert_spec_zeroes

from engine.ops.test_merge import (assert_converts_to_a_file_hosts_load, assert_merges_to_dense_sum,
                                   assert_responds_as, lora as fixture_lora)

F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("arch_id,blocks", [("wan21_t2v_14b", 40), ("wan21_i2v_14b", 40), ("wan21_t2v_1_3b", 30),
                                            ("wan22_ti2v_5b", 30), ("qwen_image", 60)])
def test_block_ids_are_in_b_out(arch_id, blocks):
    assert standard_blocks(arch_id) == ["IN", *(f"B{i:02d}" for i in range(blocks)), "OUT"]
    assert block_of("diffusion_model.OTHER.weight", layout_for(arch_id).arch.family) == "OTHER"


@pytest.mark.parametrize("target", ["wan22_ti2v_5b", "wan21_t2v_1_3b"])
def test_wan_size_comes_from_the_width(target):
    """The 14B musubi layout fitted to a smaller Wan: the widths alone say which model it is."""
    tensors = fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", layout_for(target), rank=2)
    lora = Lora.from_state_dict(tensors, fixture("loras", "musubi_wan21_t2v_14b_lora")["metadata"])
    assert (lora.detection.arch, lora.detection.format) == (target, "musubi")
    assert not list(lora.unmapped())


def test_i2v_and_t2v_told_apart_by_the_image_cross_attention():
    i2v = Lora(FixtureSource("diffusion_pipe_wan21_i2v_14b_lora"))
    assert i2v.detection.arch == "wan21_i2v_14b"
    t2v_only = {k: v for k, v in fit_fixture_to_layout("diffusion_pipe_wan21_i2v_14b_lora",
                                                       layout_for("wan21_i2v_14b"), rank=2).items()
                if "_img." not in k}
    assert Lora.from_state_dict(t2v_only).detection.arch == "wan21_t2v_14b"  # fits both: T2V, the first


def test_metadata_is_evidence_not_truth():
    src = FixtureSource("musubi_wan21_t2v_14b_lora")
    src.metadata = dict(src.metadata, **{"ss_base_model_version": "qwen_image",
                                         "modelspec.architecture": "Qwen-Image/lora"})
    lora = Lora(src)
    assert lora.detection.arch == "wan21_t2v_14b" and lora.detection.metadata_arch == "qwen_image"
    assert any("metadata says Qwen-Image" in w for w in lora.detection.warnings)


#: fixture -> how many of its keys ComfyUI 0.3.64's own loader patches (emulated; tests/host checks the emulation)
HOST_LOADS = {"musubi_wan21_t2v_14b_lora": "all", "diffusion_pipe_wan21_i2v_14b_lora": "all",
              "diffusers_peft_wan21_t2v_14b_lora": "none", "peft_default_wan21_t2v_1_3b_lora": "none",
              "musubi_qwen_image_lora": "all", "diffusers_peft_qwen_image_lora": "all"}


@pytest.mark.parametrize("name", sorted(HOST_LOADS))
def test_what_comfyui_loads_and_what_we_map(name):
    assert_host_loads(name, HOST_LOADS[name])


@pytest.mark.parametrize("name,spec,zeroed", [
    ("musubi_wan21_t2v_14b_lora", "B05=0, B30-32=0", {"B05", "B30", "B31", "B32"}),
    ("peft_default_wan21_t2v_1_3b_lora", "WAN-LATE", {f"B{i:02d}" for i in range(20)}),
    ("musubi_qwen_image_lora", "QWEN-MID", {f"B{i:02d}" for i in [*range(20), *range(40, 60)]}),
    ("diffusers_peft_qwen_image_lora", "B=0.5, B59=0", {"B59"}),
])
def test_spec_zeroes_exactly_the_named_absolute_blocks(name, spec, zeroed):
    assert_spec_zeroes(name, spec, zeroed)


def test_presets_of_each_family_are_offered():
    assert {"WAN-EARLY", "WAN-LATE", "WAN-BLOCKS-ONLY"} <= set(preset_names("wan21_t2v_1_3b"))
    assert {"QWEN-EARLY", "QWEN-MID", "QWEN-LATE"} <= set(preset_names("qwen_image"))
    assert "QWEN-LATE" not in preset_names("wan21_t2v_14b")  # B40..B59 do not exist in Wan
    late = parse_block_weights("WAN-LATE", "wan21_t2v_14b")  # the 40-block form
    assert [b for b in standard_blocks("wan21_t2v_14b") if late.weight(b) == 1] == \
        ["IN", *(f"B{i:02d}" for i in range(30, 40)), "OUT"]


def test_inspect_reports_format_arch_and_blocks(tmp):
    path = materialize("musubi_qwen_image_lora", os.path.join(tmp, "q.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name, s.family) == ("musubi", "qwen_image", "Qwen-Image", "qwen_image")
    assert s.algorithms == {"LoRA": 840}


def test_diffusers_and_musubi_wan_merge_to_the_dense_sum():
    a = fixture_lora("diffusers_peft_wan21_t2v_14b_lora", seed=1)
    b = fixture_lora("musubi_wan21_t2v_14b_lora", seed=2)
    assert_merges_to_dense_sum(a, b, 8, "lora_unet_blocks_")


def test_a_t2v_and_a_vace_lora_merge_on_the_vace_model_to_the_dense_sum():
    """The VACE LoRA second: the merge takes the layout that holds both (VACE 1.3B)."""
    vace = ModelLayout.from_config("wan21_t2v_1_3b", WAN21_VACE_1_3B_CONFIG)
    t2v = fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", vace, rank=2, seed=4)
    vace_blocks = {k.replace("lora_unet_blocks_", "lora_unet_vace_blocks_"): v
                   for k, v in fit_fixture_to_layout("musubi_wan21_t2v_14b_lora", vace, rank=2, seed=5).items()
                   if k.startswith("lora_unet_blocks_") and int(k.split("_")[3]) < 15}
    a, b = Lora.from_state_dict(t2v), Lora.from_state_dict({**t2v, **vace_blocks})
    assert len(a.layout.shapes) < len(b.layout.shapes) == len(vace.shapes)
    assert_merges_to_dense_sum(a, b, 8)


def test_resize_qwen_exactly_at_full_rank():
    lo = fixture_lora("musubi_qwen_image_lora", rank=2, seed=3)
    result = resize(MergeInput(lo), RankRule("fixed", 4096), dtype=F32)
    assert_responds_as(result.tensors, lo, 1e-5)


@pytest.mark.parametrize("name", ["diffusers_peft_wan21_t2v_14b_lora", "peft_default_wan21_t2v_1_3b_lora",
                                  "diffusers_peft_qwen_image_lora"])
def test_convert_to_kohya_names_comfyui_loads(name, tmp):
    """Converted, a diffusers/PEFT Wan LoRA that ComfyUI drops becomes one it loads whole."""
    assert_converts_to_a_file_hosts_load(name, tmp, fmt="musubi")
