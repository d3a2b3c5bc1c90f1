"""A checkpoint, an embedding, a VAE or a text encoder picked as a LoRA says what it looks like, in
inspect's verdict and warnings and in the loader's plan, instead of listing every key as unknown;
files that hold LoRA tensors, or nothing recognisable, are never called one of those."""
import os

import pytest
import torch

from loralab.blocks.spec import parse_block_weights
from loralab.files.safetensors import save_tensors
from loralab.formats.not_lora import looks_like, not_a_lora
from loralab.layouts import layout_for
from loralab.lora import Lora
from loralab.ops.apply import plan_application
from loralab.ops.inspect import inspect_lora, summarize
from loralab_testkit import LORA_FIXTURES, fixture_tensors

Z = torch.zeros(2, 2)
#: kind -> the keys of a small file of that kind, as the real ones name them
FILES = {
    "checkpoint": ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight",
                   "first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.conv_out.weight",
                   "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"],
    "flux diffusion model": ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight",
                             "img_in.weight", "final_layer.linear.weight"],
    "textual-inversion embedding": ["emb_params"],
    "sdxl embedding": ["clip_l", "clip_g"],
    "VAE": ["encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight", "decoder.conv_out.weight",
            "decoder.up.0.block.0.norm1.weight", "quant_conv.weight", "post_quant_conv.weight"],
    "diffusers VAE": ["encoder.down_blocks.0.resnets.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight",
                      "encoder.conv_in.weight", "decoder.mid_block.attentions.0.to_q.weight"],
    "text encoder": ["text_model.encoder.layers.0.mlp.fc1.weight", "text_model.embeddings.position_embedding.weight",
                     "text_model.final_layer_norm.weight"],
    "t5 text encoder": ["encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.final_layer_norm.weight",
                        "shared.weight"],
}
KIND = {"checkpoint": "checkpoint", "flux diffusion model": "checkpoint",
        "textual-inversion embedding": "textual-inversion embedding", "sdxl embedding": "textual-inversion embedding",
        "VAE": "VAE", "diffusers VAE": "VAE", "text encoder": "text encoder", "t5 text encoder": "text encoder"}


def _write(tmp_path, name: str, keys: list[str]) -> str:
    path = os.path.join(tmp_path, name.replace(" ", "_") + ".safetensors")
    save_tensors(path, {k: Z.clone() for k in keys}, {})
    return path


@pytest.mark.parametrize("name", FILES)
def test_each_kind_is_recognised_from_its_keys(name):
    assert looks_like(FILES[name]) == KIND[name]


@pytest.mark.parametrize("name", ["checkpoint", "textual-inversion embedding", "VAE"])
def test_inspect_says_not_a_lora_and_what_it_looks_like(tmp_path, name):
    path = _write(tmp_path, name, FILES[name])
    report = inspect_lora(path, blocks=True)
    text = report.to_text()
    assert text.splitlines()[0].startswith(f"not a LoRA (looks like a {name}): ")
    assert report.summary.format_name == f"not a LoRA (looks like a {name})"
    d = report.to_dict()
    assert d["not_lora"] == name and d["verdict"] == text.splitlines()[0]
    assert [w["code"] for w in d["warnings"]] == ["not_a_lora"]  # instead of "N unknown keys"
    assert summarize(path).to_dict()["format"]["name"] == f"not a LoRA (looks like a {name})"  # what the route sends


@pytest.mark.parametrize("name", ["checkpoint", "textual-inversion embedding", "VAE"])
def test_the_loader_applies_nothing_and_says_why(tmp_path, name):
    with Lora.open(_write(tmp_path, name, FILES[name]), layout_for("sd1")) as lora:
        plan = plan_application(lora, parse_block_weights("", "sd1"), 1.0, 1.0, model_arch="sd1",
                                clip_connected=True, label="picked.safetensors")
    assert not plan.patches and not plan.not_applied
    verdict, fix = plan.report().splitlines()[:2]
    assert verdict == f"nothing applied: not a LoRA (looks like a {name})"
    assert fix == {"checkpoint": "fix: load it with Load Checkpoint or Load Diffusion Model",
                   "textual-inversion embedding": "fix: use it in a prompt as embedding:<its name>",
                   "VAE": "fix: load it with Load VAE"}[name]


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_real_loras_are_never_called_something_else(name):
    with Lora.from_state_dict(fixture_tensors(name, rank=2), {}, label=name) as lora:
        assert lora.detection.not_lora is None
        assert not lora.detection.format_name.startswith("not a LoRA")


@pytest.mark.parametrize("keys", [[], ["a", "b"], ["lora_unet_x.lora_up.weight", "model.diffusion_model.y.weight",
                                                   "something_else", "another.weight"]])
def test_unrecognisable_files_are_not_called_a_kind(keys):
    assert looks_like(keys) is None


def test_the_phrase():
    assert not_a_lora("VAE") == "not a LoRA (looks like a VAE)"
