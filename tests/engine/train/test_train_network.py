"""Trainable networks: target selection by preset and block spec, module math equal to the
adapter math the saved file is read with, and state round trips."""
import pytest
import torch

from loralab.errors import SpecError, TrainingError
from loralab.layouts import layout_for
from loralab.train.network import (LoHaModule, LoKrModule, LoRAModule, build_network, factorize, select_targets,
                                   weight_kind)

SD1 = layout_for("sd1")
FLUX = layout_for("flux")


def _shapes(layout):
    return {k: tuple(v) for k, v in layout.shapes.items()}


def test_presets_on_sd15():
    shapes = _shapes(SD1)
    attn = select_targets(shapes, "sd1", "attention")
    assert len(attn) == 16 * 2 * 4  # 16 transformer blocks x attn1/attn2 x q, k, v, out
    assert all(".attn1." in k or ".attn2." in k for k in attn)
    mlp = select_targets(shapes, "sd1", "attention_mlp")
    assert len(mlp) - len(attn) == 16 * 2 and all(".ff.net." in k for k in set(mlp) - set(attn))
    linear = select_targets(shapes, "sd1", "all_linear")
    assert "diffusion_model.input_blocks.1.1.proj_in.weight" in linear  # a 1x1 conv counts as linear
    assert "diffusion_model.time_embed.0.weight" in linear
    assert not any(weight_kind(shapes[k]) == "conv" for k in linear)
    convs = select_targets(shapes, "sd1", "all_linear_convs")
    assert "diffusion_model.input_blocks.1.0.in_layers.2.weight" in convs
    assert set(select_targets(shapes, "sd1", "attention", convs=True)) - set(attn) == {
        k for k in convs if weight_kind(shapes[k]) == "conv"}
    assert not any(k.startswith("clip_l.") for k in convs)
    assert all(len(shapes[k]) > 1 for k in convs)


def test_block_spec_selects_and_scales():
    shapes = _shapes(SD1)
    t = select_targets(shapes, "sd1", "attention", "default=0, OUT03-OUT05=1, M00=0.5")
    assert t and all(".output_blocks.3." in k or ".output_blocks.4." in k or ".output_blocks.5." in k
                     or ".middle_block." in k for k in t)
    assert {v for k, v in t.items() if ".middle_block." in k} == {0.5}
    with pytest.raises(TrainingError, match="no weight"):
        select_targets(shapes, "sd1", "attention", "default=0, IN00=1")
    with pytest.raises(SpecError):
        select_targets(shapes, "sd1", "attention", "IN99=1")


def test_flux_presets():
    shapes = _shapes(FLUX)
    attn = select_targets(shapes, "flux", "attention")
    assert "diffusion_model.double_blocks.0.img_attn.qkv.weight" in attn
    assert "diffusion_model.single_blocks.37.linear1.weight" in attn
    assert "diffusion_model.double_blocks.0.img_mlp.0.weight" not in attn
    assert len(attn) == 19 * 4 + 38 * 2
    mlp = select_targets(shapes, "flux", "attention_mlp")
    assert len(mlp) == len(attn) + 19 * 4
    only_single = select_targets(shapes, "flux", "attention", "default=0, S=1")
    assert all(".single_blocks." in k for k in only_single) and len(only_single) == 76


@pytest.mark.parametrize("arch_id, attention, mlp", [
    # x and context blocks' qkv and proj in 24 blocks, SD3.5 M's second x attention in blocks 0-12; the
    # last context block is pre-only (no proj, no mlp)
    ("sd35m", 24 * 4 + 13 * 2 - 1, 24 * 4 - 2),
    ("sd35l", 38 * 4 - 1, 38 * 4 - 2),
    ("wan21_t2v_14b", 40 * 8, 40 * 2),  # self and cross attention q, k, v, o; ffn.0, ffn.2
    ("wan21_i2v_14b", 40 * 10, 40 * 2),  # + the image cross-attention k_img, v_img
    ("qwen_image", 60 * 8, 60 * 4),  # image and text stream projections; both streams' MLPs
    ("z_image", 34 * 2, 34 * 3),  # qkv and out, w1/w2/w3 of 30 layers and 2 + 2 noise and context refiners
    ("chroma", 19 * 4 + 38 * 2, 19 * 4),  # Flux's: img/txt qkv and proj, single linear1/2; img/txt MLPs
    ("flux2_klein_4b", 5 * 4 + 20 * 2, 5 * 4),  # the same names in Flux.2's 5 double and 20 single blocks
])
def test_dit_family_presets(arch_id, attention, mlp):
    shapes = dict(layout_for(arch_id).shapes)
    attn = select_targets(shapes, arch_id, "attention")
    with_mlp = select_targets(shapes, arch_id, "attention_mlp")
    every = select_targets(shapes, arch_id, "all_linear")
    assert (len(attn), len(with_mlp) - len(attn)) == (attention, mlp)
    assert set(attn) < set(with_mlp) < set(every)
    assert all(len(shapes[k]) == 2 for k in every)
    first = {"sd35m": "J00", "sd35l": "J00", "z_image": "L00", "chroma": "D00", "flux2_klein_4b": "D00"}.get(arch_id, "B00")
    first_only = select_targets(shapes, arch_id, "attention", f"default=0, {first}=1")
    assert first_only and all(".0." in k for k in first_only)
    assert arch_id != "z_image" or all(k.startswith("diffusion_model.layers.0.") for k in first_only)


