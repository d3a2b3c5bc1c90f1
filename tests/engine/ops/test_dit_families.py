"""Chroma, HunyuanVideo, Lumina 2 and HiDream-I1 through the engine: layouts against ComfyUI's model fixtures, detection
(metadata breaks Chroma's tie with Flux.1, width and depth tell HunyuanVideo from both), what
ComfyUI 0.3.64 itself loads of each producer's file, absolute block specs, and inspect, merge,
resize and convert against the math on the real fixture layouts."""
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import VECTOR_FORMS, parse_block_weights, preset_names, standard_blocks
from loralab.errors import SpecError
from loralab.formats.host_keys import HOSTS
from loralab.formats.model_weights import model_arch
from loralab.layouts import ModelLayout, layout_for
from loralab.layouts.archs import arch_from_metadata_string
from loralab.layouts.hidream import HIDREAM_CONFIG
from loralab.lora import Lora
from loralab.ops.coverage import refusal
from loralab.ops.inspect import summarize
from loralab.ops.lowrank import RankRule, one_thread
from loralab.ops.merge import MergeInput, merge, resize
from loralab_testkit import FixtureSource, fit_fixture_to_layout, fixture, materialize, model_shapes
from loralab_testkit.fixture_checks import assert_host_loads, assert_spec_zeroes

from engine.ops.test_merge import (Probes, assert_converts_to_a_file_hosts_load, assert_merges_to_dense_sum,
                                   assert_responds_as, assert_same, lora as fixture_lora, reference, response)

F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("arch_id,model", [("chroma", "chroma"), ("hunyuan_video", "hunyuan_video"),
                                           ("lumina2", "lumina2"), ("hidream", "hidream")])
def test_layout_equals_comfyuis_model_keys(arch_id, model):
    """The generated layout has exactly the keys and shapes of ComfyUI's model class (the fixture)."""
    ours = {k: v for k, v in layout_for(arch_id).shapes.items() if k.startswith("diffusion_model.")}
    assert ours == model_shapes(model, "unet")


def test_chroma_is_flux_without_modulation_plus_its_guidance_layer():
    flux, chroma = set(layout_for("flux").shapes), set(layout_for("chroma").shapes)
    only_flux = {k.split(".")[1] if k.startswith("diffusion_model.") else k.split(".")[0] for k in flux - chroma}
    assert only_flux == {"time_in", "vector_in", "guidance_in", "double_blocks", "single_blocks", "final_layer",
                         "clip_l"}
    assert not any(("_mod." in k or ".modulation." in k or "adaLN" in k) for k in chroma)
    assert {k.split(".")[1] for k in chroma - flux} == {"distilled_guidance_layer"}
    shared = chroma & flux
    assert all(layout_for("chroma").shapes[k] == layout_for("flux").shapes[k] for k in shared)


def test_norm_parameters_follow_the_host():
    """ComfyUI 0.33 builds Flux-style q/k norms (and Chroma's approximator norms) as RMSNorm ``weight``."""
    for arch_id in ("chroma", "hunyuan_video"):
        layout = layout_for(arch_id)
        renamed = layout.with_norm_param(HOSTS["0.33.0"].flux_norm_param)
        moved = {k for k in layout.shapes if k.endswith(".scale")}
        assert moved and {k[:-len("scale")] + "weight" for k in moved} <= set(renamed.shapes)
        assert not any(k.endswith(".scale") for k in renamed.shapes)
        keys = list(renamed.shapes)
        assert ModelLayout.from_config(arch_id, layout.config, keys).norm_param == "weight"


@pytest.mark.parametrize("value,arch_id", [("chroma/lora", "chroma"), ("chroma", "chroma"),
                                           ("hunyuan-video/lora", "hunyuan_video"), ("hunyuan_video", "hunyuan_video"),
                                           ("lumina-2/lora", "lumina2"), ("hidream", "hidream"),
                                           ("flux1", "flux")])
