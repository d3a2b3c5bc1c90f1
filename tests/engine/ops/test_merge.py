"""Merging against the math: Σ wᵢ·blockweightᵢ·ΔWᵢ computed independently, through random probes
(ΔW·P from B·(A·P)) so full-size Flux and SD layouts stay cheap; dense ΔW only on small modules."""
import hashlib
import json
import os

import pytest
import torch

from loralab.adapters import LoKr
from loralab.errors import ArchMismatchError, FileExistsRefusedError, LoraFormatError
from loralab.files.hashes import addnet_hash
from loralab.layouts import ModelLayout
from loralab.lora import Lora
from loralab.ops.lowrank import RankRule, one_thread
from loralab.ops import merge as merge_module
from loralab.ops.convert import convert
from loralab.ops.merge import MergeInput, merge, resize
from loralab.formats.host_keys import NEWEST, host_targets
from loralab.formats.model_weights import ModelWeights
from loralab.files.safetensors import read_header, save_tensors
from loralab_testkit import fixture_tensors, materialize

from loralab_testkit.fitted import fitted_lora

D = torch.float64
F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small matrices: one thread is several times faster on a shared two-core machine."""
    with one_thread():
        yield


def lora(name, rank=2, seed=0, **kw):
    return Lora.from_state_dict(fixture_tensors(name, rank=rank, seed=seed, dtype=F32), **kw)


def place(m, target, full_rows):
    """Rows of a fused weight, written independently of the engine's placement."""
    if target.swap_halves:
        h = m.shape[0] // 2
        m = torch.cat([m[h:], m[:h]])
    if target.rows is None:
        return m
    out = torch.zeros(full_rows, *m.shape[1:], dtype=m.dtype)
    out[target.rows[0]:target.rows[0] + target.rows[1]] = m
    return out


def applied(adapter, probe):
    """ΔW·P without building ΔW: from the factors, or for LoKr by kron(W₁, W₂)·x = vec(W₁·X·W₂ᵀ)."""
    if isinstance(adapter, LoKr):
        w1 = adapter.factor1(D)
        w2 = adapter.factor2(D).reshape(adapter.factor2(D).shape[0], -1)
        x = probe.reshape(w1.shape[1], w2.shape[1], probe.shape[1])
        return adapter.scale * torch.einsum("ij,jln,kl->ikn", w1, x, w2).reshape(-1, probe.shape[1])
    lr = adapter.low_rank(D)
    if lr is not None:
        return lr[0] @ (lr[1] @ probe)
    return adapter.delta_flat(D) @ probe


class Probes:
    def __init__(self, layout, n=3, seed=0):
        self.layout = layout
        self.g = torch.Generator().manual_seed(seed)
        self.n = n
        self.cache = {}

    def __getitem__(self, key):
        if key not in self.cache:
            shape = self.layout.shapes[key]
            cols = 1 if len(shape) < 2 else int(torch.tensor(shape[1:]).prod())
            self.cache[key] = torch.randn(cols, self.n, generator=self.g, dtype=D)
        return self.cache[key]


def reference(parts, probes, layout):
    """Σ over (Lora, weight, block weights or None) of weight·bw(key)·ΔW·P, per model key."""
    out = {}
    for lo, w, bw in parts:
        for m in lo.mapped():
            c = w * (bw.for_key(m.target.key) if bw is not None else 1.0)
            if c == 0:
                continue
            full = layout.shapes[m.target.key]
            y = place(applied(lo.adapter(m.entry), probes[m.target.key]), m.target, full[0] if full else 1)
            out[m.target.key] = out.get(m.target.key, 0) + c * y
    return out


def response(tensors, probes, layout):
    got = Lora.from_state_dict(tensors, layout=layout)
    assert not list(got.unmapped()), [(m.entry.module, m.reason) for m in got.unmapped()][:3]
    out = {}
    for m in got.mapped():
        assert m.target.rows is None
        out[m.target.key] = out.get(m.target.key, 0) + applied(got.adapter(m.entry), probes[m.target.key])
    return out


