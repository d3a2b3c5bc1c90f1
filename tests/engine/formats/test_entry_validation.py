"""Entries whose factor shapes or dtypes cannot form a ΔW get a problem (and land nowhere) instead
of failing later inside the math; every entry that passes builds an adapter whose math runs."""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loralab.errors import LoraFormatError
from loralab.lora import Lora
from loralab.files.safetensors import save_tensors

QKV = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"  # SD1.x CLIP-L q_proj: [768, 768]
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"  # SD1.x: [320, 320, 3, 3]


def entry_of(tensors, module=QKV):
    lora = Lora.from_state_dict(tensors, label="mem")
    (entry,) = [e for e in lora.entries if e.module == module]
    return lora, entry


@pytest.mark.parametrize("suffixes,problem", [
    ({"lora_up.weight": (768, 4), "lora_down.weight": (0, 768)}, "rank 0"),
    ({"lora_up.weight": (), "lora_down.weight": (4, 768)}, "not matrices"),
    ({"lora_up.weight": (768, 4), "lora_down.weight": (4,)}, "not matrices"),
    ({"lora_up.weight": (768, 4, 3, 3), "lora_down.weight": (4, 768)}, "disagree on the rank"),
    ({"lora_up.weight": (768, 4), "lora_down.weight": (4, 768), "lora_mid.weight": (4,)}, "not matrices"),
    ({"lora_up.weight": (768, 4), "lora_down.weight": (4, 768, 3, 3), "lora_mid.weight": (4, 4, 3, 3)}, "do not chain"),
    ({"lora_up.weight": (0, 4), "lora_down.weight": (4, 768)}, "empty tensor"),
    ({"hada_w1_a": (768, 4), "hada_w1_b": (4, 768), "hada_w2_a": (768, 4), "hada_w2_b": (2, 768)}, "do not multiply"),
    ({"hada_w1_a": (768, 4), "hada_w1_b": (4, 768), "hada_w2_a": (384, 4), "hada_w2_b": (4, 768)},
     "different sizes"),
    ({"hada_w1_a": (4, 768), "hada_w1_b": (4, 768), "hada_w2_a": (4, 768), "hada_w2_b": (4, 768),
      "hada_t1": (4, 4, 1, 1)}, "must come together"),
    ({"hada_w1_a": (4, 768), "hada_w1_b": (4, 768), "hada_w2_a": (4, 768), "hada_w2_b": (4, 768),
      "hada_t1": (4, 2, 1, 1), "hada_t2": (4, 4, 1, 1)}, "do not chain"),
    ({"hada_w1_a": (), "hada_w1_b": (), "hada_w2_a": (768, 4), "hada_w2_b": (4, 768)}, "do not multiply"),
    ({"lokr_w1": (8,), "lokr_w2": (96, 96)}, "not a matrix"),
    ({"lokr_w1_a": (8, 2), "lokr_w1_b": (3, 8), "lokr_w2": (96, 96)}, "do not multiply"),
    ({"lokr_w1": (8, 8), "lokr_w2_a": (96, 2), "lokr_w2_b": (4, 96)}, "do not multiply"),
    ({"lokr_w1": (8, 8), "lokr_w2_a": (2, 96), "lokr_w2_b": (2, 96), "lokr_t2": (3, 2)}, "do not chain"),
    ({"lokr_w1": (8, 8), "lokr_w2": ()}, "not a matrix"),
    ({"diff": (0, 768)}, "empty tensor"),
])
def test_malformed_shapes_are_problems(suffixes, problem):
    lora, e = entry_of({f"{QKV}.{s}": torch.zeros(shape) for s, shape in suffixes.items()})
    assert e.problem is not None and problem in e.problem
    assert not e.supported and not lora.items[lora.entries.index(e)].mapped
    with pytest.raises(LoraFormatError) as err:
        lora.adapter(e)
    assert "mem" in str(err.value) and QKV in str(err.value)
    e.rank(), e.scale(), e.delta_shape(), e.algorithm()  # describing a broken entry never raises


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int64, torch.bool])
def test_integer_or_bool_factors_are_problems_not_numbers(dtype):
    _, e = entry_of({f"{QKV}.lora_up.weight": torch.ones(768, 2, dtype=dtype),
                     f"{QKV}.lora_down.weight": torch.ones(2, 768, dtype=dtype)})
    assert "not a floating-point type" in e.problem


