"""Block strengths from the factors equal a dense reference (ΔW built explicitly, by formulas
written here) within 1e-4 relative, on every fixture format; relative strengths against base
weights given as a state dict or a safetensors file."""
import math
import os

import pytest
import torch

from loralab.ops.block_strength import BaseWeights, ModuleStrength, aggregate, block_strengths
from loralab.blocks.map import block_of
from loralab.ops.inspect import inspect_lora
from loralab.layouts import ModelLayout
from loralab.layouts.flux import FLUX_DEV_CONFIG
from loralab.lora import Lora
from loralab.files.safetensors import save_tensors
from loralab_testkit import LORA_FIXTURES, fixture_tensors

D = torch.float64
MODULES_PER_BLOCK = 3
BLOCKS = 3


def dense_delta(e, t):
    """scale·ΔW of an entry, [out, in·k·k], by the algorithms' definitions."""
    g = {r: t[k].to(D) for r, k in e.keys.items() if r != "alpha"}
    if e.kind == "diff":
        d = next(iter(g.values()))
        return d.reshape(d.shape[0], -1) if d.dim() else d.reshape(1, 1)
    scale = 1.0 if e.alpha is None or e.rank() is None else e.alpha / e.rank()
    if e.kind == "lora":
        up, down = g["up"].flatten(1), g["down"]
        if "mid" in g:
            down = torch.einsum("mn...,ni->mi...", g["mid"], down.flatten(1))
        return scale * up @ down.flatten(1)
    if e.kind == "loha":
        return scale * (g["w1a"] @ g["w1b"].flatten(1)) * (g["w2a"] @ g["w2b"].flatten(1))
    if e.kind == "lokr":
        w1 = g["w1"] if "w1" in g else g["w1a"] @ g["w1b"]
        w2 = g["w2"].flatten(1) if "w2" in g else g["w2a"] @ g["w2b"].flatten(1)
        return scale * torch.kron(w1, w2)
    raise AssertionError(e.kind)


def small_subset(name, lora, tensors):
    """A few modules of a few blocks (the smallest ΔW), so dense products stay cheap."""
    family = lora.layout.arch.family
    by_block = {}
    for m in lora.mapped():
        n = math.prod(m.entry.delta_shape())
        by_block.setdefault(block_of(m.target.key, family), []).append((n, m.entry))
    chosen = sorted(by_block.items(), key=lambda kv: min(n for n, _ in kv[1]))[:BLOCKS]
    entries = [e for _, items in chosen
               for _, e in sorted(items, key=lambda x: (x[0], x[1].module))[:MODULES_PER_BLOCK]]
    keys = {k for e in entries for k in e.keys.values()}
    return {k: v for k, v in tensors.items() if k in keys}


def reference_blocks(lora, tensors, base=None):
    family = lora.layout.arch.family
    sums, base_sums, seen = {}, {}, set()
    for m in lora.mapped():
        d = dense_delta(m.entry, tensors)
        b = block_of(m.target.key, family)
        if base is not None:
            w = base[m.target.key].to(D)
            if m.target.rows:
                w = w[m.target.rows[0]:m.target.rows[0] + m.target.rows[1]]
            if m.entry.has_dora:
                merged = w.flatten(1) + d
                scale = tensors[m.entry.keys["dora_scale"]].to(D).reshape(-1, 1)
                d = merged * (scale / merged.norm(dim=1, keepdim=True)) - w.flatten(1)
            if (m.target.key, m.target.rows) not in seen:
                seen.add((m.target.key, m.target.rows))
                base_sums[b] = base_sums.get(b, 0.0) + float(w.norm()) ** 2
        sums[b] = sums.get(b, 0.0) + float(d.norm()) ** 2
    return {b: math.sqrt(v) for b, v in sums.items()}, {b: math.sqrt(v) for b, v in base_sums.items()}


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_block_norms_equal_dense_reference(name, tmp):
    full = fixture_tensors(name, rank=2, seed=1)
    probe = Lora.from_state_dict(full)
    tensors = small_subset(name, probe, full)
    path = save_tensors(os.path.join(tmp, name + ".safetensors"), tensors)
    with Lora.open(path, probe.layout) as lora:
        ours = {b.block: b for b in block_strengths(lora)}
        ref, _ = reference_blocks(lora, tensors)
    assert len(ref) == BLOCKS
    for block, value in ref.items():
        assert ours[block].norm == pytest.approx(value, rel=1e-4)
        assert ours[block].modules == sum(1 for m in lora.mapped() if block_of(m.target.key, lora.layout.arch.family)
                                          == block)
        assert ours[block].inexact == (ours[block].modules if "dora" in name else 0)
    untouched = [b for b in ours.values() if b.block not in ref]
    assert untouched and all(b.norm == 0.0 and b.modules == 0 for b in untouched)