def assert_same(got, ref, rtol):
    assert set(got) == set(ref), sorted(set(got) ^ set(ref))[:5]
    for k in ref:
        err = float((got[k] - ref[k]).norm() / ref[k].norm())
        assert err < rtol, (k, err)


def assert_responds_as(tensors, lo, rtol):
    """``tensors`` (a resize or convert result) respond to random probes as ``lo`` at strength 1."""
    probes = Probes(lo.layout)
    assert_same(response(tensors, probes, lo.layout), reference([(lo, 1.0, None)], probes, lo.layout), rtol)


def assert_converts_to_a_file_hosts_load(name, folder, rules=(NEWEST,), fmt=None):
    """The fixture LoRA ``name`` converted (float32) responds to random probes as the fixture, and the
    file it saves in ``folder`` reads back as the same arch (and format ``fmt``) with every key loaded
    by the hosts of ``rules``."""
    lo = lora(name, seed=4)
    result = convert(lo, title="converted", dtype=F32)
    assert_responds_as(result.tensors, lo, 1e-6)
    again = Lora.open(result.save(os.path.join(folder, name + ".safetensors")))
    assert again.detection.arch == lo.detection.arch
    assert fmt is None or again.detection.format == fmt
    for r in rules:
        assert all(t is not None for t in host_targets(list(result.tensors), again.layout, rules=r).values())


def assert_merges_to_dense_sum(a, b, svd_rank, key_prefix=None):
    """0.8·a − 0.5·b merged by concat and by SVD at ``svd_rank`` responds as the weighted sum of the
    two ΔW on ``b``'s layout; with ``key_prefix``, every merged key starts with it."""
    layout = b.layout
    probes = Probes(layout)
    ref = reference([(a, 0.8, None), (b, -0.5, None)], probes, layout)
    for method, rule in (("concat", None), ("svd", RankRule("fixed", svd_rank))):
        result = merge([MergeInput(a, 0.8), MergeInput(b, -0.5)], method, rule, dtype=F32)
        if key_prefix is not None:
            assert all(k.startswith(key_prefix) for k in result.tensors)
        assert_same(response(result.tensors, probes, layout), ref, 1e-5)


SD15_MIX = [("kohya_sd15_lora", 0.8), ("lycoris_sd15_loha", -0.5), ("lycoris_sd15_lokr", 0.3),
            ("comfyui_trainer_sd15_lora", 1.3)]


@pytest.fixture(scope="module")
def sd15_mix():
    return [(lora(name, seed=i), w) for i, (name, w) in enumerate(SD15_MIX)]


def test_concat_equals_the_weighted_sum(sd15_mix):
    """LoRA, LoCon 3×3, LoHa, LoKr, full diffs and bias diffs of four producers, negative weights."""
    inputs = [MergeInput(lo, w) for lo, w in sd15_mix]
    result = merge(inputs, "concat", dtype=F32)
    layout = sd15_mix[0][0].layout
    probes = Probes(layout)
    assert_same(response(result.tensors, probes, layout), reference([(lo, w, None) for lo, w in sd15_mix], probes,
                                                                     layout), 1e-5)
    ranks = {m.key: m.rank for m in result.modules}
    attn = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert ranks[attn] == 2 + 2 * 2 + 8 * 2 + 2  # kohya r, LoHa r₁·r₂, LoKr rank(w1)·rank(w2), trainer r
    assert all(m.kept == 1.0 for m in result.modules)
    assert any(k.endswith(".diff_b") for k in result.tensors)  # bias differences kept, summed


