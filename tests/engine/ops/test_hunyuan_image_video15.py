"""HunyuanImage 2.1 and HunyuanVideo 1.5 through the engine: layouts against ComfyUI's model fixtures, metadata
strings, block ids and presets, detection (widths and depths tell them from HunyuanVideo), what ComfyUI itself
loads of each producer's file, absolute block specs, and inspect, merge and convert against the math."""
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import parse_block_weights, preset_names, standard_blocks
from loralab.errors import SpecError
from loralab.formats.host_keys import HOSTS
from loralab.formats.model_weights import model_arch
from loralab.layouts import layout_for
from loralab.layouts.archs import arch_from_metadata_string
from loralab.lora import Lora
from loralab.ops.inspect import summarize
from loralab.ops.lowrank import one_thread
from loralab_testkit import FixtureSource, materialize, model_shapes
from loralab_testkit.fixture_checks import assert_host_loads, assert_spec_zeroes

from engine.ops.test_merge import (assert_converts_to_a_file_hosts_load, assert_merges_to_dense_sum,
                                   lora as fixture_lora)

F32 = torch.float32
#: the ComfyUI each model fixture was generated with: HunyuanVideo 1.5 exists since 0.33 only
FIXTURE_HOST = {"hunyuan_image21": "0.3.64", "hunyuan_video15": "0.33.0"}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("arch_id", sorted(FIXTURE_HOST))
def test_layout_equals_comfyuis_model_keys(arch_id):
    """The generated layout, with the host's q/k norm names, has exactly the keys and shapes of ComfyUI's class."""
    layout = layout_for(arch_id).with_norm_param(HOSTS[FIXTURE_HOST[arch_id]].flux_norm_param)
    assert {k: v for k, v in layout.shapes.items() if k.startswith("diffusion_model.")} == model_shapes(arch_id, "unet")


def test_hunyuan_image21_and_video15_are_hunyuan_video_with_more_modules():
    hv = {k.split(".")[1] for k in layout_for("hunyuan_video").shapes}
    hi = {k.split(".")[1] for k in layout_for("hunyuan_image21").shapes}
    hv15 = {k.split(".")[1] for k in layout_for("hunyuan_video15").shapes}
    assert hi - hv == {"byt5_in"} and hv - hi == {"vector_in", "guidance_in"}
    assert hv15 - hv == {"byt5_in", "vision_in", "cond_type_embedding"}
    assert hv - hv15 == {"vector_in", "guidance_in", "single_blocks"}
    assert layout_for("hunyuan_image21").shapes["diffusion_model.double_blocks.19.img_attn.qkv.weight"] == (3 * 3584, 3584)
    assert layout_for("hunyuan_video15").shapes["diffusion_model.double_blocks.53.txt_mlp.0.weight"] == (4 * 2048, 2048)
    refiner = layout_for("hunyuan_image21_refiner").shapes
    assert refiner["diffusion_model.img_in.proj.weight"] == (3328, 128, 1, 1, 1)
    assert refiner["diffusion_model.time_r_in.in_layer.weight"] == (3328, 256)
    hv15 = layout_for("hunyuan_video15")
    for diffusers, ours in (("context_embedder_2.linear_3", "byt5_in.fc3"), ("image_embedder.linear_2", "vision_in.proj.3"),
                            ("cond_type_embed", "cond_type_embedding")):
        assert hv15.resolve_unet(diffusers).module == "diffusion_model." + ours


def test_original_split_names_are_rows_of_the_fused_weights():
    """The original code's q, k, v (and single blocks' MLP input) are row slices of ComfyUI's fused weights."""
    layout = layout_for("hunyuan_image21")
    h = 3584
    for name, key, rows in (("double_blocks.3.img_attn_k", "double_blocks.3.img_attn.qkv", (h, h)),
                            ("double_blocks.3.txt_attn_v", "double_blocks.3.txt_attn.qkv", (2 * h, h)),
                            ("single_blocks.7.linear1_v", "single_blocks.7.linear1", (2 * h, h)),
                            ("single_blocks.7.linear1_mlp", "single_blocks.7.linear1", (3 * h, 4 * h))):
        res = layout.resolve_unet(name)
        assert (res.module, res.rows) == ("diffusion_model." + key, rows)
    assert layout.resolve_unet("single_blocks_7_linear2_fc", underscore=True).module == "diffusion_model.single_blocks.7.linear2"


@pytest.mark.parametrize("value,arch_id", [
    ("hunyuan-image-2.1/lora", "hunyuan_image21"), ("hunyuan_image_2.1", "hunyuan_image21"),
    ("hunyuan-image-2.1-refiner/lora", "hunyuan_image21_refiner"), ("hunyuan-video-1.5/lora", "hunyuan_video15"),
    ("hunyuan_video_1_5", "hunyuan_video15"), ("hv15", "hunyuan_video15"), ("hunyuan-video/lora", "hunyuan_video"),
    ("hunyuan_video", "hunyuan_video")])
def test_metadata_strings(value, arch_id):
    assert arch_from_metadata_string(value) == arch_id


