"""The stack report against dense math: on sampled weights of real-layout fixtures (kohya SD1.5,
SDXL, Flux, ai-toolkit Flux with split q/k/v, LyCORIS LoHa/LoKr), ΔW is built here by the
algorithms' formulas and placed in its rows; cosines, subspace overlaps (exact SVD of the dense
ΔW through its exact range), strengths, relative strengths and sign conflict must agree with the
report's factor-only numbers to 1e-6. Then fights, proposals that parse and separate, refusals."""
import math
import os

import pytest
import torch

from loralab.blocks.map import block_of
from loralab.blocks.spec import parse_block_weights
from loralab.errors import ArchMismatchError, SpecError
from loralab.files.safetensors import save_tensors
from loralab.formats.model_weights import ModelWeights
from loralab.lora import Lora
from loralab.ops.inputs import MergeInput
from loralab.ops.interference import Thresholds, stack_report
from loralab.ops.lowrank import one_thread
from loralab_testkit import fixture_tensors, materialize

D = torch.float64
TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def dense_delta(e, t):
    """scale·ΔW of an entry, [out, in·k·k], by the algorithms' definitions."""
    g = {r: t[k].to(D) for r, k in e.keys.items() if r != "alpha"}
    scale = 1.0 if e.alpha is None or e.rank() is None else e.alpha / e.rank()
    if e.kind == "lora":
        return scale * g["up"].flatten(1) @ g["down"].flatten(1)
    if e.kind == "loha":
        return scale * (g["w1a"] @ g["w1b"].flatten(1)) * (g["w2a"] @ g["w2b"].flatten(1))
    if e.kind == "lokr":
        w1 = g["w1"] if "w1" in g else g["w1a"] @ g["w1b"]
        w2 = g["w2"].flatten(1) if "w2" in g else g["w2a"] @ g["w2b"].flatten(1)
        return scale * torch.kron(w1, w2)
    raise AssertionError(e.kind)