@pytest.mark.parametrize("weights, exact", [((1.0, 1.0), True), ((0.5, -2.0), True), ((1.0, 0.7), False)])
def test_concat_written_in_fp16_keeps_the_inputs_factors(weights, exact):
    """fp16 inputs merged by concat into fp16 (the default): weight·alpha/rank goes into each
    module's alpha, so the written factors are the inputs' own and ΔW is the float64 weighted sum
    (up to alpha's float32 rounding). Weights that differ by more than a power of two cannot share
    one alpha: their ratio is rounded into fp16 up factors, and the report says so."""
    los = [Lora.from_state_dict(fixture_tensors("kohya_sd15_lora", rank=4, seed=i, dtype=torch.float16))
           for i in range(2)]
    result = merge([MergeInput(lo, w) for lo, w in zip(los, weights)], "concat")
    assert {t.dtype for k, t in result.tensors.items() if not k.endswith(".alpha")} == {torch.float16}
    layout = los[0].layout
    probes = Probes(layout)
    got = response(result.tensors, probes, layout)
    ref = reference([(lo, w, None) for lo, w in zip(los, weights)], probes, layout)
    worst = max(float((got[k] - ref[k]).norm() / ref[k].norm()) for k in ref)
    if exact:
        assert worst < 1e-7 and "rounded to the output dtype" not in result.report()
    else:
        assert 1e-6 < worst < 1e-3 and "exact with --dtype fp32" in result.report()
        assert_same(response(merge([MergeInput(lo, w) for lo, w in zip(los, weights)], "concat", dtype=F32).tensors,
                             probes, layout), ref, 1e-7)


def test_svd_at_full_rank_is_exact(sd15_mix):
    inputs = [MergeInput(lo, w) for lo, w in sd15_mix]
    result = merge(inputs, "svd", RankRule("fixed", 4096), dtype=F32)
    layout = sd15_mix[0][0].layout
    probes = Probes(layout)
    assert_same(response(result.tensors, probes, layout), reference([(lo, w, None) for lo, w in sd15_mix], probes,
                                                                     layout), 1e-5)
    assert min(m.kept for m in result.modules) > 1 - 1e-9


def test_svd_at_rank_k_has_the_dense_truncated_svd_error():
    parts = [(lora("kohya_sd15_lora", rank=4, seed=1), 1.0), (lora("lycoris_sd15_lokr", rank=2, seed=2), -0.7),
             (lora("lycoris_sd15_loha", rank=2, seed=3), 0.4)]
    k = 5
    result = merge([MergeInput(lo, w) for lo, w in parts], "svd", RankRule("fixed", k), dtype=F32)
    got = Lora.from_state_dict(result.tensors)
    smaller = sorted(got.mapped(), key=lambda m: got.layout.shapes[m.target.key][0])[:20]  # dense ΔW of these only
    mine = {m.target.key: got.adapter(m.entry).delta_flat(D) for m in smaller}
    checked = 0
    for key in mine:
        dense = 0
        for lo, w in parts:
            for m in lo.mapped():
                if m.target.key == key:
                    dense = dense + w * lo.adapter(m.entry).delta_flat(D)
        s = torch.linalg.svdvals(dense)
        best = float(s[k:].pow(2).sum().sqrt())
        err = float((mine[key] - dense).norm())
        assert abs(err - best) <= 1e-4 * best + 1e-6 * float(dense.norm()), (key, err, best)  # + float32 storage
        report = next(r for r in result.modules if r.key == key)
        assert report.rank == min(k, min(dense.shape))
        assert report.kept == pytest.approx(float(s[:k].pow(2).sum() / s.pow(2).sum()), rel=1e-9)
        checked += 1
    assert checked == 20


def dense_sum(parts, key):
    return sum(w * lo.adapter(m.entry).delta_flat(D) for lo, w in parts for m in lo.mapped() if m.target.key == key)