def test_metadata_strings(value, arch_id):
    assert arch_from_metadata_string(value) == arch_id


def test_block_ids():
    assert standard_blocks("chroma") == ["T5", "IN", *(f"D{i:02d}" for i in range(19)),
                                         *(f"S{i:02d}" for i in range(38)), "OUT"]
    assert standard_blocks("hunyuan_video") == ["IN", *(f"D{i:02d}" for i in range(20)),
                                                *(f"S{i:02d}" for i in range(40)), "OUT"]
    assert block_of("diffusion_model.distilled_guidance_layer.layers.3.in_layer.weight", "flux") == "IN"
    assert block_of("diffusion_model.txt_in.individual_token_refiner.blocks.1.mlp.0.weight", "hunyuan_video") == "IN"
    assert block_of("diffusion_model.final_layer.adaLN_modulation.1.weight", "hunyuan_video") == "OUT"
    assert standard_blocks("lumina2") == ["IN", *(f"L{i:02d}" for i in range(26)), "OUT"]
    assert block_of("diffusion_model.context_refiner.1.attention.qkv.weight", "lumina2") == "IN"
    assert block_of("diffusion_model.norm_final.weight", "lumina2") == "OUT"
    assert standard_blocks("hidream") == ["IN", *(f"D{i:02d}" for i in range(16)), *(f"S{i:02d}" for i in range(32)),
                                          "OUT"]
    assert block_of("diffusion_model.caption_projection.48.linear.weight", "hidream") == "IN"
    assert block_of("diffusion_model.double_stream_blocks.15.block.ff_i.experts.3.w2.weight", "hidream") == "D15"


def test_spec_grammar_knows_each_models_blocks():
    hv = parse_block_weights("D19=0, S38-39=0.5, IN=0", "hunyuan_video")
    assert (hv.weight("D19"), hv.weight("S38"), hv.weight("S39"), hv.weight("S37"), hv.weight("IN")) == (0, 0.5, 0.5, 1, 0)
    with pytest.raises(SpecError, match="D19"):
        parse_block_weights("D19=0", "chroma")  # Chroma, like Flux, ends at D18
    with pytest.raises(SpecError, match="CLIP"):
        parse_block_weights("CLIP=0", "chroma")  # T5 only
    vector = parse_block_weights(",".join(["0.5", "0"] + ["1"] * 57 + ["0.25"]), "chroma")
    assert (vector.weight("T5"), vector.weight("IN"), vector.weight("D00"), vector.weight("OUT")) == (0.5, 0, 1, 0.25)
    assert sorted(VECTOR_FORMS["chroma"]) == [57, 60]
    assert {"FLUX-DOUBLE", "FLUX-SGL-TAIL"} <= set(preset_names("chroma"))
    assert {"HUNYUAN-DOUBLE", "HUNYUAN-DBL-TAIL", "FLUX-DOUBLE"} <= set(preset_names("hunyuan_video"))
    assert "HUNYUAN-DBL-TAIL" not in preset_names("chroma") and "HUNYUAN-DBL-TAIL" not in preset_names("flux")
    lumina = parse_block_weights("L=0, L20-25=1, IN=0.5", "lumina2")
    assert (lumina.weight("L19"), lumina.weight("L20"), lumina.weight("IN"), lumina.weight("OUT")) == (0, 1, 0.5, 1)
    assert {"LUMINA-EARLY", "LUMINA-LATE", "LUMINA-LAYERS-ONLY"} <= set(preset_names("lumina2"))
    with pytest.raises(SpecError, match="L26"):
        parse_block_weights("L26=0", "lumina2")


