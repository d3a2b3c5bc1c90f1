"""Where a LoRA's keys fit several architectures exactly as well and its metadata names none,
detection keeps its pick but inspect says which others the keys fit; where the block count or a
key decides, or the metadata names one, it says nothing more."""
import os

import pytest
import torch

from loralab.files.safetensors import save_tensors
from loralab.layouts import layout_for
from loralab.lora import Lora
from loralab.ops.inspect import summarize
from loralab_testkit import FixtureSource

#: Flux.1's double-block attention (kohya name -> BFL name), the same in Chroma, Flux.2 Klein 4B (3072
#: wide, 5 double blocks) and HunyuanVideo (3072 wide, 20 double blocks)
ATTENTION = {"img_attn_qkv": "img_attn.qkv", "img_attn_proj": "img_attn.proj", "txt_attn_qkv": "txt_attn.qkv",
             "txt_attn_proj": "txt_attn.proj"}
IMG_MOD = {"img_mod_lin": "img_mod.lin"}


def kohya(blocks, layers=ATTENTION):
    """A kohya-named LoRA of ``layers`` in the double ``blocks`` (rank 2, the shapes of Flux.1's block 0)."""
    shapes = layout_for("flux").shapes
    tensors = {}
    for b in blocks:
        for layer, bfl in layers.items():
            out, fan_in = shapes[f"diffusion_model.double_blocks.0.{bfl}.weight"]
            tensors[f"lora_unet_double_blocks_{b}_{layer}.lora_down.weight"] = torch.zeros(2, fan_in)
            tensors[f"lora_unet_double_blocks_{b}_{layer}.lora_up.weight"] = torch.zeros(out, 2)
    return tensors


def test_double_block_attention_fits_four_architectures_and_inspect_says_so(tmp):
    det = Lora.from_state_dict(kohya(range(5))).detection
    assert (det.arch, det.also_fits, det.warnings) == ("flux", ["flux2_klein_4b", "chroma", "hunyuan_video"], [])
    s = summarize(save_tensors(os.path.join(tmp, "a.safetensors"), kohya(range(5))))
    label = "Flux.1 (keys also fit Flux.2 Klein 4B, Chroma, HunyuanVideo)"
    assert s.arch_label == label and f"base model: {label}" in s.to_text()
    assert s.verdict().startswith(f"LoRA for {label}: 20 of 20 modules map onto it")
    assert s.to_dict()["arch"]["also_fits"] == [{"id": "flux2_klein_4b", "name": "Flux.2 Klein 4B"},
                                                {"id": "chroma", "name": "Chroma"},
                                                {"id": "hunyuan_video", "name": "HunyuanVideo"}]


def test_the_block_count_decides_what_it_can():
    """Klein 4B has 5 double blocks: D05 rules it out; HunyuanVideo has 20, Chroma Flux.1's 19."""
    assert Lora.from_state_dict(kohya(range(7))).detection.also_fits == ["chroma", "hunyuan_video"]
    det = Lora.from_state_dict(kohya(range(20))).detection
    assert (det.arch, det.also_fits) == ("hunyuan_video", [])  # D19 exists in HunyuanVideo only


def test_a_layer_some_lack_decides_between_those():
    """Chroma has no per-block modulation and Flux.2 shares one; HunyuanVideo's double blocks are Flux.1's."""
    det = Lora.from_state_dict(kohya(range(5), {**ATTENTION, **IMG_MOD})).detection
    assert (det.arch, det.also_fits) == ("flux", ["hunyuan_video"])


@pytest.mark.parametrize("claim,arch_id", [("flux1", "flux"), ("chroma", "chroma"), ("flux2_klein_4b", "flux2_klein_4b"),
                                           ("hunyuan_video", "hunyuan_video")])
def test_metadata_that_names_one_decides(claim, arch_id):
    det = Lora.from_state_dict(kohya(range(5)), {"ss_base_model_version": claim}).detection
    assert (det.arch, det.also_fits, det.warnings) == (arch_id, [], [])


@pytest.mark.parametrize("name,also", [("xlabs_flux_lora", ["chroma"]), ("musubi_wan21_t2v_14b_lora", ["wan21_i2v_14b"]),
                                       ("kohya_flux_lora", []), ("kohya_chroma_lora", [])])
def test_fixtures(name, also):
    assert Lora(FixtureSource(name)).detection.also_fits == also