def test_integer_alpha_is_a_number():
    lora, e = entry_of({f"{QKV}.lora_up.weight": torch.ones(768, 2), f"{QKV}.lora_down.weight": torch.ones(2, 768),
                        f"{QKV}.alpha": torch.tensor(1, dtype=torch.int64)})
    assert e.problem is None and e.alpha == 1.0 and e.scale() == 0.5
    assert lora.items[0].mapped


def test_float8_factors_are_supported():
    lora, e = entry_of({f"{QKV}.lora_up.weight": torch.ones(768, 2).to(torch.float8_e4m3fn),
                        f"{QKV}.lora_down.weight": torch.ones(2, 768).to(torch.float8_e5m2)})
    assert e.problem is None and lora.items[0].mapped
    assert lora.adapter(e).fro_norm() == pytest.approx(2 * 768)


@pytest.mark.parametrize("dora,fits", [((768, 1), True), ((1, 768), True), ((768,), True), ((5,), False),
                                       ((1, 3), False)])
def test_dora_scale_must_fit_rows_or_columns(dora, fits):
    lora, _ = entry_of({f"{QKV}.lora_up.weight": torch.ones(768, 2), f"{QKV}.lora_down.weight": torch.ones(2, 768),
                        f"{QKV}.dora_scale": torch.ones(dora)})
    item = lora.items[0]
    assert item.mapped == fits
    if fits:
        w = torch.randn(768, 768)
        assert lora.adapter(item.entry).apply_to(w).shape == w.shape
    else:
        assert "dora_scale" in item.reason


def test_alpha_with_a_non_scalar_shape_is_a_problem(tmp):
    p = save_tensors(os.path.join(tmp, "a.safetensors"), {
        f"{QKV}.lora_up.weight": torch.ones(768, 2), f"{QKV}.lora_down.weight": torch.ones(2, 768),
        f"{QKV}.alpha": torch.ones(2)})
    with Lora.open(p) as lora:
        assert "not a scalar" in lora.entries[0].problem


# --- fuzz: any role set with any small shapes and dtypes ---------------------------------------

ROLES = {
    "lora": ["lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale"],
    "loha": ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha"],
    "lokr": ["lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha"],
    "full": ["diff", "diff_b", "set_weight"],
    "oft": ["oft_blocks", "rescale", "oft_diag", "alpha", "dora_scale"],
    "glora": ["a1.weight", "a2.weight", "b1.weight", "b2.weight", "alpha"],
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.bool]
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4)


@st.composite
def lora_files(draw):
    module = draw(st.sampled_from([QKV, CONV, "not_a_module"]))
    kind = draw(st.sampled_from(sorted(ROLES)))
    roles = draw(st.lists(st.sampled_from(ROLES[kind]), min_size=1, unique=True))
    out = {}
    for role in roles:
        shape = draw(shapes)
        dtype = draw(st.sampled_from(DTYPES))
        out[f"{module}.{role}"] = (torch.rand(shape) * 2 - 1).to(dtype)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lora_files())
def test_any_factor_shapes_either_work_or_are_reported(tensors):
    lora = Lora.from_state_dict(tensors, label="fuzz")
    for item in lora.items:
        e = item.entry
        e.rank(), e.scale(), e.delta_shape(), e.algorithm(), item.algorithm(lora.layout)
        e.base_problem((4, 4)), e.base_problem((4, 2, 1, 1)), e.base_problem((4,))
        if not e.supported:
            with pytest.raises(LoraFormatError):
                lora.adapter(e)
            continue
        adapter = lora.adapter(e)
        if e.kind == "set":
            continue
        delta = adapter.delta_flat(torch.float64)
        assert tuple(delta.shape) == e.delta_shape()
        norm = float(delta.norm())
        assert adapter.fro_norm() == pytest.approx(norm, rel=1e-6, abs=1e-9) or not math.isfinite(norm)
        lr = adapter.low_rank(torch.float64)
        if lr is not None:
            assert torch.allclose(lr[0] @ lr[1], delta, atol=1e-9)
        if item.mapped and lora.layout is not None:
            weight = torch.zeros(lora.layout.shapes[item.target.key])
            if item.target.rows is None:
                assert adapter.apply_to(weight).shape == weight.shape