def test_chroma_lora_without_metadata_fits_flux_and_chroma_alike():
    """Chroma's blocks are Flux's minus modulation: a Chroma LoRA's keys fit both, so the metadata
    decides; without it the LoRA reads as Flux.1 and still applies to a Chroma model whole."""
    plain = Lora(FixtureSource("kohya_chroma_lora"))
    assert plain.detection.arch == "chroma" and plain.detection.metadata_arch == "chroma"
    kohya_only = FixtureSource("kohya_chroma_lora")  # no modelspec: kohya's ss_model_type says it
    kohya_only.metadata = {k: v for k, v in kohya_only.metadata.items() if not k.startswith("modelspec.")}
    assert Lora(kohya_only).detection.arch == "chroma"
    src = FixtureSource("kohya_chroma_lora")
    src.metadata = {}
    bare = Lora(src)
    scores = {s.arch: s.fitting for s in bare.detection.scores}
    assert bare.detection.arch == "flux" and scores["flux"] == scores["chroma"] == 228
    assert refusal(bare.detection, "chroma") is None
    assert not list(Lora(src, layout_for("chroma")).unmapped())


def test_flux_lora_with_modulation_is_not_applied_to_chroma_in_part_silently():
    """A kohya Flux LoRA trains img_mod/txt_mod/modulation, which Chroma has not: it is a Flux LoRA."""
    flux = Lora(FixtureSource("kohya_flux_lora"))
    assert flux.detection.arch == "flux"
    cause = refusal(flux.detection, "chroma")
    assert cause.id == "other_arch" and "a Flux.1 LoRA on a Chroma model" in cause.text


def test_hunyuan_video_told_from_flux_by_its_blocks():
    """Its double and single blocks have Flux's widths; blocks D19 and S38-S39 and the 1D modules say which."""
    lora = Lora(FixtureSource("musubi_hunyuan_video_lora"))
    assert (lora.detection.format, lora.detection.arch) == ("musubi", "hunyuan_video")
    scores = {s.arch: s.fitting for s in lora.detection.scores}
    assert scores["hunyuan_video"] == 240 > scores["flux"]


#: fixture -> how many of its keys ComfyUI 0.3.64's own loader patches (emulated; tests/host checks the emulation)
HOST_LOADS = {"aitoolkit_chroma_lora": "all", "kohya_chroma_lora": "all", "diffusers_peft_chroma_lora": "all",
              "diffusion_pipe_hunyuan_video_lora": "all", "diffusers_peft_hunyuan_video_lora": 0,
              "musubi_hunyuan_video_lora": 720 - 3 * 80, "diffusion_pipe_lumina2_lora": "all",
              "kohya_lumina2_lora": "all", "diffusers_peft_lumina2_lora": 0, "diffusion_pipe_hidream_lora": "all",
              "diffusers_peft_hidream_lora": "all", "simpletuner_lycoris_hidream_lokr": "all"}


@pytest.mark.parametrize("name", sorted(HOST_LOADS))
def test_what_comfyui_loads_and_what_we_map(name):
    assert_host_loads(name, HOST_LOADS[name], HOSTS["0.3.64"])


@pytest.mark.parametrize("name,spec,zeroed", [
    ("aitoolkit_chroma_lora", "FLUX-DOUBLE", {f"S{i:02d}" for i in range(38)}),
    ("kohya_chroma_lora", "D05=0, S30-32=0", {"D05", "S30", "S31", "S32"}),
    ("musubi_hunyuan_video_lora", "HUNYUAN-DBL-TAIL", {f"D{i:02d}" for i in range(10)} | {f"S{i:02d}" for i in range(40)}),
    ("diffusers_peft_hunyuan_video_lora", "IN=0, D19=0", {"IN", "D19"}),
    ("kohya_lumina2_lora", "LUMINA-LATE", {f"L{i:02d}" for i in range(13)}),
    ("diffusion_pipe_lumina2_lora", "IN=0", {"IN"}),
    ("diffusion_pipe_hidream_lora", "HIDREAM-DOUBLE", {f"S{i:02d}" for i in range(32)}),
    ("simpletuner_lycoris_hidream_lokr", "D=0, S31=0", {*(f"D{i:02d}" for i in range(16)), "S31"}),
])
def test_spec_zeroes_exactly_the_named_absolute_blocks(name, spec, zeroed):
    assert_spec_zeroes(name, spec, zeroed)