@pytest.mark.parametrize("arch_id", ["hunyuan_video", "lumina2", "hidream", "hunyuan_image21", "hunyuan_video15"])
@pytest.mark.parametrize("preset", ["attention", "all_linear"])
def test_families_without_training_presets_are_refused_by_name(arch_id, preset):
    with pytest.raises(TrainingError, match="does not train") as e:
        select_targets(_shapes(layout_for(arch_id)), arch_id, preset)
    assert layout_for(arch_id).arch.name in e.value.problem


def test_factorize():
    assert factorize(128) == (8, 16)
    assert factorize(127) == (1, 127)
    assert factorize(320) == (16, 20)
    assert factorize(320, 4) == (4, 80)
    assert factorize(360, 8) == (8, 45)
    assert factorize(12, 5) == (3, 4)


def _perturb(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("shape", [(24, 16), (12, 8, 3, 3), (16, 8, 1, 1)])
@pytest.mark.parametrize("make", [
    lambda s, g: LoRAModule(s, 4, 2.0, g),
    lambda s, g: LoHaModule(s, 3, 1.5, g),
    lambda s, g: LoKrModule(s, 2, 3.0, g),
    lambda s, g: LoKrModule(s, 64, 3.0, g),  # rank past half of w2: w2 trained in full
    lambda s, g: LoRAModule(s, 4, 4.0, g, base=torch.randn(s, generator=torch.Generator().manual_seed(9))),
], ids=["lora", "loha", "lokr", "lokr_full", "dora"])
def test_module_matches_saved_adapter_math(shape, make):
    g = torch.Generator().manual_seed(1)
    module = make(shape, g)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(module(w), w, atol=1e-5)  # a fresh module changes nothing
    _perturb(module)
    got = module(w)
    assert not torch.allclose(got, w, atol=1e-4)
    want = module.adapter().apply_to(w)
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)


def test_weight_dtype_is_kept_and_factors_get_gradients():
    module = LoRAModule((8, 6), 2, 2.0, torch.Generator().manual_seed(0))
    w = torch.randn(8, 6).to(torch.bfloat16)
    out = module(w)
    assert out.dtype == torch.bfloat16
    (module(torch.randn(8, 6)).sum()).backward()
    assert module.up.grad is not None and module.up.grad.abs().sum() > 0
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_network_groups_and_state_round_trip():
    shapes = {"a.weight": (8, 4), "b.weight": (6, 4, 3, 3), "c.weight": (4, 4)}
    net = build_network(shapes, {"a.weight": 1.0, "b.weight": 0.5, "c.weight": 1.0}, "loha", 2, 2.0,
                        torch.Generator().manual_seed(0))
    groups = net.param_groups()
    assert [g["lr_mult"] for g in groups] == [0.5, 1.0]
    assert len(groups[0]["params"]) == 4 and len(groups[1]["params"]) == 8
    saved = {k: v.clone() + 1 for k, v in net.state_tensors().items()}
    other = build_network(shapes, net.lr_mults, "loha", 2, 2.0, torch.Generator().manual_seed(5))
    assert other.load_state_tensors(saved) == []
    assert all(torch.equal(other.state_tensors()[k], v) for k, v in saved.items())
    bad = dict(saved)
    bad.pop("network.a.weight.w1a")
    bad["network.c.weight.w1b"] = torch.zeros(3, 3)
    problems = other.load_state_tensors(bad)
    assert any("missing network.a.weight.w1a" in p for p in problems)
    assert any("network.c.weight.w1b has shape (3, 3)" in p for p in problems)


def test_build_network_refuses_bad_settings():
    with pytest.raises(TrainingError, match="unknown network algorithm"):
        build_network({"a.weight": (4, 4)}, {"a.weight": 1.0}, "glora", 2, 1.0, torch.Generator())
    with pytest.raises(TrainingError, match="DoRA needs"):
        build_network({"a.weight": (4, 4)}, {"a.weight": 1.0}, "dora", 2, 1.0, torch.Generator())