def test_svd_into_float16_is_the_best_approximation_up_to_float16_rounding():
    """16-bit outputs take their factors' Gram matrices in float32: the kept energy agrees with
    the dense SVD's to 1e-6, and the written result is the dense rank-k optimum up to the rounding
    of the float16 factors (as the float32 output of the same merge is)."""
    parts = [(Lora.from_state_dict(fixture_tensors("kohya_sd15_lora", rank=8, seed=i, dtype=torch.float16)), w)
             for i, w in enumerate((1.0, 0.5, -0.7))]
    k = 6
    inputs = [MergeInput(lo, w) for lo, w in parts]
    result = merge(inputs, "svd", RankRule("fixed", k))
    wide = merge(inputs, "svd", RankRule("fixed", k), dtype=F32)
    got, ref = Lora.from_state_dict(result.tensors), Lora.from_state_dict(wide.tensors)
    assert {t.dtype for n, t in result.tensors.items() if not n.endswith(".alpha")} == {torch.float16}
    reports = {r.key: r for r in result.modules}
    theirs = {m.target.key: m for m in ref.mapped()}
    for m in sorted(got.mapped(), key=lambda m: got.layout.shapes[m.target.key][0])[:12]:
        key = m.target.key
        dense = dense_sum(parts, key)
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        best = (u[:, :k] * s[:k]) @ vh[:k]
        assert reports[key].kept == pytest.approx(float(s[:k].pow(2).sum() / s.pow(2).sum()), rel=1e-6)
        mine = got.adapter(m.entry).delta_flat(D)
        assert float((mine - best).norm() / best.norm()) < 1e-3  # float16 factors: 2⁻¹¹ relative each
        assert float((ref.adapter(theirs[key].entry).delta_flat(D) - best).norm() / best.norm()) < 2e-7


def test_batches_on_worker_threads_give_the_same_merge(monkeypatch):
    """Many small batches decomposed on two worker threads while modules are read: the same
    tensors and reports (in model order) as one batch per shape on the calling thread, and
    progress after every module."""
    parts = [(lora("kohya_sd15_lora", rank=4, seed=i), w) for i, w in enumerate((1.0, -0.6))]
    inputs = [MergeInput(lo, w) for lo, w in parts]
    ref = merge(inputs, "svd", RankRule("fixed", 5), dtype=F32)
    monkeypatch.setattr(merge_module, "_BATCH_BYTES", 100_000)
    calls = []
    torch.set_num_threads(2)
    try:
        got = merge(inputs, "svd", RankRule("fixed", 5), dtype=F32, progress=lambda done, total: calls.append(done))
    finally:
        torch.set_num_threads(1)
    assert calls == list(range(1, len(calls) + 1)) and len(calls) == len({m.target.key for m in parts[0][0].mapped()})
    assert [r.key for r in got.modules] == [r.key for r in ref.modules]
    assert [(r.rank, r.form) for r in got.modules] == [(r.rank, r.form) for r in ref.modules]
    assert got.tensors.keys() == ref.tensors.keys()
    for name, t in ref.tensors.items():
        assert torch.allclose(got.tensors[name], t, rtol=1e-5, atol=1e-6 * float(t.abs().max())), name


def test_ratios_are_applied_once():
    lo = lora("kohya_sd15_lora", rank=4, seed=5)
    probes = Probes(lo.layout)
    ref = reference([(lo, 0.5, None)], probes, lo.layout)
    for method, rule in (("concat", None), ("svd", RankRule("fixed", 4))):
        result = merge([MergeInput(lo, 0.5)], method, rule, dtype=F32)
        got = response(result.tensors, probes, lo.layout)
        assert_same(got, ref, 1e-5)
        key = next(iter(ref))
        assert not torch.allclose(got[key], 0.5 * ref[key], rtol=1e-2)  # kohya's squared ratio would give 0.25·ΔW


