"""Low-rank algebra against dense reference computations, and rank selection against the
textbook definitions on constructed spectra (exact k, boundaries included)."""
import math

import pytest
import torch

from loralab.errors import SpecError
from loralab.ops.lowrank import (RankRule, dense_svd, full_svd, kron_svd, randomized_svd, select_rank,
                                 svd_of_product, svds_of_products)

D = torch.float64
F32 = torch.float32


def rnd(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def orthonormal(n, k, seed):
    q, _ = torch.linalg.qr(rnd(n, k, seed=seed))
    return q


def with_spectrum(s, rows=40, cols=30, seed=0):
    """A matrix with exactly these singular values, as low-rank factors (U·diag(s), Vᵀ)."""
    s = torch.tensor(s, dtype=D)
    u = orthonormal(rows, len(s), seed)
    v = orthonormal(cols, len(s), seed + 1)
    return u * s, v.T



def _assert_svd_of(svd, m, ref, r):
    """``svd`` is the rank-``r`` SVD of ``m`` (singular values ``ref``), orthonormal and exact."""
    assert svd.s.numel() == r
    assert torch.allclose(svd.s, ref[:r], rtol=1e-12, atol=1e-12 * float(ref[0]))
    assert torch.allclose(svd.u.T @ svd.u, torch.eye(r, dtype=D), atol=1e-10)
    assert torch.allclose(svd.vh @ svd.vh.T, torch.eye(r, dtype=D), atol=1e-10)
    assert float((svd.u * svd.s @ svd.vh - m).norm() / m.norm()) < 1e-13
    assert svd.energy == pytest.approx(float(m.norm()) ** 2, rel=1e-12)

@pytest.mark.parametrize("case", ["well", "duplicate", "zero_column"])
def test_svd_of_product_equals_dense_svd(case):
    b, a = rnd(300, 12, seed=1), rnd(12, 200, seed=2)
    if case == "duplicate":  # rank-deficient B: the Gram path would be inaccurate, QR takes over
        b[:, 7] = 2 * b[:, 3]
    if case == "zero_column":  # an untrained module: up initialised to zero
        b[:, 0] = 0
    m = b @ a
    svd = svd_of_product(b, a)
    ref = torch.linalg.svdvals(m)
    r = 11 if case != "well" else 12
    _assert_svd_of(svd, m, ref, r)
    assert svd.nuclear == pytest.approx(float(ref.sum()), rel=1e-12)


def test_a_batch_of_products_each_equals_its_dense_svd():
    """One call for equally shaped stacks b·diag(coef)·a: well conditioned ones through their Gram
    matrices, a rank-deficient one (a column repeated, scaled) and an untrained one (zero up
    columns) through QR, all exact."""
    b, a, coef = rnd(4, 60, 8, seed=11), rnd(4, 8, 50, seed=12), rnd(4, 8, seed=13)
    b[1, :, 5] = -3 * b[1, :, 2]
    b[2, :, :3] = 0
    svds = svds_of_products(b, a, coef)
    for i, r in enumerate((8, 7, 5, 8)):
        m = b[i] * coef[i] @ a[i]
        svd = svds[i]
        ref = torch.linalg.svdvals(m)
        _assert_svd_of(svd, m, ref, r)


def float16_factors(kappa, rows=300, width=24, cols=200, seed=0):
    """b [rows, width] and a [width, cols] holding float16 values, b with condition number about ``kappa``."""
    s = torch.logspace(0, -math.log10(kappa), width, dtype=D)
    b = (orthonormal(rows, width, seed) * s) @ orthonormal(width, width, seed + 1).T
    return b.half(), rnd(width, cols, seed=seed + 2).half()


@pytest.mark.parametrize("kappa, work", [(3, F32), (1e3, D), (1e6, D)])
def test_float32_work_where_well_conditioned_else_float64(kappa, work):
    """Gram matrices in float32 only where the trace bound allows (the expanded factors come out in
    the precision that was used): there, within 1e-6 of the best rank-k approximation; elsewhere
    float64 (through the Gram matrix, then QR) and as exact as ever."""
    b, a = float16_factors(kappa)
    m = b.double() @ a.double()
    ref = torch.linalg.svdvals(m)
    svd = svds_of_products(b[None], a[None], work=F32)[0]
    up, down = svd.factors(10)
    assert up.dtype == down.dtype == work
    best = float(ref[10:].pow(2).sum().sqrt())
    excess = float((up.double() @ down.double() - m).norm()) - best
    tol = 1e-6 if work == F32 else 1e-12
    assert -1e-12 * best <= excess <= tol * float(m.norm())
    assert torch.allclose(svd.s, ref[:svd.s.numel()], rtol=tol, atol=tol * float(ref[0]))


def test_truncation_is_the_optimal_rank_k_approximation():
    b, a = rnd(200, 24, seed=3), rnd(24, 150, seed=4)
    m = b @ a
    svd = svd_of_product(b, a)
    ref = torch.linalg.svdvals(m)
    for k in (1, 5, 17):
        up, down = svd.factors(k)
        err = float((up @ down - m).norm())
        assert err == pytest.approx(float(ref[k:].pow(2).sum().sqrt()), rel=1e-10)  # Eckart–Young
        assert svd.kept_energy(k) == pytest.approx(float(ref[:k].pow(2).sum() / ref.pow(2).sum()), rel=1e-12)


def test_kron_svd_is_exact():
    w1, w2 = rnd(4, 6, seed=5), rnd(7, 5, seed=6) @ rnd(5, 9, seed=7)  # w2 of rank 5
    k = kron_svd(full_svd(w1), full_svd(w2))
    ref = torch.kron(w1, w2)
    assert k.s.numel() == 4 * 5
    assert torch.all(k.s[:-1] >= k.s[1:])
    assert torch.allclose(k.s, torch.linalg.svdvals(ref)[:20], rtol=1e-12)
    assert torch.allclose(k.u * k.s @ k.vh, ref, atol=1e-12)
    assert torch.allclose(k.u.T @ k.u, torch.eye(20, dtype=D), atol=1e-12)


def spectrum_svd(s):
    return svd_of_product(*with_spectrum(s))


# s = 4, 3, 2, 1: Σσ = 10 (cumulative 0.4, 0.7, 0.9, 1.0); Σσ² = 30 (16/30, 25/30, 29/30, 1)
@pytest.mark.parametrize("mode,value,max_rank,k", [
    ("fixed", 3, None, 3),
    ("fixed", 10, None, 4),  # never more than the matrix's rank
    ("sv_cumulative", 0.4, None, 1),
    ("sv_cumulative", 0.7, None, 2),  # boundary: Σ_{i≤2}σ = 0.7·Σσ exactly
    ("sv_cumulative", 0.7001, None, 3),
    ("sv_cumulative", 1.0, None, 4),
    ("sv_fro", 0.5, None, 1),
    ("sv_fro", 25 / 30, None, 2),  # boundary
    ("sv_fro", 25 / 30 + 1e-6, None, 3),
    ("sv_fro", 0.99, None, 4),
    ("sv_fro", 0.99, 2, 2),  # the cap wins
    ("sv_ratio", 1.0, None, 1),  # σ ≥ σ₁
    ("sv_ratio", 2.0, None, 3),  # boundary: σ₃ = 2 = σ₁/2 is kept
    ("sv_ratio", 1.99, None, 2),
    ("sv_ratio", 4.0, None, 4),
    ("sv_ratio", 4.0, 3, 3),
])
def test_rank_selection_matches_the_definitions(mode, value, max_rank, k):
    rule = RankRule(mode, value, max_rank)
    svd = spectrum_svd([4.0, 3.0, 2.0, 1.0])
    assert select_rank(svd, rule) == k


def test_rank_selection_is_not_kohyas_off_by_one():
    """kohya's resize keeps searchsorted(...) + 1 singular values; the smallest k meeting the
    target is the definition. Here one singular value carries 90% of the energy."""
    svd = spectrum_svd([3.0, 1.0])  # energies 0.9, 1.0
    assert select_rank(svd, RankRule("sv_fro", 0.9)) == 1
    assert select_rank(svd, RankRule("sv_cumulative", 0.75)) == 1  # 3 / 4


def test_rank_selection_on_a_long_spectrum_agrees_with_brute_force():
    s = sorted((float(x) for x in torch.rand(25, generator=torch.Generator().manual_seed(8)) * 10), reverse=True)
    svd = spectrum_svd(s)
    t = torch.tensor(s, dtype=D)
    for target in (0.3, 0.55, 0.8, 0.95):
        fro = min(k for k in range(1, 26) if float(t[:k].pow(2).sum()) >= target * float(t.pow(2).sum()))
        cum = min(k for k in range(1, 26) if float(t[:k].sum()) >= target * float(t.sum()))
        assert select_rank(svd, RankRule("sv_fro", target)) == fro
        assert select_rank(svd, RankRule("sv_cumulative", target)) == cum
    for ratio in (1.5, 3.0, 10.0):
        assert select_rank(svd, RankRule("sv_ratio", ratio)) == sum(1 for x in s if x >= s[0] / ratio)


def test_zero_matrix_keeps_nothing():
    svd = svd_of_product(torch.zeros(10, 3, dtype=D), rnd(3, 8))
    assert select_rank(svd, RankRule("fixed", 4)) == 0


@pytest.mark.parametrize("mode,value", [("fixed", 0), ("fixed", 2.5), ("sv_fro", 1.5), ("sv_fro", 0),
                                        ("sv_cumulative", -0.1), ("sv_ratio", 0.5), ("nope", 1)])
def test_bad_rules_are_refused(mode, value):
    with pytest.raises(SpecError):
        RankRule(mode, value)


def test_randomized_svd_finds_the_leading_spectrum():
    b, a = rnd(600, 20, seed=9), rnd(20, 500, seed=10)
    m = (b @ a).float() + 0.01 * rnd(600, 500, seed=11).float()
    exact = torch.linalg.svdvals(m.double())
    approx = randomized_svd(m, 20, power_iters=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(approx.s[:20].double(), exact[:20], rtol=1e-4)
    up, down = approx.factors(20)
    err = float((up @ down - m).double().norm())
    best = float(exact[20:].pow(2).sum().sqrt())
    assert err <= best * (1 + 1e-3)


def test_dense_svd_uses_the_whole_spectrum_for_sv_cumulative():
    m = rnd(1030, 1024, seed=12).float()
    svd = dense_svd(m, RankRule("sv_cumulative", 0.5, 8), exact=False)
    assert svd.complete and svd.s.numel() == 1024
    svd = dense_svd(m, RankRule("fixed", 8), exact=False)
    assert not svd.complete and svd.s.numel() == 18