def test_inspect_reports_format_arch_and_blocks(tmp):
    path = materialize("musubi_hunyuan_video_lora", os.path.join(tmp, "hv.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name, s.family) == ("musubi", "hunyuan_video", "HunyuanVideo", "hunyuan_video")
    assert len(s.host_dropped_we_map) == 80  # the MLP modules ComfyUI does not map
    path = materialize("aitoolkit_chroma_lora", os.path.join(tmp, "c.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name) == ("aitoolkit", "chroma", "Chroma")


def test_diffusers_and_musubi_hunyuan_merge_to_the_dense_sum():
    """Diffusers q/k/v slices and musubi's fused qkv merge into one module each."""
    a = fixture_lora("diffusers_peft_hunyuan_video_lora", seed=1)
    b = fixture_lora("musubi_hunyuan_video_lora", seed=2)
    assert_merges_to_dense_sum(a, b, 16)


def test_resize_chroma_exactly_at_full_rank():
    lo = fixture_lora("kohya_chroma_lora", rank=2, seed=3, metadata=fixture("loras", "kohya_chroma_lora")["metadata"])
    assert lo.detection.arch == "chroma"
    result = resize(MergeInput(lo), RankRule("fixed", 4096), dtype=F32)
    assert_responds_as(result.tensors, lo, 1e-5)


@pytest.mark.parametrize("name", ["diffusers_peft_hunyuan_video_lora", "musubi_hunyuan_video_lora",
                                  "diffusers_peft_lumina2_lora"])
def test_convert_to_names_comfyui_loads(name, tmp):
    """Converted, a HunyuanVideo or Lumina 2 LoRA that ComfyUI drops (all of it, or musubi's MLP) becomes one
    it loads whole."""
    assert_converts_to_a_file_hosts_load(name, tmp, [HOSTS["0.3.64"]])


def test_hidream_lokr_and_lora_merge_to_the_dense_sum():
    """SimpleTuner's full-dimension LoKr (its stored alpha unused) and a diffusers LoRA on the same
    attention layers, fitted to a small HiDream (full-width SVDs of every layer would take minutes)."""
    layout = ModelLayout.from_config("hidream", dict(HIDREAM_CONFIG, num_attention_heads=2, attention_head_dim=32,
                                                     num_layers=2, num_single_layers=2, num_routed_experts=2,
                                                     caption_channels=[32, 32], text_emb_dim=32))
    a = Lora.from_state_dict(fit_fixture_to_layout("simpletuner_lycoris_hidream_lokr", layout, seed=5), {}, layout)
    b = Lora.from_state_dict(fit_fixture_to_layout("diffusers_peft_hidream_lora", layout, seed=6), {}, layout)
    assert {e.kind for e in a.entries} == {"lokr"} and len(a.entries) == 8 * 2 + 4 * 2 and len(b.entries) == 4 * 4
    probes = Probes(layout)
    ref = reference([(a, 0.5, None), (b, 1.0, None)], probes, layout)
    result = merge([MergeInput(a, 0.5), MergeInput(b, 1.0)], "svd", RankRule("fixed", 4096), dtype=F32)
    assert_same(response(result.tensors, probes, layout), ref, 1e-5)


@pytest.mark.parametrize("model,arch_id", [("chroma", "chroma"), ("hunyuan_video", "hunyuan_video"),
                                           ("lumina2", "lumina2"), ("hidream", "hidream"), ("flux_dev", "flux")])
def test_model_files_name_their_arch(model, arch_id):
    """A diffusion-model file (no prefix) of each family reads as its own arch, Chroma's and
    HunyuanVideo's shared Flux-width blocks notwithstanding (the coverage doctor reads model files so)."""
    shapes = {k[len("diffusion_model."):]: v for k, v in model_shapes(model, "unet").items()}
    assert model_arch(shapes) == arch_id
