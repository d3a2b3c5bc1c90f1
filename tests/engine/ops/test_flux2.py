"""Flux.2 (dev, Klein 4B and 9B) through the engine: its own archs beside Flux.1 (same BFL names,
told apart by width and by the keys only Flux.2 has), dev vs Klein by width, metadata strings,
what ComfyUI 0.33 itself loads of each producer's file, absolute block specs and presets, and
inspect, merge and convert against the math on the real fixture layouts."""
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import parse_block_weights, preset_names, standard_blocks
from loralab.errors import SpecError
from loralab.formats.model_weights import model_arch
from loralab.layouts import layout_for
from loralab.layouts.archs import arch_from_metadata_string
from loralab.lora import Lora
from loralab.ops.coverage import refusal
from loralab.ops.inspect import summarize
from loralab.ops.lowrank import one_thread
from loralab_testkit import FixtureSource, fit_fixture_to_layout, fixture, materialize
from loralab_testkit.fixture_checks import assert_host_loads, assert_spec_zeroes

from engine.ops.test_merge import (assert_converts_to_a_file_hosts_load, assert_merges_to_dense_sum,
                                   lora as fixture_lora)

F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("arch_id,double,single", [("flux2_dev", 8, 48), ("flux2_klein_9b", 8, 24),
                                                   ("flux2_klein_4b", 5, 20)])
def test_block_ids_are_flux_ones_and_the_shared_modulation_is_in(arch_id, double, single):
    assert standard_blocks(arch_id) == ["IN", *(f"D{i:02d}" for i in range(double)),
                                        *(f"S{i:02d}" for i in range(single)), "OUT"]
    layout = layout_for(arch_id)
    assert {block_of(k, "flux") for k in layout.shapes if "modulation_" in k or "stream_modulation" in k} == {"IN"}
    assert "OTHER" not in {block_of(k, "flux") for k in layout.shapes}


@pytest.mark.parametrize("target", ["flux2_dev", "flux2_klein_9b"])
def test_dev_and_klein_told_apart_by_the_width(target):
    """The Klein 4B ai-toolkit layout fitted to the other sizes: the widths alone say which model it is."""
    tensors = fit_fixture_to_layout("aitoolkit_flux2_klein_4b_lora", layout_for(target), rank=2)
    lora = Lora.from_state_dict(tensors)
    assert lora.detection.arch == target and not list(lora.unmapped())


def test_flux2_and_flux1_told_apart_by_the_keys_only_flux2_has():
    """Klein 4B is as wide as Flux.1 (3072): its fused single-block linear1 (3 x 3072 + 2 x 9216 rows)
    and shared modulation fit no Flux.1 weight, so those keys alone name it."""
    layout = layout_for("flux2_klein_4b")
    names = ("diffusion_model.single_blocks.3.linear1", "diffusion_model.double_stream_modulation_img.lin")
    tensors = {}
    for n in names:
        out, fan_in = layout.shapes[n + ".weight"]
        tensors[n + ".lora_A.weight"] = torch.zeros(2, fan_in)
        tensors[n + ".lora_B.weight"] = torch.zeros(out, 2)
    det = Lora.from_state_dict(tensors).detection
    scores = {s.arch: s.fitting for s in det.scores}
    assert det.arch == "flux2_klein_4b" and scores["flux2_klein_4b"] == 2 and scores["flux"] == 0


def test_a_flux1_lora_is_flux1_and_refused_on_flux2():
    lora = Lora(FixtureSource("kohya_flux_lora"))
    assert lora.detection.arch == "flux"
    for model, name in (("flux2_klein_4b", "Flux.2 Klein 4B"), ("flux2_dev", "Flux.2 dev")):
        cause = refusal(lora.detection, model)
        assert (cause.id, cause.text) == ("other_arch", f"a Flux.1 LoRA on a {name} model")
    assert refusal(Lora(FixtureSource("aitoolkit_flux2_klein_4b_lora")).detection, "flux").id == "other_arch"


@pytest.mark.parametrize("value,arch_id", [("flux2", "flux2_dev"), ("flux2_klein_4b", "flux2_klein_4b"),
                                           ("flux_2_klein_9b", "flux2_klein_9b"), ("flux-2-dev/lora", "flux2_dev"),
                                           ("FLUX.2 [klein] 4B", "flux2_klein_4b"), ("flux_2_klein", None),
                                           ("flux.1", "flux"), ("flux-1-dev/lora", "flux")])