def _random_base(lora, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {m.target.key: torch.randn(lora.layout.shapes[m.target.key], generator=g) for m in lora.mapped()}


@pytest.mark.parametrize("name", ["kohya_sd15_lora", "lycoris_sd15_locon_dora", "comfyui_trainer_sd15_lora"])
def test_relative_strength_against_base_weights(name, tmp):
    """DoRA (exact with its base weight), biases; the base given as a state dict and as a
    checkpoint-style safetensors file (model.diffusion_model.* keys)."""
    full = fixture_tensors(name, rank=2, seed=3)
    probe = Lora.from_state_dict(full)
    tensors = small_subset(name, probe, full)
    lora = Lora.from_state_dict(tensors, layout=probe.layout)
    base = _random_base(lora)
    ref, ref_base = reference_blocks(lora, tensors, base)
    ours = {b.block: b for b in block_strengths(lora, BaseWeights(base))}
    ckpt = save_tensors(os.path.join(tmp, "base.safetensors"), {"model." + k: v for k, v in base.items()})
    weights = BaseWeights(ckpt)
    from_file = {b.block: b for b in block_strengths(lora, weights)}
    weights.close()
    for block, value in ref.items():
        assert ours[block].norm == pytest.approx(value, rel=1e-4)
        assert ours[block].base_norm == pytest.approx(ref_base[block], rel=1e-6)
        assert ours[block].relative == pytest.approx(value / ref_base[block], rel=1e-4)
        assert ours[block].inexact == 0
        assert from_file[block].relative == pytest.approx(ours[block].relative, rel=1e-9)


def test_relative_strength_of_row_slices_of_fused_weights():
    """Diffusers/PEFT names on Flux write row slices of fused weights (to_q/to_k/to_v of a qkv,
    proj_mlp of linear1): the base norm counts each slice once; on a small Flux layout."""
    config = dict(FLUX_DEV_CONFIG, hidden_size=64, num_heads=2, depth=1, depth_single_blocks=1)
    layout = ModelLayout.from_config("flux", config)
    g = torch.Generator().manual_seed(4)
    tensors = {}
    modules = {"transformer_blocks.0.attn.to_q": (64, 64), "transformer_blocks.0.attn.to_k": (64, 64),
               "transformer_blocks.0.attn.to_v": (64, 64), "transformer_blocks.0.attn.to_out.0": (64, 64),
               "single_transformer_blocks.0.attn.to_q": (64, 64), "single_transformer_blocks.0.proj_mlp": (256, 64),
               "single_transformer_blocks.0.proj_out": (64, 320)}
    for name, (rows, cols) in modules.items():
        tensors[f"transformer.{name}.lora_A.weight"] = torch.randn(2, cols, generator=g)
        tensors[f"transformer.{name}.lora_B.weight"] = torch.randn(rows, 2, generator=g)
    lora = Lora.from_state_dict(tensors, layout=layout)
    assert sum(1 for m in lora.mapped() if m.target.rows) == 5
    base = _random_base(lora)
    ref, ref_base = reference_blocks(lora, tensors, base)
    ours = {b.block: b for b in block_strengths(lora, BaseWeights(base))}
    assert set(ref) == {"D00", "S00"}
    for block, value in ref.items():
        assert ours[block].norm == pytest.approx(value, rel=1e-9)
        assert ours[block].relative == pytest.approx(value / ref_base[block], rel=1e-9)


def test_blocks_without_base_weights_have_no_relative_strength():
    mods = [ModuleStrength("a", "diffusion_model.input_blocks.1.1.proj_in.weight", None, "IN01", 3.0, 5.0),
            ModuleStrength("b", "diffusion_model.input_blocks.1.1.proj_out.weight", None, "IN01", 4.0, None),
            ModuleStrength("c", "diffusion_model.middle_block.1.proj_in.weight", None, "M00", float("nan"), 1.0)]
    out = {b.block: b for b in aggregate(mods, ("IN01", "M00", "OUT00"), "unet", with_base=True)}
    assert out["IN01"].norm == 5.0 and out["IN01"].relative is None and out["IN01"].modules == 2
    assert out["M00"].nonfinite == 1 and out["M00"].norm == 0.0
    assert [b for b in out] == ["IN01", "M00", "OUT00"]


def test_report_blocks_with_a_base_mapping(tmp):
    name = "kohya_sd15_lora"
    full = fixture_tensors(name, rank=2)
    probe = Lora.from_state_dict(full)
    tensors = small_subset(name, probe, full)
    path = save_tensors(os.path.join(tmp, "r.safetensors"), tensors)
    base = _random_base(Lora.from_state_dict(tensors))
    report = inspect_lora(path, base=base)
    assert report.relative and all(b.relative is not None for b in report.blocks if b.modules)
    d = report.to_dict()
    assert d["blocks"]["relative"] is True and d["blocks"]["family"] == "unet"
    assert "‖ΔW‖/‖W‖" in report.to_text()
