"""Z-Image through the engine: detection (every producer, metadata strings), what ComfyUI 0.33
itself loads of each producer's file, absolute block specs over layers and refiners with presets,
and inspect, merge and convert against the math on the real fixture layouts."""
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import parse_block_weights, preset_names, standard_blocks
from loralab.layouts import layout_for
from loralab.layouts.archs import arch_from_metadata_string
from loralab.lora import Lora
from loralab.ops.inspect import summarize
from loralab.ops.lowrank import one_thread
from loralab_testkit import FixtureSource, materialize
from loralab_testkit.fixture_checks import assert_host_loads, assert_spec_zeroes

from engine.ops.test_merge import (assert_converts_to_a_file_hosts_load, assert_merges_to_dense_sum,
                                   lora as fixture_lora)

F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def test_block_ids_are_layers_and_refiners():
    assert standard_blocks("z_image") == ["IN", "NR00", "NR01", "CR00", "CR01", *(f"L{i:02d}" for i in range(30)), "OUT"]
    layout = layout_for("z_image")
    assert {block_of(k, "z_image") for k in layout.shapes if "pad_token" in k or "embedder" in k} == {"IN"}
    assert "OTHER" not in {block_of(k, "z_image") for k in layout.shapes}


@pytest.mark.parametrize("value,arch_id", [("zimage", "z_image"), ("z_image", "z_image"), ("Z-Image-Turbo", "z_image"),
                                           ("Z-Image/lora", "z_image")])
def test_metadata_strings(value, arch_id):
    assert arch_from_metadata_string(value) == arch_id


def test_metadata_agrees_with_the_weights():
    det = Lora(FixtureSource("aitoolkit_z_image_lora")).detection
    assert (det.arch, det.metadata_arch, det.warnings) == ("z_image", "z_image", [])


#: fixture -> how many of its keys ComfyUI 0.33's own loader patches (emulated; tests/host checks the emulation)
HOST_LOADS = {"aitoolkit_z_image_lora": 480, "musubi_comfy_z_image_lora": 450, "musubi_z_image_lora": 630 - 360,
              "peft_default_z_image_lora": 0}


@pytest.mark.parametrize("name", sorted(HOST_LOADS))
def test_what_comfyui_loads_and_what_we_map(name):
    assert_host_loads(name, HOST_LOADS[name])


@pytest.mark.parametrize("name,spec,zeroed", [
    ("aitoolkit_z_image_lora", "L05=0, L20-22=0", {"L05", "L20", "L21", "L22"}),
    ("musubi_z_image_lora", "ZIMAGE-LATE", {f"L{i:02d}" for i in range(20)}),
    ("musubi_comfy_z_image_lora", "ZIMAGE-MID", {f"L{i:02d}" for i in [*range(10), *range(20, 30)]}),
])
def test_spec_zeroes_exactly_the_named_absolute_blocks(name, spec, zeroed):
    assert_spec_zeroes(name, spec, zeroed, "z_image")


def test_presets_are_offered():
    assert {"ZIMAGE-LAYERS-ONLY", "ZIMAGE-EARLY", "ZIMAGE-MID", "ZIMAGE-LATE"} <= set(preset_names("z_image"))
    only = parse_block_weights("ZIMAGE-LAYERS-ONLY", "z_image")
    assert [b for b in standard_blocks("z_image") if only.weight(b) == 1] == [f"L{i:02d}" for i in range(30)]


def test_inspect_reports_format_arch_and_blocks(tmp):
    path = materialize("musubi_z_image_lora", os.path.join(tmp, "z.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name, s.family) == ("musubi", "z_image", "Z-Image", "z_image")
    assert s.algorithms == {"LoRA": 210}


def test_musubi_and_its_comfy_conversion_merge_to_the_dense_sum():
    a = fixture_lora("musubi_z_image_lora", seed=1)
    b = fixture_lora("musubi_comfy_z_image_lora", seed=2)
    assert_merges_to_dense_sum(a, b, 8)


@pytest.mark.parametrize("name", ["musubi_z_image_lora", "peft_default_z_image_lora"])
def test_convert_to_names_comfyui_loads_whole(name, tmp):
    """Converted, musubi's Z-Image LoRA (attention under diffusers names, which ComfyUI drops) or a raw
    PEFT state dict (dropped whole) becomes one ComfyUI loads whole: the same ΔW on every weight."""
    assert_converts_to_a_file_hosts_load(name, tmp, fmt="musubi")
