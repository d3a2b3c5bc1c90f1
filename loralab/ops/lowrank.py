"""Low-rank linear algebra for merging, resizing and extracting LoRAs.

* :func:`svds_of_products`, :func:`svd_of_product`: the exact thin SVD of B·A from the factors
  (QR of B and of Aᵀ, from their Gram matrices where well conditioned; SVD of the small core),
  so a sum of LoRAs Σ Bᵢ·Aᵢ = [B₁ … Bₙ]·[A₁; …; Aₙ] is decomposed without building the out×in
  matrix; many equally shaped products at once.
* :func:`kron_svd`: the SVD of kron(W₁, W₂) from the SVDs of W₁ and W₂ (exact).
* :func:`full_svd`, :func:`dense_svd`: a dense matrix, by a full SVD or a randomized one (power
  iterations).
* :func:`select_rank`: the rank a :class:`RankRule` keeps of a spectrum (fixed, ``sv_ratio``,
  ``sv_fro``, ``sv_cumulative``; textbook definitions, no off-by-one).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import torch

from ..adapters import LoKr
from ..errors import SpecError

Tensor = torch.Tensor
WORK = torch.float64

RANK_MODES = ("fixed", "sv_ratio", "sv_fro", "sv_cumulative")
#: relative slack on the threshold comparisons, so a boundary met exactly in exact arithmetic
#: is met after floating-point sums too
_SLACK = 1e-12


@dataclass
class SVD:
    """A (possibly partial) SVD: M ≈ u·diag(s)·vh, s descending.

    The singular vectors are stored as coefficients in an orthonormal basis, u = left(u_coef) and
    vhᵀ = right(v_coef) (the bases are the identity unless given), so that only the k vectors a
    truncation keeps are ever expanded to full length. ``energy`` is ‖M‖_F² (Σ of every σ², also
    when ``s`` holds only the leading ones); ``nuclear`` is Σ of every σ, or None when only the
    leading singular values are known."""

    s: Tensor  # [r]
    energy: float
    nuclear: float | None
    u_coef: Tensor  # [p, r]
    v_coef: Tensor  # [q, r]
    left: Callable[[Tensor], Tensor] | None = None  # X [p, k] ↦ Q·X [out, k]
    right: Callable[[Tensor], Tensor] | None = None  # X [q, k] ↦ Q·X [in, k]

    @classmethod
    def of(cls, u: Tensor, s: Tensor, vh: Tensor, energy: float, nuclear: float | None) -> "SVD":
        """From explicit singular vectors."""
        return cls(s, energy, nuclear, u, vh.T)

    def _u(self, coef: Tensor) -> Tensor:
        return coef if self.left is None else self.left(coef)

    def _v(self, coef: Tensor) -> Tensor:
        return coef if self.right is None else self.right(coef)

    @property
    def u(self) -> Tensor:
        return self._u(self.u_coef)

    @property
    def vh(self) -> Tensor:
        return self._v(self.v_coef).T

    @property
    def complete(self) -> bool:
        return self.nuclear is not None

    def truncated(self, r: int, complete: bool = True) -> "SVD":
        """The leading r singular triplets (energy kept; nuclear norm dropped unless ``complete``)."""
        return SVD(self.s[:r], self.energy, self.nuclear if complete else None, self.u_coef[:, :r],
                   self.v_coef[:, :r], self.left, self.right)

    def kept_energy(self, k: int) -> float:
        """Σ_{i≤k} σᵢ² / ‖M‖_F² (1 for a zero matrix)."""
        if self.energy <= 0:
            return 1.0
        return min(1.0, float((self.s[:k].to(WORK) ** 2).sum()) / self.energy)

    def factors(self, k: int) -> tuple[Tensor, Tensor]:
        """Balanced rank-k factors (u·√s, √s·vh): their product is the best rank-k approximation."""
        root = self.s[:k].clamp_min(0).sqrt()
        return self._u(self.u_coef[:, :k] * root), self._v(self.v_coef[:, :k] * root).T


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: QR and SVD of thin or small matrices are memory bound,
    and LAPACK's threads only add contention (ten times slower on a busy two-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _numerical_rank(s: Tensor, shape: tuple[int, int], scale: float | None = None) -> int:
    """Count of singular values above rounding noise: max(shape)·eps·scale, where ``scale`` is the
    size of what the matrix was computed from (σ₁ by default: NumPy's matrix_rank tolerance; the
    norms of the terms when they may cancel)."""
    if s.numel() == 0 or float(s[0]) <= 0:
        return 0
    tol = (float(s[0]) if scale is None else scale) * max(shape) * torch.finfo(s.dtype).eps
    return int((s > tol).sum())


#: largest trace of the inverse of an equilibrated Gram matrix G' = D⁻¹·MᵀM·D⁻¹ (D² = diag MᵀM) for
#: which its Cholesky factor serves as R in M = Q·R, by working dtype. The trace bounds 1/λmin(G'),
#: and Q = M·R⁻¹ departs from orthonormality by about the rounding of G' times 1/λmin(G'): at most
#: 1e-8 in float64. In float32 (bench/bench_merge_speed.py --conditioning, float16 factors built to
#: be ill-conditioned): rank-32 results within 1e-6 of float64's up to the limit (3e-5 at 6e4, 2e-3
#: at 3e6), where the kept singular values stand apart from the rest; float16's rounding is 5e-4.
#: Beyond the limit: float64, then Householder QR.
GRAM_LIMIT = {torch.float64: 1e8, torch.float32: 1e4}


def _cholesky_bases(gram: Tensor, limit: float) -> tuple[Tensor, Tensor, Tensor]:
    """For Gram matrices gram[i] = M[i]ᵀ·M[i] ([n, R, R], float64): R[i] (upper triangular, with
    M[i] = Q[i]·R[i], Q[i] orthonormal), R[i]⁻¹, and whether they are accurate (the Cholesky
    factorisation of the equilibrated Gram matrix succeeded and its inverse's trace is ≤ ``limit``)."""
    d = gram.diagonal(dim1=-2, dim2=-1).sqrt()
    d = torch.where(d > 0, d, torch.ones_like(d))  # a zero column: the factorisation fails, QR takes it
    low, info = torch.linalg.cholesky_ex(gram / (d[:, :, None] * d[:, None, :]))
    inv = torch.linalg.solve_triangular(low, torch.eye(gram.shape[-1], dtype=gram.dtype), upper=False)
    ok = (info == 0) & (inv.pow(2).sum((1, 2)) <= limit)  # ‖L⁻¹‖_F² = trace(G'⁻¹); False for NaN
    return low.mT * d[:, None, :], inv.mT / d[:, :, None], ok


def _expand(m: Tensor, t: Tensor | None, x: Tensor) -> Tensor:
    """Q·X for the basis Q = m·t (t None: Q = m)."""
    return m @ (x if t is None else t @ x).to(m.dtype)


def _expand_rows(a: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """Q·X for the basis Q = aᵀ·t, as the transpose of Xᵀ·tᵀ·a (rows of ``a`` read as they are stored)."""
    return ((t @ x).to(a.dtype).mT @ a).mT


def svds_of_products(b: Tensor, a: Tensor, coef: Tensor | None = None, work: torch.dtype = WORK) -> list[SVD]:
    """Exact thin SVDs of b[i]·diag(coef[i])·a[i] for a batch of equally shaped factors (b [n, out, R],
    a [n, R, in], coef [n, R], default ones) without forming the products: b[i] = Q_b·R_b,
    a[i]ᵀ = Q_a·R_a, and the SVD of the small core R_b·diag(coef[i])·R_aᵀ.

    R comes from the Cholesky factor of the Gram matrix bᵀb (aaᵀ), a matrix product computed in
    ``work`` precision, where that is accurate (:data:`GRAM_LIMIT`); otherwise from the Gram
    matrix in float64, then from Householder QR (float64). The cores and their SVDs are float64;
    the singular vectors are expanded from ``b`` and ``a`` in ``work`` precision (float64 where a
    fallback took over)."""
    n, rows, width = b.shape
    cols = a.shape[2]
    coef = torch.ones(n, width, dtype=WORK) if coef is None else coef.to(WORK)
    bw, aw = b.to(work), a.to(work)
    gram_b, gram_a = (bw.mT @ bw).to(WORK), (aw @ aw.mT).to(WORK)
    # the size of what the products are computed from: ‖b·diag(coef)‖_F·‖a‖_F, see _numerical_rank
    scale = ((coef.pow(2) * gram_b.diagonal(dim1=1, dim2=2)).sum(1)
             * gram_a.diagonal(dim1=1, dim2=2).sum(1)).clamp_min(0).sqrt()
    rb, tb, ok_b = _cholesky_bases(gram_b, GRAM_LIMIT[work])
    ra, ta, ok_a = _cholesky_bases(gram_a, GRAM_LIMIT[work])
    ok = ok_b & ok_a & (width <= min(rows, cols))
    result: list[SVD | None] = [None] * n
    good = torch.nonzero(ok).reshape(-1).tolist()
    if good:
        u, s, vh = torch.linalg.svd((rb[good] * coef[good][:, None, :]) @ ra[good].mT)
        for j, i in enumerate(good):
            result[i] = _core_svd(u[j], s[j], vh[j], (rows, cols), float(scale[i]), partial(_expand, bw[i], tb[i]),
                                  partial(_expand_rows, aw[i], ta[i]))
    rest = [i for i in range(n) if result[i] is None]
    if rest and work != WORK:
        for i, svd in zip(rest, svds_of_products(b[rest], a[rest], coef[rest], WORK)):
            result[i] = svd
    else:
        for i in rest:
            left, rb_i = (partial(_expand, bw[i], tb[i]), rb[i]) if ok_b[i] and width <= rows else _qr(bw[i])
            right, ra_i = (partial(_expand_rows, aw[i], ta[i]), ra[i]) if ok_a[i] and width <= cols else _qr(aw[i].mT)
            u, s, vh = torch.linalg.svd((rb_i * coef[i]) @ ra_i.mT, full_matrices=False)
            result[i] = _core_svd(u, s, vh, (rows, cols), float(scale[i]), left, right)
    return result


def _qr(m: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    q, r = torch.linalg.qr(m.to(WORK))
    return partial(_expand, q, None), r


def _core_svd(u: Tensor, s: Tensor, vh: Tensor, shape: tuple[int, int], scale: float,
              left: Callable[[Tensor], Tensor], right: Callable[[Tensor], Tensor]) -> SVD:
    """The SVD of a product from its core's SVD and the bases, numerically zero singular values dropped."""
    r = _numerical_rank(s, shape, scale)
    s = s[:r]
    return SVD(s, float((s ** 2).sum()), float(s.sum()), u[:, :r], vh[:r].mT, left, right)


def svd_of_product(b: Tensor, a: Tensor) -> SVD:
    """Exact thin SVD of B·A (B [out, R], A [R, in]) without forming the product: the one-element
    batch of :func:`svds_of_products`, in float64."""
    with one_thread():
        return svds_of_products(b[None], a[None])[0]


def full_svd(m: Tensor, scale: float | None = None) -> SVD:
    """Exact thin SVD of a dense matrix, numerically zero singular values dropped (relative to
    ``scale``, see :func:`_numerical_rank`)."""
    with one_thread() if min(m.shape) <= 512 else contextlib.nullcontext():
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
    r = _numerical_rank(s, tuple(m.shape), scale)
    s = s[:r]
    return SVD.of(u[:, :r], s, vh[:r], float(m.to(WORK).pow(2).sum()), float(s.to(WORK).sum()))


def kron_svd(first: SVD, second: SVD) -> SVD:
    """Exact SVD of kron(W₁, W₂) from the SVDs of W₁ and W₂: singular values σ₁ᵢ·σ₂ⱼ with
    vectors kron(u₁ᵢ, u₂ⱼ) and kron(v₁ᵢ, v₂ⱼ)."""
    u1, s1, vh1 = first.u.to(WORK), first.s.to(WORK), first.vh.to(WORK)
    u2, s2, vh2 = second.u.to(WORK), second.s.to(WORK), second.vh.to(WORK)
    s, order = torch.sort(torch.outer(s1, s2).reshape(-1), descending=True)
    i1, i2 = order // s2.numel(), order % s2.numel()
    u = (u1[:, None, i1] * u2[None, :, i2]).reshape(u1.shape[0] * u2.shape[0], -1)
    vh = (vh1[i1, :, None] * vh2[i2, None, :]).reshape(-1, vh1.shape[1] * vh2.shape[1])
    return SVD.of(u, s, vh, first.energy * second.energy, first.nuclear * second.nuclear)


def randomized_svd(m: Tensor, k: int, *, oversample: int = 10, power_iters: int = 2,
                   generator: torch.Generator | None = None) -> SVD:
    """The leading ``k + oversample`` singular triplets of M by a randomized range finder with
    power iterations (Halko, Martinsson & Tropp 2011, algorithm 4.4)."""
    rows, cols = m.shape
    q = min(k + oversample, rows, cols)
    omega = torch.randn(cols, q, generator=generator, dtype=m.dtype)
    basis, _ = torch.linalg.qr(m @ omega)
    for _ in range(power_iters):
        z, _ = torch.linalg.qr(m.T @ basis)
        basis, _ = torch.linalg.qr(m @ z)
    ub, s, vh = torch.linalg.svd(basis.T @ m, full_matrices=False)
    return SVD(s, float(m.to(WORK).pow(2).sum()), None, ub, vh.T, lambda x: basis @ x)


def dense_svd(m: Tensor, rule: "RankRule", *, exact: bool, power_iters: int = 2,
              generator: torch.Generator | None = None, scale: float | None = None) -> SVD:
    """SVD of a dense matrix for ``rule``: a full SVD when ``exact``, when the matrix is small, or
    when the rule needs the whole spectrum (``sv_cumulative``); otherwise randomized, with as
    many leading singular values as the rule can keep. ``scale``: see :func:`full_svd`."""
    rows, cols = m.shape
    cap = rule.cap(min(rows, cols))
    small = min(rows, cols) <= 4 * (cap + 10) or rows * cols <= 1 << 20
    if exact or small or rule.mode == "sv_cumulative":
        return full_svd(m, scale)
    svd = randomized_svd(m, cap, power_iters=power_iters, generator=generator)
    r = _numerical_rank(svd.s, (rows, cols), scale)
    return svd.truncated(r, complete=False)


@dataclass(frozen=True)
class RankRule:
    """How many singular values to keep per module.

    * ``fixed``: ``value`` of them.
    * ``sv_ratio``: those with σᵢ ≥ σ₁ / ``value``.
    * ``sv_fro``: the smallest k with Σ_{i≤k} σᵢ² ≥ ``value`` · Σ σᵢ² (kept Frobenius energy).
    * ``sv_cumulative``: the smallest k with Σ_{i≤k} σᵢ ≥ ``value`` · Σ σᵢ.

    Every mode is capped by ``max_rank`` (when set) and by the matrix's numerical rank.
    """

    mode: str = "fixed"
    value: float = 16
    max_rank: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in RANK_MODES:
            raise SpecError(f"unknown rank mode {self.mode!r}; use one of {', '.join(RANK_MODES)}", key=self.mode)
        v = self.value
        if not math.isfinite(v):
            raise SpecError(f"{self.mode} needs a finite value, got {v}", key=self.mode)
        if self.mode == "fixed" and (v < 1 or v != int(v)):
            raise SpecError(f"a fixed rank is a whole number ≥ 1, got {v}", key="rank")
        if self.mode == "sv_ratio" and v < 1:
            raise SpecError(f"sv_ratio keeps σ ≥ σ₁/ratio, so the ratio is ≥ 1, got {v}", key="sv_ratio")
        if self.mode in ("sv_fro", "sv_cumulative") and not 0 < v <= 1:
            raise SpecError(f"{self.mode} is a fraction in (0, 1], got {v}", key=self.mode)
        if self.max_rank is not None and self.max_rank < 1:
            raise SpecError(f"max rank must be ≥ 1, got {self.max_rank}", key="max_rank")

    @classmethod
    def from_options(cls, rank: int | None = None, *, max_rank: int | None = None, default_max: int | None = None,
                     sv_ratio: float | None = None, sv_fro: float | None = None,
                     sv_cumulative: float | None = None) -> "RankRule | None":
        """The rule a user chose (command line or node): the dynamic mode given a threshold, capped
        by ``max_rank`` (``default_max`` when none is given); else a fixed ``rank``; None when neither."""
        for mode, value in (("sv_ratio", sv_ratio), ("sv_fro", sv_fro), ("sv_cumulative", sv_cumulative)):
            if value is not None:
                return cls(mode, value, max_rank if max_rank is not None else default_max)
        return None if rank is None else cls("fixed", rank, max_rank)

    def cap(self, limit: int) -> int:
        """The most singular values this rule can keep of a matrix whose smaller side is ``limit``."""
        c = int(self.value) if self.mode == "fixed" else limit
        if self.max_rank is not None:
            c = min(c, self.max_rank)
        return max(1, min(c, limit))

    def describe(self) -> str:
        if self.mode == "fixed":
            return f"rank {int(self.value)}"
        cap = f", max rank {self.max_rank}" if self.max_rank is not None else ""
        return f"{self.mode} {self.value:g}{cap}"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "value": int(self.value) if self.mode == "fixed" else self.value,
                "max_rank": self.max_rank}


def _first_reaching(cumulative: Tensor, target: float) -> int | None:
    """Smallest k (1-based) with cumulative[k-1] ≥ target, or None."""
    hits = torch.nonzero(cumulative >= target, as_tuple=False)
    return int(hits[0]) + 1 if hits.numel() else None


def select_rank(svd: SVD, rule: RankRule) -> int:
    """How many of ``svd``'s singular values ``rule`` keeps (0 only for a zero matrix)."""
    s = svd.s.to(WORK)
    n = int(s.numel())
    if n == 0 or float(s[0]) <= 0:
        return 0
    if rule.mode == "fixed":
        k = int(rule.value)
    elif rule.mode == "sv_ratio":
        k = int((s >= float(s[0]) / rule.value * (1 - _SLACK)).sum())
    elif rule.mode == "sv_fro":
        target = rule.value * svd.energy * (1 - _SLACK)
        k = _first_reaching(torch.cumsum(s ** 2, 0), target) or n
    else:
        if svd.nuclear is None:
            raise ValueError("sv_cumulative needs the whole spectrum")
        k = _first_reaching(torch.cumsum(s, 0), rule.value * svd.nuclear * (1 - _SLACK)) or n
    if rule.max_rank is not None:
        k = min(k, rule.max_rank)
    return max(1, min(k, n))


def lokr_svd(adapter: LoKr) -> SVD:
    """Exact SVD of a LoKr's unscaled kron(W₁, W₂) (conv kernels flattened), each factor's SVD
    taken from its own low-rank factors where it is stored decomposed."""
    def factor(w: torch.Tensor | None, a: torch.Tensor | None, b: torch.Tensor | None) -> SVD:
        if w is not None:
            return full_svd(w.to(WORK).reshape(w.shape[0], -1))
        return svd_of_product(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
    first = factor(adapter.w1, adapter.w1a, adapter.w1b)
    if adapter.t2 is not None:
        w2 = adapter.factor2(WORK)
        second = full_svd(w2.reshape(w2.shape[0], -1))
    else:
        second = factor(adapter.w2, adapter.w2a, adapter.w2b)
    return kron_svd(first, second)