def test_kohya_and_aitoolkit_flux_merge_to_the_dense_sum():
    """ai-toolkit writes q, k, v (and proj_mlp) as row slices of Flux's fused weights; kohya writes
    the fused weights. Both land on the same keys and add up exactly."""
    kohya = lora("kohya_flux_lora", seed=1)
    ait = lora("aitoolkit_flux_lora", seed=2)
    layout = kohya.layout
    assert ait.layout.arch.id == "flux" and any(m.target.rows for m in ait.mapped())
    probes = Probes(layout)
    ref = reference([(kohya, 1.0, None), (ait, -0.6, None)], probes, layout)
    inputs = [MergeInput(kohya, 1.0), MergeInput(ait, -0.6)]
    for method, rule in (("concat", None), ("svd", RankRule("fixed", 64))):
        result = merge(inputs, method, rule, dtype=F32)
        assert all(k.startswith("lora_unet_") for k in result.tensors)
        assert_same(response(result.tensors, probes, layout), ref, 1e-5)
    linear1 = "diffusion_model.single_blocks.0.linear1.weight"
    assert next(m for m in result.modules if m.key == linear1).rank_in == 2 + 4 * 2  # kohya + q, k, v, proj_mlp


def test_block_weights_per_input_and_modules_of_one_input_kept():
    kohya = lora("kohya_flux_lora", seed=1)
    singles = {k: v for k, v in fixture_tensors("aitoolkit_flux_lora", rank=2, seed=2, dtype=F32).items()
               if k.startswith("transformer.single_transformer_blocks.")}
    ait = Lora.from_state_dict(singles)
    inputs = [MergeInput(kohya, 1.0, "D0-9=0, S=0.5"), MergeInput(ait, 0.8, "S00-S03=0")]
    result = merge(inputs, "concat", dtype=F32)
    layout = kohya.layout
    probes = Probes(layout)
    ref = reference([(kohya, 1.0, inputs[0].blocks("flux", layout)), (ait, 0.8, inputs[1].blocks("flux", layout))],
                    probes, layout)
    got = response(result.tensors, probes, layout)
    assert_same(got, ref, 1e-5)
    assert not any(k.startswith("diffusion_model.double_blocks.3.") for k in got)  # weight 0, ai-toolkit has none
    assert any(k.startswith("diffusion_model.double_blocks.12.") for k in got)  # kohya only
    assert "diffusion_model.single_blocks.2.linear1.weight" in got  # kohya only (ai-toolkit's S02 weight is 0)
    assert "diffusion_model.single_blocks.20.linear1.weight" in got


def test_dora_needs_the_base_weights():
    full = fixture_tensors("lycoris_sd15_locon_dora", rank=2, seed=3, dtype=F32)
    mods = sorted({k.rsplit(".", 2)[0] if ".lora_" in k else k.rsplit(".", 1)[0] for k in full})
    keep = [m for m in mods if "attn1_to_q" in m][:3]
    tensors = {k: v for k, v in full.items() if any(k.startswith(m + ".") for m in keep)}
    lo = Lora.from_state_dict(tensors)
    assert lo.layout.arch.id == "sd1" and len(list(lo.mapped())) == 3
    with pytest.raises(LoraFormatError) as err:
        merge([MergeInput(lo, 0.7)], "svd", RankRule("fixed", 8))
    assert "DoRA" in str(err.value) and "diffusion_model." in str(err.value) and "base" in str(err.value)
    g = torch.Generator().manual_seed(0)
    base_sd = {"model." + m.target.key: torch.randn(lo.layout.shapes[m.target.key], generator=g)
               for m in lo.mapped()}
    base = ModelWeights.from_state_dict(base_sd, lo.layout)
    for method, rule in (("svd", RankRule("fixed", 4096)), ("concat", None)):
        result = merge([MergeInput(lo, 0.7)], method, rule, base=base, dtype=F32)
        got = Lora.from_state_dict(result.tensors)
        assert len(list(got.mapped())) == 3
        for m in got.mapped():
            w = base_sd["model." + m.target.key].to(D)
            src = next(x for x in lo.mapped() if x.target.key == m.target.key)
            expected = lo.adapter(src.entry).apply_to(w, 0.7) - w  # DoRA at strength 0.7, minus the base
            assert torch.allclose(got.adapter(m.entry).delta(tuple(w.shape), D), expected, atol=1e-5)


