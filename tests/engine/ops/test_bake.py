"""Baking LoRAs into model weights: W + Σ wᵢ·blockweightᵢ·ΔWᵢ on a tiny Flux built from its config
(kohya fused and ai-toolkit split modules together), and DoRA's normalisation."""
import pytest
import torch

from loralab.ops.bake import bake
from loralab.layouts import ModelLayout
from loralab.lora import Lora
from loralab.ops.lowrank import one_thread
from loralab.ops.merge import MergeInput

from loralab_testkit.fitted import fitted_lora

D = torch.float64
MICRO_FLUX = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768, "context_in_dim": 4096,
              "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
              "qkv_bias": True, "guidance_embed": True}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def flux():
    layout = ModelLayout.from_config("flux", MICRO_FLUX)
    g = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(*s, generator=g) for k, s in layout.shapes.items() if k.startswith("diffusion_model.")}
    return layout, weights


def test_bake_equals_base_plus_weighted_deltas(flux):
    layout, weights = flux
    kohya = Lora.from_state_dict(fitted_lora("kohya_flux_lora", layout, rank=3, seed=1), layout=layout)
    ait = Lora.from_state_dict(fitted_lora("aitoolkit_flux_lora", layout, rank=2, seed=2), layout=layout)
    inputs = [MergeInput(kohya, 0.7, "D1=0"), MergeInput(ait, -1.2, "S=0.5, D01=0")]
    expected = {k: v.to(D) for k, v in weights.items()}
    for inp in inputs:
        bw = inp.blocks("flux", layout)
        for m in inp.lora.mapped():
            c = inp.weight * bw.for_key(m.target.key)
            d = inp.lora.adapter(m.entry).delta_flat(D)
            if m.target.swap_halves:
                h = d.shape[0] // 2
                d = torch.cat([d[h:], d[:h]])
            rows = slice(None) if m.target.rows is None else slice(m.target.rows[0], sum(m.target.rows))
            w = expected[m.target.key]
            w[rows] += c * d.reshape(w[rows].shape)
    sd = {"model." + k: v.clone() for k, v in weights.items()}
    changed = bake(sd, inputs, layout=layout)
    assert "model.diffusion_model.double_blocks.0.img_attn.qkv.weight" in changed
    assert not any(".double_blocks.1." in k for k in changed)  # block D01 has weight 0 in both
    for k, v in weights.items():
        got = sd["model." + k]
        assert got.dtype == v.dtype
        assert torch.allclose(got.to(D), expected[k], atol=1e-5), k
        assert ("model." + k in changed) == (not torch.equal(expected[k], v.to(D)))


def test_bake_dora_normalises_each_output_row(flux):
    layout, weights = flux
    key = "diffusion_model.double_blocks.0.img_attn.proj.weight"
    g = torch.Generator().manual_seed(3)
    up, down = torch.randn(64, 2, generator=g), torch.randn(2, 64, generator=g)
    magnitude = torch.rand(64, 1, generator=g) + 0.5
    lo = Lora.from_state_dict({"lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": up,
                               "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": down,
                               "lora_unet_double_blocks_0_img_attn_proj.alpha": torch.tensor(1.0),
                               "lora_unet_double_blocks_0_img_attn_proj.dora_scale": magnitude}, layout=layout)
    sd = {key: weights[key].clone()}
    bake(sd, [MergeInput(lo, 0.6)], layout=layout)
    merged = weights[key].to(D) + 0.5 * up.to(D) @ down.to(D)  # W + (alpha / rank)·B·A
    factor = magnitude.to(D) / merged.norm(dim=1, keepdim=True)
    expected = merged * (0.6 * (factor - 1) + 1)  # strength interpolates the normalisation (LyCORIS)
    assert torch.allclose(sd[key].to(D), expected, atol=1e-5)