def test_metadata_strings(value, arch_id):
    assert arch_from_metadata_string(value) == arch_id


def test_metadata_agrees_with_the_weights():
    det = Lora(FixtureSource("aitoolkit_flux2_klein_4b_lora")).detection
    assert (det.arch, det.metadata_arch, det.warnings) == ("flux2_klein_4b", "flux2_klein_4b", [])


#: fixture -> how many of its keys ComfyUI 0.33's own loader patches (emulated; tests/host checks the emulation)
HOST_LOADS = {"aitoolkit_flux2_klein_4b_lora": "all", "musubi_flux2_klein_4b_lora": "all",
              "diffusers_peft_flux2_dev_lora": "all", "peft_default_flux2_klein_9b_lora": "none"}


@pytest.mark.parametrize("name", sorted(HOST_LOADS))
def test_what_comfyui_loads_and_what_we_map(name):
    assert_host_loads(name, HOST_LOADS[name])


@pytest.mark.parametrize("name,spec,zeroed", [
    ("aitoolkit_flux2_klein_4b_lora", "D02=0, S10-12=0", {"D02", "S10", "S11", "S12"}),
    ("diffusers_peft_flux2_dev_lora", "FLUX2-DOUBLE", {f"S{i:02d}" for i in range(48)}),
    ("peft_default_flux2_klein_9b_lora", "FLUX2-BLOCKS-ONLY", {"IN", "OUT"}),
    ("musubi_flux2_klein_4b_lora", "FLUX2-SINGLE", {f"D{i:02d}" for i in range(5)}),
])
def test_spec_zeroes_exactly_the_named_absolute_blocks(name, spec, zeroed):
    assert_spec_zeroes(name, spec, zeroed)


def test_presets_and_ranges_follow_each_size():
    for arch_id in ("flux2_dev", "flux2_klein_4b", "flux2_klein_9b"):
        assert {"FLUX2-DOUBLE", "FLUX2-SINGLE", "FLUX2-BLOCKS-ONLY"} <= set(preset_names(arch_id))
    assert "FLUX-DBL-TAIL" not in preset_names("flux2_dev")  # D13..D18 are Flux.1's
    with pytest.raises(SpecError, match="D07 does not exist in Flux.2 Klein 4B"):
        parse_block_weights("D4-7=0", "flux2_klein_4b")


def test_inspect_reports_format_arch_and_blocks(tmp):
    path = materialize("musubi_flux2_klein_4b_lora", os.path.join(tmp, "f2.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name, s.family) == ("musubi", "flux2_klein_4b", "Flux.2 Klein 4B", "flux")
    assert s.algorithms == {"LoRA": 80}


def test_ai_toolkit_and_musubi_merge_to_the_dense_sum():
    a = fixture_lora("aitoolkit_flux2_klein_4b_lora", seed=1)
    b = fixture_lora("musubi_flux2_klein_4b_lora", seed=2)
    assert_merges_to_dense_sum(a, b, 8, "lora_unet_")


def test_convert_raw_peft_to_kohya_names_comfyui_loads(tmp):
    """Converted, a PEFT state dict ComfyUI drops whole (embedders and shared modulation under diffusers
    names, q/k/v in rows of the fused weights, norm_out's halves swapped) becomes one it loads whole."""
    assert_converts_to_a_file_hosts_load("peft_default_flux2_klein_9b_lora", tmp, fmt="musubi")


@pytest.mark.parametrize("arch_id", ["flux2_dev", "flux2_klein_4b", "flux2_klein_9b"])
def test_a_flux2_model_file_is_its_own_arch(arch_id):
    """A diffusion-model file as BFL ships it (no prefix, q/k norms named ``scale``) names its size;
    Flux.1-dev's stays Flux.1."""
    shapes = {k[len("diffusion_model."):].replace("_norm.weight", "_norm.scale"): tuple(v["shape"])
              for k, v in fixture("models", arch_id)["tensors"].items()}
    assert model_arch(shapes) == arch_id
    flux1 = {k: tuple(v["shape"]) for k, v in fixture("models", "flux_dev")["tensors"].items()}
    assert model_arch(flux1) == "flux"