def test_file_metadata_recipe_and_hashes(tmp):
    a = materialize("kohya_flux_lora", os.path.join(tmp, "style a.safetensors"), rank=2, seed=1)
    b = materialize("aitoolkit_flux_lora", os.path.join(tmp, "b.safetensors"), rank=2, seed=2)
    inputs = [MergeInput.open(a, 1.0, "S=0"), MergeInput.open(b, -0.25)]
    result = merge(inputs, "concat", title="pack")
    out = result.save(os.path.join(tmp, "out.safetensors"))
    meta = read_header(out).metadata
    assert meta["ss_network_dim"] == "Dynamic"  # 2 on kohya-only modules, 2 + 8 where q/k/v/mlp were fused
    assert meta["ss_network_alpha"] == "Dynamic"  # alpha = rank per module
    assert meta["ss_network_module"] == "networks.lora_flux"
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["modelspec.title"] == "pack"
    titles = [read_header(p).metadata.get("ss_output_name") or "b" for p in (a, b)]
    assert meta["modelspec.merged_from"] == ", ".join(titles) == "ohwx_woman_flux, my_first_flux_lora_v1"
    recipe = json.loads(meta["loralab.recipe"])
    assert recipe["method"] == "concat" and recipe["rank"] is None
    with open(a, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    assert recipe["inputs"][0]["addnet_hash"] == hashlib.sha256(raw[8 + n:]).hexdigest() == addnet_hash(a)
    assert recipe["inputs"][0]["autov3"] == addnet_hash(a)[:12]
    assert recipe["inputs"][0]["block_weights"] == "S=0" and recipe["inputs"][1]["weight"] == -0.25
    assert {t.dtype for t in read_header(out).tensors.values()} <= {"BF16", "F16"}
    with open(out, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    own = hashlib.sha256(raw[8 + n:]).hexdigest()  # the saved file names its own tensor data
    assert meta["sshs_model_hash"] == own and meta["modelspec.hash_sha256"] == "0x" + own
    assert meta["sshs_legacy_hash"] == hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]
    with pytest.raises(FileExistsRefusedError):
        result.save(out)
    svd = merge(inputs, "svd", RankRule("fixed", 6))
    meta = svd.metadata
    assert all(m.rank == min(6, m.rank_in) for m in svd.modules)  # modules of ai-toolkit alone have rank 2
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "Dynamic"
    single = merge([inputs[0]], "svd", RankRule("fixed", 2)).metadata
    assert single["ss_network_dim"] == "2" and single["ss_network_alpha"] == "2.0"
    assert json.loads(meta["loralab.recipe"])["rank"] == {"mode": "fixed", "value": 6, "max_rank": None}


def test_a_cancelled_merge_writes_nothing(tmp):
    a = materialize("kohya_sd15_lora", os.path.join(tmp, "a.safetensors"), rank=2)
    calls = []

    class Cancelled(Exception):
        pass

    def progress(done, total):
        calls.append(done)
        if done == 5:
            raise Cancelled

    with pytest.raises(Cancelled):
        merge([MergeInput.open(a)], "svd", RankRule("fixed", 2), progress=progress)
    assert calls == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(tmp)) == ["a.safetensors"]


def test_arch_mismatch_is_refused():
    with pytest.raises(ArchMismatchError):
        merge([MergeInput(lora("kohya_sd15_lora")), MergeInput(lora("kohya_sdxl_lora"))], "concat")
    with pytest.raises(LoraFormatError, match="lands on a weight of Flux"):  # opened with another model's layout
        merge([MergeInput(lora("comfyui_trainer_sd15_lora", layout=micro_flux()))], "concat")