def test_block_ids_and_presets():
    assert standard_blocks("hunyuan_image21") == standard_blocks("hunyuan_video")
    assert standard_blocks("hunyuan_video15") == ["IN", *(f"D{i:02d}" for i in range(54)), "OUT"]
    for key in ("byt5_in.fc3.weight", "time_r_in.out_layer.weight", "vision_in.proj.3.weight",
                "cond_type_embedding.weight"):
        assert block_of("diffusion_model." + key, "hunyuan_video") == "IN"
    spec = parse_block_weights("HUNYUAN15-LATE", "hunyuan_video15")
    assert (spec.weight("D35"), spec.weight("D36"), spec.weight("D53"), spec.weight("IN")) == (0, 1, 1, 1)
    with pytest.raises(SpecError, match="D54"):
        parse_block_weights("D54=0", "hunyuan_video15")
    with pytest.raises(SpecError):
        parse_block_weights("S=0", "hunyuan_video15")  # no single-stream block
    assert {"HUNYUAN15-EARLY", "HUNYUAN15-MID", "HUNYUAN15-LATE", "HUNYUAN15-BLOCKS-ONLY"} <= set(
        preset_names("hunyuan_video15"))
    assert "HUNYUAN-DBL-TAIL" in preset_names("hunyuan_image21") and "HUNYUAN15-LATE" not in preset_names("hunyuan_video")


@pytest.mark.parametrize("name,arch_id,fmt,count", [("kohya_hunyuan_image21_lora", "hunyuan_image21", "kohya", 320),
                                                    ("musubi_hunyuan_video15_lora", "hunyuan_video15", "musubi", 756)])
def test_told_from_hunyuan_video_by_the_weights(name, arch_id, fmt, count):
    """Without metadata too: HunyuanImage 2.1's width (3584) and HunyuanVideo 1.5's (2048, 54 double blocks)."""
    src = FixtureSource(name)
    src.metadata = {}
    lora = Lora(src)
    assert (lora.detection.format, lora.detection.arch) == (fmt, arch_id)
    scores = {s.arch: s.fitting for s in lora.detection.scores}
    assert scores[arch_id] == count and scores["hunyuan_video"] == 0
    assert Lora(FixtureSource(name)).detection.metadata_arch == arch_id


#: fixture -> (host, how many of its keys that ComfyUI's own loader patches (emulated; tests/host checks it))
HOST_LOADS = {"kohya_hunyuan_image21_lora": ("0.3.64", 3 * (4 * 20 + 2 * 40)),  # attn_qkv/proj, linear1/2
              "musubi_hunyuan_video15_lora": ("0.33.0", 3 * 2 * 54),  # img/txt attn_proj
              "diffusers_peft_hunyuan_video15_lora": ("0.33.0", 0)}  # diffusers names: none


@pytest.mark.parametrize("name", sorted(HOST_LOADS))
def test_what_comfyui_loads_and_what_we_map(name):
    host, count = HOST_LOADS[name]
    assert_host_loads(name, count, HOSTS[host])


@pytest.mark.parametrize("name,spec,zeroed", [
    ("kohya_hunyuan_image21_lora", "HUNYUAN-DBL-TAIL", {f"D{i:02d}" for i in range(10)} | {f"S{i:02d}" for i in range(40)}),
    ("musubi_hunyuan_video15_lora", "HUNYUAN15-LATE", {f"D{i:02d}" for i in range(36)}),
    ("musubi_hunyuan_video15_lora", "D00=0, D53=0", {"D00", "D53"}),
    ("diffusers_peft_hunyuan_video15_lora", "IN=0, D18-53=0", {"IN", *(f"D{i:02d}" for i in range(18, 54))}),
])
def test_spec_zeroes_exactly_the_named_absolute_blocks(name, spec, zeroed):
    assert_spec_zeroes(name, spec, zeroed)


def test_inspect_reports_format_arch_and_what_comfyui_drops(tmp):
    path = materialize("musubi_hunyuan_video15_lora", os.path.join(tmp, "hv15.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name, s.family) == ("musubi", "hunyuan_video15", "HunyuanVideo 1.5",
                                                         "hunyuan_video")
    assert len(s.host_dropped_we_map) == 756 - 108  # all but the attention output projections
    path = materialize("kohya_hunyuan_image21_lora", os.path.join(tmp, "hi.safetensors"), rank=2)
    s = summarize(path)
    assert (s.format, s.arch, s.arch_name) == ("kohya", "hunyuan_image21", "HunyuanImage 2.1")
    assert len(s.host_dropped_we_map) == 160  # mod, MLP and modulation layers


def test_musubi_split_qkv_merges_to_the_dense_sum():
    """musubi's separate q, k and v of one fused weight merge into one module (rank 2 each: 12 for both files'
    qkv, which an SVD at rank 16 keeps exactly)."""
    assert_merges_to_dense_sum(fixture_lora("musubi_hunyuan_video15_lora", seed=1),
                               fixture_lora("musubi_hunyuan_video15_lora", seed=2), 16)


@pytest.mark.parametrize("name,host", [("musubi_hunyuan_video15_lora", "0.33.0"),
                                       ("diffusers_peft_hunyuan_video15_lora", "0.33.0"),
                                       ("kohya_hunyuan_image21_lora", "0.3.64")])
def test_convert_to_names_comfyui_loads(name, host, tmp):
    """Converted, a file ComfyUI loads in part or not at all (split q/k/v, sd-scripts' mod and MLP names, diffusers
    names) becomes one it loads whole."""
    assert_converts_to_a_file_hosts_load(name, tmp, [HOSTS[host]])


@pytest.mark.parametrize("model", sorted(FIXTURE_HOST))
def test_model_files_name_their_arch(model):
    """A diffusion-model file (no prefix) reads as its own arch, not HunyuanVideo's."""
    shapes = {k[len("diffusion_model."):]: v for k, v in model_shapes(model, "unet").items()}
    assert model_arch(shapes) == model
