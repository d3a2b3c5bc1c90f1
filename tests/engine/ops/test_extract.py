"""Extraction against planted differences: two model files in checkpoint layouts (a tiny SD1.x
built from its config), differences of known rank, and the randomized SVD against the exact
truncated SVD on a full-size layer."""
import os

import pytest
import torch

from loralab.layouts import ModelLayout, layout_for
from loralab.lora import Lora
from loralab.ops.lowrank import RankRule, one_thread
from loralab.formats.model_weights import ModelWeights, canonical_key, guess_layout
from loralab.ops.extract import extract
from loralab.files.safetensors import save_tensors

D = torch.float64
MICRO_SD15 = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
              "channel_mult": [1, 2], "transformer_depth": [1, 0], "transformer_depth_output": [1, 1, 0, 0],
              "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768}
TO_Q = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
CONV = "diffusion_model.input_blocks.0.0.weight"  # 3×3, [32, 4, 3, 3]
FF = "diffusion_model.middle_block.1.transformer_blocks.0.ff.net.2.weight"
TINY = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
BIAS = "diffusion_model.out.2.bias"
TE_Q = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
TE_POS = "clip_l.transformer.text_model.embeddings.position_embedding.weight"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def rnd(g, *shape):
    return torch.randn(*shape, generator=g)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(layout, base file, tuned file, planted ΔW by key). The base is a full checkpoint
    (model.diffusion_model.*, cond_stage_model.transformer.*), the tuned one a diffusion-model file
    with bare keys plus ComfyUI's text_encoders.* names."""
    tmp = str(tmp_path_factory.mktemp("models"))
    layout = ModelLayout.from_config("sd1", MICRO_SD15)
    g = torch.Generator().manual_seed(0)
    base = {k: rnd(g, *s) for k, s in layout.shapes.items() if k.startswith("diffusion_model.")}
    base[TE_Q] = rnd(g, 768, 768)
    base[TE_POS] = rnd(g, 77, 768)
    planted = {TO_Q: (rnd(g, 32, 3) @ rnd(g, 3, 32)) * 0.1, FF: (rnd(g, 64, 2) @ rnd(g, 2, 256)) * 0.1,
               CONV: (rnd(g, 32, 1) @ rnd(g, 1, 36)).reshape(32, 4, 3, 3) * 0.1,
               TE_Q: (rnd(g, 768, 3) @ rnd(g, 3, 768)) * 0.01, BIAS: rnd(g, 4) * 0.1, TE_POS: rnd(g, 77, 768)}
    tuned = {k: v.clone() for k, v in base.items()}
    for k, d in planted.items():
        tuned[k] = tuned[k] + d
    tuned[TINY] = tuned[TINY] * (1 + 1e-7)
    ckpt = {("model." + k if k.startswith("diffusion_model.") else "cond_stage_model." + k.split(".", 1)[1]): v
            for k, v in base.items()}
    ckpt["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2, 2)  # a VAE key: not a LoRA target
    bare = {(k[len("diffusion_model."):] if k.startswith("diffusion_model.") else "text_encoders." + k): v
            for k, v in tuned.items()}
    b = save_tensors(os.path.join(tmp, "base.safetensors"), ckpt)
    t = save_tensors(os.path.join(tmp, "tuned.safetensors"), bare)
    return layout, b, t, planted


def extracted(result, layout):
    lo = Lora.from_state_dict(result.tensors, layout=layout)
    assert not list(lo.unmapped())
    return {m.target.key: lo.adapter(m.entry).delta(tuple(layout.shapes[m.target.key]), D) for m in lo.mapped()}


def test_key_layouts_of_checkpoints_and_diffusion_model_files(models):
    layout, b, t, _ = models
    with ModelWeights.open(b, layout) as base, ModelWeights.open(t, layout) as tuned:
        assert set(base.keys()) == set(tuned.keys())
        assert base.file_key(TO_Q) == "model." + TO_Q and tuned.file_key(TO_Q) == TO_Q[len("diffusion_model."):]
        assert base.file_key(TE_Q).startswith("cond_stage_model.transformer.")
        assert tuned.file_key(TE_Q).startswith("text_encoders.clip_l.")
        assert base.unused == ["first_stage_model.decoder.conv_in.weight"]
    assert canonical_key("conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                         layout_for("sdxl")) == "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"


def test_extract_recovers_planted_differences(models):
    layout, b, t, planted = models
    with ModelWeights.open(b, layout) as base, ModelWeights.open(t, layout) as tuned:
        result = extract(tuned, base, RankRule("fixed", 3), dtype=torch.float32)
    got = extracted(result, layout)
    assert set(got) == {TO_Q, FF, CONV}  # text encoders and biases only when asked
    for k in got:
        assert torch.allclose(got[k], planted[k].to(D), atol=1e-5), k
    assert {m.key: m.rank for m in result.modules} == {TO_Q: 3, FF: 3, CONV: 3}  # float32 rounding fills the rest
    assert any(s.startswith(TINY) for s in result.skipped)
    assert any(s.startswith("1 keys of ") and "first_stage_model.decoder.conv_in.weight" in s for s in result.skipped)
    assert all(k.startswith("lora_unet_") for k in result.tensors)
    assert result.tensors["lora_unet_conv_in.lora_down.weight"].shape == (3, 4, 3, 3)  # kohya conv layout
    assert result.tensors["lora_unet_conv_in.lora_up.weight"].shape == (32, 3, 1, 1)


def test_extract_text_encoders_biases_and_dynamic_rank(models):
    layout, b, t, planted = models
    with ModelWeights.open(b, layout) as base, ModelWeights.open(t, layout) as tuned:
        result = extract(tuned, base, RankRule("sv_fro", 0.999999, 8), text_encoders=True, bias_and_norms=True,
                         dtype=torch.float32)
    got = extracted(result, layout)
    assert set(got) == {TO_Q, FF, CONV, TE_Q, BIAS}  # never the embeddings
    assert {m.key: m.rank for m in result.modules} == {TO_Q: 3, FF: 2, CONV: 1, TE_Q: 3, BIAS: None}
    for k in got:
        assert torch.allclose(got[k], planted[k].to(D), atol=1e-5), k
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in result.tensors
    assert "lora_unet_conv_out.diff_b" in result.tensors


def test_randomized_svd_on_a_full_size_layer_matches_the_exact_truncation():
    layout = layout_for("sd1")
    key = "diffusion_model.middle_block.1.proj_in.weight"  # [1280, 1280, 1, 1]
    g = torch.Generator().manual_seed(1)
    w = rnd(g, 1280, 1280, 1, 1) * 0.02
    d = (rnd(g, 1280, 8) * torch.linspace(1, 0.2, 8)) @ rnd(g, 8, 1280) * 1e-3 + rnd(g, 1280, 1280) * 1e-6
    base = ModelWeights.from_state_dict({key: w}, layout)
    tuned = ModelWeights.from_state_dict({key: w + d.reshape(1280, 1280, 1, 1)}, layout)
    result = extract(tuned, base, RankRule("fixed", 8), dtype=torch.float32)
    got = extracted(result, layout)[key].reshape(1280, 1280)
    s = torch.linalg.svdvals(d.to(D))
    best = float(s[8:].pow(2).sum().sqrt())
    err = float((got - d.to(D)).norm())
    assert err <= best * (1 + 1e-3) + 1e-6 * float(d.norm())
    assert result.modules[0].form == "dense" and result.modules[0].rank == 8


def test_guess_layout_from_key_names_and_shapes():
    sdxl = layout_for("sdxl")
    keys = [k for k in sdxl.shapes if k.startswith("diffusion_model.output_blocks.2.")][:6]
    shapes = {"model." + k: sdxl.shapes[k] for k in keys}
    assert guess_layout(shapes).arch.id == "sdxl"


def test_weights_missing_or_of_another_shape_are_reported():
    layout = ModelLayout.from_config("sd1", MICRO_SD15)
    g = torch.Generator().manual_seed(2)
    base = {TO_Q: rnd(g, 32, 32), FF: rnd(g, 64, 256)}
    tuned = {TO_Q: rnd(g, 32, 32), CONV: rnd(g, 32, 4, 3, 3)}
    tuned[FF.replace("net.2", "net.0.proj")] = rnd(g, 5, 5)  # wrong shape
    result = extract(ModelWeights.from_state_dict(tuned, layout, "tuned"),
                     ModelWeights.from_state_dict(base, layout, "base"), RankRule("fixed", 2))
    assert {m.key for m in result.modules} == {TO_Q}
    text = "\n".join(result.skipped)
    assert f"{FF} (only in base)" in text and f"{CONV} (only in tuned)" in text
    assert "ff.net.0.proj.weight (its shape differs from SD1.x's in tuned)" in text