def dense_update(lora, tensors, key, coef):
    """coef · Σ of the entries' ΔW on ``key``, each placed in its rows of the whole weight."""
    shape = lora.layout.shapes[key]
    out = torch.zeros(shape[0], math.prod(shape[1:]), dtype=D)
    for m in lora.mapped():
        if m.target.key != key:
            continue
        d = dense_delta(m.entry, tensors)
        if m.target.swap_halves:
            d = torch.cat([d[d.shape[0] // 2:], d[:d.shape[0] // 2]])
        start, length = m.target.rows or (0, shape[0])
        out[start:start + length] += d
    return out * coef


def dominant(d, energy=0.9):
    """The dominant left and right singular bases of a dense matrix: its exact range from d·Ω (Ω
    Gaussian, wider than the rank), then the SVD of Qᵀd; k the smallest count reaching ``energy``."""
    g = torch.Generator().manual_seed(0)
    omega = torch.randn(d.shape[1], min(d.shape[1], 80), generator=g, dtype=D)
    q, _ = torch.linalg.qr(d @ omega)
    u, s, vh = torch.linalg.svd(q.T @ d, full_matrices=False)
    cum = torch.cumsum(s ** 2, 0)
    k = int((cum < energy * cum[-1] * (1 - 1e-12)).sum()) + 1
    return q @ u[:, :k], vh[:k].T


def overlap(p, q):
    return float((p.T @ q).pow(2).sum()) / min(p.shape[1], q.shape[1])


def conflict(x, y):
    prod = x * y
    return float((-prod).clamp_min(0).sum() / prod.abs().sum())


def correlated(t1, lora1, t2, lora2, seed):
    """LoRA 2's up/down made to oppose LoRA 1 where both write a weight with plain LoRA factors of
    equal rank (its own rows of a fused weight for split q/k/v): up₂ = −up₁ + noise, down₂ = down₁ + noise."""
    g = torch.Generator().manual_seed(seed)
    firsts = {m.target.key: m.entry for m in lora1.mapped() if m.entry.kind == "lora" and m.target.rows is None}
    out = dict(t2)
    for m in lora2.mapped():
        e1 = firsts.get(m.target.key)
        if e1 is None or m.entry.kind != "lora":
            continue
        up1, down1 = t1[e1.keys["up"]], t1[e1.keys["down"]]
        if m.target.rows is not None:
            up1 = up1[m.target.rows[0]:m.target.rows[0] + m.target.rows[1]]
        up2, down2 = t2[m.entry.keys["up"]], t2[m.entry.keys["down"]]
        if up1.shape != up2.shape or down1.shape != down2.shape:
            continue
        out[m.entry.keys["up"]] = -up1 + 0.5 * torch.randn(up1.shape, generator=g).to(up1.dtype) * up1.std()
        out[m.entry.keys["down"]] = down1 + 0.5 * torch.randn(down1.shape, generator=g).to(down1.dtype) * down1.std()
    return out


def shared_keys(loras, count, must=None):
    """The ``count`` smallest weights every LoRA writes (plus ``must`` where given)."""
    sets = [{m.target.key for m in lo.mapped()} for lo in loras]
    common = set.intersection(*sets)
    shapes = loras[0].layout.shapes
    keys = sorted(common, key=lambda k: (math.prod(shapes[k]), k))[:count]
    return keys + [k for k in (must or []) if k in common and k not in keys]


def subset(tensors, lora, keys):
    names = {k for m in lora.mapped() if m.target.key in keys for k in m.entry.keys.values()}
    return {k: v for k, v in tensors.items() if k in names}


CASES = {
    "kohya_sd15": ("kohya_sd15_lora", "kohya_sd15_lora", [], 4),
    "kohya_sdxl": ("kohya_sdxl_lora", "kohya_sdxl_lora", [], 4),
    "kohya_flux": ("kohya_flux_lora", "kohya_flux_lora", [], 2),
    "kohya_vs_aitoolkit_flux": ("kohya_flux_lora", "aitoolkit_flux_lora",
                                ["diffusion_model.double_blocks.0.img_attn.qkv.weight"], 1),
    "loha_vs_kohya_sd15": ("lycoris_sd15_loha", "kohya_sd15_lora", [], 4),
    "lokr_vs_loha_sd15": ("lycoris_sd15_lokr", "lycoris_sd15_loha", [], 4),
}


@pytest.mark.parametrize("case", CASES)
def test_report_equals_dense_math_on_sampled_weights(case, tmp):
    first, second, must, count = CASES[case]
    t1 = fixture_tensors(first, rank=3, seed=1, dtype=torch.float32)
    t2 = fixture_tensors(second, rank=3, seed=2, dtype=torch.float32)
    p1, p2 = Lora.from_state_dict(t1), Lora.from_state_dict(t2)
    keys = shared_keys([p1, p2], count, must)
    t2 = correlated(t1, p1, t2, p2, seed=3)
    t1, t2 = subset(t1, p1, keys), subset(t2, p2, keys)
    paths = [save_tensors(os.path.join(tmp, f"{n}.safetensors"), t) for n, t in (("one", t1), ("two", t2))]
    layout = p1.layout
    family = layout.arch.family
    blocks = sorted({block_of(k, family) for k in keys})
    spec1 = f"{blocks[0]}=0.5"  # a block weight on one block
    inputs = [MergeInput.open(paths[0], 1.0, spec1, layout), MergeInput.open(paths[1], -0.7, "", layout)]
    small = max(math.prod(layout.shapes[k]) for k in keys) <= 1 << 20
    # exact conflict (every entry) where the weights are small; a sample of 2^16 entries on Flux
    samples = 1 << 20 if small else 1 << 16
    g = torch.Generator().manual_seed(5)
    base = {k: torch.randn(layout.shapes[k], generator=g) for k in keys}
    report = stack_report(inputs, base=ModelWeights.from_state_dict(base, layout), thresholds=Thresholds(samples))
    assert {m.key for m in report.modules} == set(keys)
    dense_blocks: dict[str, list] = {}
    for mod in report.modules:
        coef1 = parse_block_weights(spec1, layout.arch.id).for_key(mod.key)
        x = dense_update(inputs[0].lora, t1, mod.key, coef1)
        y = dense_update(inputs[1].lora, t2, mod.key, -0.7)
        nx, ny = float(x.norm()), float(y.norm())
        assert mod.strength[0] == pytest.approx(nx, rel=TOL) and mod.strength[1] == pytest.approx(ny, rel=TOL)
        wn = float(base[mod.key].to(D).norm())
        assert mod.relative[0] == pytest.approx(nx / wn, rel=TOL)
        (p,) = mod.pairs
        assert p.cos == pytest.approx(float((x * y).sum()) / (nx * ny), abs=TOL)
        ux, vx = dominant(x)
        uy, vy = dominant(y)
        assert mod.rank == [ux.shape[1], uy.shape[1]]
        assert p.overlap_out == pytest.approx(overlap(ux, uy), abs=TOL)
        assert p.overlap_in == pytest.approx(overlap(vx, vy), abs=TOL)
        if small:
            assert p.conflict == pytest.approx(conflict(x, y), abs=TOL)
        else:  # a uniform sample of 65536 entries: the estimate's spread is well under 0.01
            assert p.conflict == pytest.approx(conflict(x, y), abs=0.02)
        acc = dense_blocks.setdefault(mod.block, [0.0, 0.0, 0.0])
        acc[0] += float((x * y).sum())
        acc[1] += nx ** 2
        acc[2] += ny ** 2
    for b in report.blocks:
        inner, sx, sy = dense_blocks[b.block]
        assert b.strength == pytest.approx([math.sqrt(sx), math.sqrt(sy)], rel=TOL)
        assert b.pairs[0].cos == pytest.approx(inner / math.sqrt(sx * sy), abs=TOL)
    if any(m.entry.kind == "lora" for m in p2.mapped()) and first.startswith("kohya"):
        # the correlated pair opposes: weight -0.7 on an update built from −up: cosine clearly positive
        assert all(m.pairs[0].cos > 0.3 for m in report.modules)


def _opposed_stack(tmp, spec2=""):
    """Two SD1.5 LoRAs: the second is the first's negation (plus noise) on the IN blocks, unrelated elsewhere."""
    t1 = fixture_tensors("kohya_sd15_lora", rank=3, seed=1, dtype=torch.float32)
    t2 = fixture_tensors("kohya_sd15_lora", rank=3, seed=2, dtype=torch.float32)
    lora = Lora.from_state_dict(t1)
    keys = [k for k in {m.target.key for m in lora.mapped()} if block_of(k, "unet") in ("IN01", "IN02", "OUT03")]
    t1, t2 = subset(t1, lora, keys), subset(t2, lora, keys)
    lora = Lora.from_state_dict(t1, layout=lora.layout)
    t2 = correlated(t1, lora, t2, lora, seed=4)
    for m in lora.mapped():  # keep the opposition on IN01/IN02 only
        if block_of(m.target.key, "unet") == "OUT03":
            t2[m.entry.keys["up"]] = torch.randn(t2[m.entry.keys["up"]].shape) * 0.02
    paths = [save_tensors(os.path.join(tmp, f"{n}.safetensors"), t) for n, t in (("style", t1), ("char", t2))]
    return [MergeInput.open(paths[0], 1.0), MergeInput.open(paths[1], 0.5, spec2)]


def test_fights_are_named_and_the_proposal_separates_them(tmp):
    inputs = _opposed_stack(tmp, spec2="OUT=0.5")
    report = stack_report(inputs)
    fought = {(f.block, f.reason, f.lowered) for f in report.fights}
    assert fought == {("IN01", "opposed", 1), ("IN02", "opposed", 1)}
    assert report.proposals[0] == ""  # never lowered: kept as given
    spec = report.proposals[1]
    parsed = parse_block_weights(spec, "sd1")
    given = parse_block_weights("OUT=0.5", "sd1")
    for block in ("IN00", "IN01", "IN02", "IN04", "M00", "OUT03", "OUT11", "BASE"):
        want = 0.0 if block in ("IN01", "IN02") else given.weight(block)
        assert parsed.weight(block) == want, (block, spec)
    again = stack_report([MergeInput.open(inputs[0].lora.path, 1.0), MergeInput.open(inputs[1].lora.path, 0.5, spec)])
    assert again.fights == []
    text = report.to_text()
    assert "IN01: [1] vs [2] opposed" in text and spec in text
    d = report.to_dict()
    assert d["loras"][1]["proposed_block_weights"] == spec and d["fights"][0]["reason"] == "opposed"
    img = report.heat_map()
    assert img.size[0] >= 480 and img.mode == "RGB"


def test_lower_and_thresholds_shape_the_proposal(tmp):
    inputs = _opposed_stack(tmp)
    half = stack_report(inputs, thresholds=Thresholds(lower=0.25))
    assert parse_block_weights(half.proposals[1], "sd1").weight("IN01") == 0.25 * 1.0
    assert stack_report(inputs, thresholds=Thresholds(cos_threshold=1.0, overlap_threshold=1.0)).fights == []


def test_loras_of_different_models_are_refused_naming_both_files(tmp):
    sd = materialize("kohya_sd15_lora", os.path.join(tmp, "sd15_style.safetensors"), rank=2)
    flux = materialize("kohya_flux_lora", os.path.join(tmp, "flux_char.safetensors"), rank=2)
    with pytest.raises(ArchMismatchError) as err:
        stack_report([MergeInput.open(sd), MergeInput.open(flux)])
    msg = str(err.value)
    assert "flux_char.safetensors" in msg and "sd15_style.safetensors" in msg and "Flux" in msg and "SD1" in msg


def test_dora_modules_are_unmeasured_with_the_reason(tmp):
    dora = materialize("lycoris_sd15_locon_dora", os.path.join(tmp, "dora.safetensors"), rank=2)
    plain = materialize("kohya_sd15_lora", os.path.join(tmp, "plain.safetensors"), rank=2)
    report = stack_report([MergeInput.open(dora), MergeInput.open(plain)], thresholds=Thresholds(samples=64))
    reasons = {r for m in report.modules for r in m.unmeasured.values()}
    assert reasons and all(r.startswith("DoRA") for r in reasons)
    assert all(m.strength[0] is None for m in report.modules if 0 in m.unmeasured)
    assert any(b.unmeasured[0] for b in report.blocks)
    assert "unmeasured" in report.to_text()


def test_bad_thresholds_are_refused():
    with pytest.raises(SpecError, match="energy"):
        Thresholds(energy=0.0)
    with pytest.raises(SpecError, match="samples"):
        Thresholds(samples=0)