def test_opposite_weights_cancel_out():
    lo = lora("kohya_sd15_lora", seed=4)
    result = merge([MergeInput(lo, 1.0), MergeInput(lo, -1.0)], "svd", RankRule("fixed", 4))
    assert result.tensors == {}
    assert all(m.rank == 0 for m in result.modules)
    assert "cancelled out" in result.report()


def test_resize_lokr_and_loha_exactly_and_optimally():
    for name in ("lycoris_sd15_lokr", "lycoris_sd15_loha"):
        lo = lora(name, rank=2, seed=6)
        exact = resize(MergeInput(lo), RankRule("fixed", 4096), dtype=F32)
        assert_responds_as(exact.tensors, lo, 1e-5)
        small = resize(MergeInput(lo), RankRule("fixed", 2), dtype=F32)
        got = Lora.from_state_dict(small.tensors)
        by_key = {m.target.key: m for m in lo.mapped()}
        for m in sorted(got.mapped(), key=lambda m: lo.layout.shapes[m.target.key][0])[:10]:
            dense = lo.adapter(by_key[m.target.key].entry).delta_flat(D)
            s = torch.linalg.svdvals(dense)
            err = float((got.adapter(m.entry).delta_flat(D) - dense).norm())
            assert err == pytest.approx(float(s[2:].pow(2).sum().sqrt()), rel=1e-4), m.target.key


def test_resize_dynamic_keeps_training_metadata(tmp):
    path = materialize("kohya_sd15_lora", os.path.join(tmp, "k.safetensors"), rank=4, seed=7)
    src = read_header(path).metadata
    result = resize(MergeInput.open(path), RankRule("sv_fro", 0.9, 3))
    assert max(m.rank for m in result.modules) <= 3
    assert all(m.kept >= 0.9 or m.rank == 3 for m in result.modules)
    meta = result.metadata
    for key in ("ss_tag_frequency", "ss_learning_rate", "ss_num_train_images"):
        if key in src:
            assert meta[key] == src[key]
    assert "sshs_model_hash" not in meta and "modelspec.merged_from" not in meta
    assert json.loads(meta["loralab.recipe"])["method"] == "resize"
    assert meta["ss_network_dim"] in ("Dynamic", "3", "2", "1")


MICRO_FLUX = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768, "context_in_dim": 4096,
              "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
              "qkv_bias": True, "guidance_embed": True}


def micro_flux():
    return ModelLayout.from_config("flux", MICRO_FLUX)


def dense_deltas(lo, weight, layout):
    out = {}
    for m in lo.mapped():
        full = layout.shapes[m.target.key]
        d = place(lo.adapter(m.entry).delta_flat(D), m.target, full[0])
        out[m.target.key] = out.get(m.target.key, 0) + weight * d
    return out


def topk_trim(t, density):
    k = int(round(density * t.numel()))
    idx = torch.topk(t.abs().reshape(-1), k).indices
    mask = torch.zeros(t.numel(), dtype=torch.bool)
    mask[idx] = True
    return t * mask.reshape(t.shape)


def merged_dense(result, layout):
    got = Lora.from_state_dict(result.tensors, layout=layout)
    return {m.target.key: got.adapter(m.entry).delta_flat(D) for m in got.mapped()}


def test_ties_and_magnitude_follow_the_papers():
    layout = micro_flux()
    a = Lora.from_state_dict(fitted_lora("kohya_flux_lora", layout, rank=8, seed=1), layout=layout)
    b = Lora.from_state_dict(fitted_lora("aitoolkit_flux_lora", layout, rank=8, seed=2), layout=layout)
    da, db = dense_deltas(a, 1.0, layout), dense_deltas(b, 0.5, layout)
    full_rank = RankRule("fixed", 4096)
    ties = merged_dense(merge([MergeInput(a, 1.0), MergeInput(b, 0.5)], "ties", full_rank, density=0.3, dtype=F32),
                        layout)
    mag = merged_dense(merge([MergeInput(a, 1.0), MergeInput(b, 0.5)], "magnitude", full_rank, density=0.3,
                             dtype=F32), layout)
    for key in da:
        taus = [topk_trim(t[key], 0.3) for t in (da, db) if key in t]
        sign = torch.sign(sum(taus))
        agree = [(torch.sign(t) == sign) & (t != 0) for t in taus]
        expected = sum(t * m for t, m in zip(taus, agree)) / torch.clamp(sum(m.to(D) for m in agree), min=1)
        assert torch.allclose(ties[key], expected, atol=1e-5 * float(expected.abs().max())), key
        assert torch.allclose(mag[key], sum(taus), atol=1e-5 * float(sum(taus).abs().max())), key


def test_dare_drops_and_rescales_reproducibly():
    layout = micro_flux()
    a = Lora.from_state_dict(fitted_lora("kohya_flux_lora", layout, rank=8, seed=1), layout=layout)
    full_rank = RankRule("fixed", 4096)
    one = merged_dense(merge([MergeInput(a)], "dare", full_rank, density=0.25, seed=3, dtype=F32), layout)
    again = merged_dense(merge([MergeInput(a)], "dare", full_rank, density=0.25, seed=3, dtype=F32), layout)
    other = merged_dense(merge([MergeInput(a)], "dare", full_rank, density=0.25, seed=4, dtype=F32), layout)
    plain = merged_dense(merge([MergeInput(a)], "dare", full_rank, density=1.0, dtype=F32), layout)
    ref = dense_deltas(a, 1.0, layout)
    kept = total = 0
    for key, d in ref.items():
        assert torch.allclose(plain[key], d, atol=1e-5 * float(d.abs().max()))
        assert torch.equal(one[key], again[key]) and not torch.allclose(one[key], other[key])
        alive = one[key].abs() > 1e-4 * float(d.abs().max())
        assert torch.allclose(one[key][alive], 4 * d[alive], atol=1e-5 * float(d.abs().max()))  # scaled by 1/(1−p)
        kept += int(alive.sum())
        total += d.numel()
    assert abs(kept / total - 0.25) < 0.01


def test_convert_a_trainer_state_dict_to_kohya():
    tensors = fixture_tensors("comfyui_trainer_sd15_lora", rank=2, seed=8, dtype=F32)
    lo = Lora.from_state_dict(tensors)
    result = convert(lo, title="trained", dtype=F32)
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in result.tensors)
    assert_responds_as(result.tensors, lo, 1e-6)
    assert result.metadata["modelspec.title"] == "trained"


def test_written_file_round_trips(tmp):
    a = materialize("kohya_sd15_lora", os.path.join(tmp, "a.safetensors"), rank=3, seed=1)
    result = merge([MergeInput.open(a, 0.5)], "svd", RankRule("fixed", 3), dtype=F32)
    path = result.save(os.path.join(tmp, "m.safetensors"))
    again = Lora.open(path)
    assert again.detection.format == "kohya" and not list(again.unmapped())
    src = Lora.open(a)
    probes = Probes(src.layout)
    got = {m.target.key: applied(again.adapter(m.entry), probes[m.target.key]) for m in again.mapped()}
    assert_same(got, reference([(src, 0.5, None)], probes, src.layout), 1e-5)


def test_non_finite_values_are_refused_naming_file_and_module(tmp):
    tensors = fixture_tensors("kohya_sd15_lora", rank=2, seed=9, dtype=F32)
    key = next(k for k in sorted(tensors) if k.endswith(".lora_up.weight"))
    tensors[key][0, 0] = float("nan")
    path = os.path.join(tmp, "broken.safetensors")
    save_tensors(path, tensors)
    with pytest.raises(LoraFormatError) as err:
        merge([MergeInput.open(path)], "svd", RankRule("fixed", 2))
    assert "broken.safetensors" in str(err.value) and key.split(".")[0] in str(err.value)
    assert "NaN or infinite" in str(err.value)
    assert os.listdir(tmp) == ["broken.safetensors"]
