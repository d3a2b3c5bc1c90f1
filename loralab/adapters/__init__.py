"""Adapter math: one type per algorithm, holding its tensors and its scale.

Every adapter gives the dense update ``delta()`` (scale included), its Frobenius norm
``fro_norm()`` computed from the factors without building ΔW where a closed form exists, and,
where one exists, an exact low-rank form ``low_rank()`` = (B, A) with ``B @ A`` equal to the
flattened scaled ΔW. DoRA (``dora_scale``) depends on the base weight: use ``apply_to``.

Scale conventions follow the producers (and ComfyUI): LoRA/LoHa scale is alpha / rank with a
missing alpha meaning alpha = rank; LoKr scales by alpha / rank of its decomposed factor and
ignores alpha when neither factor is decomposed (full-dimension LoKr).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor
WORK = torch.float64  # precision of norms and reference math


def _f(t: Tensor | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def gram_fro_norm(b: Tensor, a: Tensor) -> float:
    """‖B·A‖_F from the factors: sqrt(trace((BᵀB)(AAᵀ))), no out×in product."""
    b = _flat(b).to(WORK)
    a = _flat(a).to(WORK)
    val = float(((b.T @ b) * (a @ a.T)).sum())
    return math.sqrt(max(val, 0.0))


def dora_apply(weight: Tensor, merged: Tensor, dora_scale: Tensor, strength: float) -> Tensor:
    """DoRA as LyCORIS defines it: normalise ``merged`` = W + s·ΔW per output row (or input column,
    by the shape of ``dora_scale``) to magnitude ``dora_scale``; strength m interpolates the
    normalising factor as m·(f − 1) + 1."""
    del weight
    m = merged
    d = dora_scale.to(m.dtype)
    if d.shape[0] == m.shape[0] and d.numel() == m.shape[0]:
        norm = m.reshape(m.shape[0], -1).norm(dim=1).reshape(m.shape[0], *[1] * (m.dim() - 1))
    else:
        norm = m.transpose(0, 1).reshape(m.shape[1], -1).norm(dim=1).reshape(
            m.shape[1], *[1] * (m.dim() - 1)).transpose(0, 1)
    factor = d.reshape(norm.shape) / (norm + torch.finfo(m.dtype).eps)
    if strength != 1.0:
        factor = strength * (factor - 1) + 1
    return m * factor


@dataclass
class Adapter:
    """Common interface; subclasses hold the tensors of one module."""

    alpha: float | None = None
    dora_scale: Tensor | None = None
    kind: str = field(default="", init=False)

    @property
    def scale(self) -> float:
        raise NotImplementedError

    @property
    def rank(self) -> int | None:
        return None

    @property
    def out_features(self) -> int:
        raise NotImplementedError

    @property
    def in_numel(self) -> int:
        raise NotImplementedError

    @property
    def needs_base(self) -> bool:
        return self.dora_scale is not None

    def delta_flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Scaled ΔW as an [out, in·kh·kw] matrix."""
        raise NotImplementedError

    def delta(self, shape: tuple[int, ...] | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Scaled ΔW (without DoRA), reshaped to ``shape`` when given."""
        d = self.delta_flat(dtype)
        return d.reshape(shape) if shape is not None else d

    def low_rank(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor] | None:
        """(B [out, k], A [k, in_numel]) with B @ A == delta_flat(), or None if no low-rank form."""
        return None

    def fro_norm(self) -> float:
        """‖scale·ΔW‖_F (without DoRA)."""
        lr = self.low_rank(WORK)
        if lr is not None:
            return gram_fro_norm(*lr)
        return float(self.delta_flat(WORK).norm())

    def apply_to(self, weight: Tensor, strength: float = 1.0) -> Tensor:
        """The patched weight: W + strength·ΔW, or DoRA's normalised form when ``dora_scale`` is set."""
        w = weight.to(WORK)
        d = self.delta(tuple(weight.shape), WORK)
        if self.dora_scale is None:
            return w + strength * d
        return dora_apply(w, w + d, self.dora_scale.to(WORK), strength)


@dataclass
class LoRA(Adapter):
    """LoRA / LoCon: ΔW = scale · up · (mid ·) down. Conv kernels live in ``down`` (or ``mid``)."""

    up: Tensor = None  # type: ignore[assignment]
    down: Tensor = None  # type: ignore[assignment]
    mid: Tensor | None = None

    def __post_init__(self) -> None:
        self.kind = "lora"

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @property
    def out_features(self) -> int:
        return int(self.up.shape[0])

    @property
    def in_numel(self) -> int:
        if self.mid is not None:
            return int(self.down.shape[1]) * math.prod(self.mid.shape[2:])
        return math.prod(self.down.shape[1:])

    def _down_flat(self, dtype: torch.dtype) -> Tensor:
        down = self.down.to(dtype)
        if self.mid is None:
            return _flat(down)
        # A[m, (i, k...)] = Σ_n mid[m, n, k...] · down[n, i]
        mid = self.mid.to(dtype)
        d2 = down.reshape(down.shape[0], down.shape[1])
        return torch.einsum("mn...,ni->mi...", mid, d2).reshape(mid.shape[0], -1)

    def low_rank(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        return _flat(self.up.to(dtype)) * self.scale, self._down_flat(dtype)

    def delta_flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        b, a = self.low_rank(dtype)
        return b @ a


@dataclass
class LoHa(Adapter):
    """LoHa: ΔW = scale · (w1a·w1b) ⊙ (w2a·w2b), or the Tucker (CP) form with t1/t2."""

    w1a: Tensor = None  # type: ignore[assignment]
    w1b: Tensor = None  # type: ignore[assignment]
    w2a: Tensor = None  # type: ignore[assignment]
    w2b: Tensor = None  # type: ignore[assignment]
    t1: Tensor | None = None
    t2: Tensor | None = None

    def __post_init__(self) -> None:
        self.kind = "loha"

    @property
    def rank(self) -> int:
        return int(self.w1b.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def _factor(self, a: Tensor, b: Tensor, t: Tensor | None, dtype: torch.dtype) -> Tensor:
        if t is None:
            return _flat(a.to(dtype)) @ _flat(b.to(dtype))
        # t [i, j, k...], b [j, in], a [i, out] -> [out, in, k...]
        return torch.einsum("ij...,jr,ip->pr...", t.to(dtype), _flat(b.to(dtype)), _flat(a.to(dtype)))

    @property
    def out_features(self) -> int:
        return int(self.w1a.shape[1] if self.t1 is not None else self.w1a.shape[0])

    @property
    def in_numel(self) -> int:
        if self.t1 is not None:
            return int(self.w1b.shape[1]) * math.prod(self.t1.shape[2:])
        return math.prod(self.w1b.shape[1:])

    def delta_flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        m1 = self._factor(self.w1a, self.w1b, self.t1, dtype)
        m2 = self._factor(self.w2a, self.w2b, self.t2, dtype)
        return _flat(m1 * m2) * self.scale

    def low_rank(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor] | None:
        """Exact rank r1·r2 form: (A1•A2)(B1⊙B2) with face-splitting and Khatri-Rao products."""
        if self.t1 is not None:
            return None
        a1, b1 = _flat(self.w1a.to(dtype)), _flat(self.w1b.to(dtype))
        a2, b2 = _flat(self.w2a.to(dtype)), _flat(self.w2b.to(dtype))
        p = (a1[:, :, None] * a2[:, None, :]).reshape(a1.shape[0], -1)
        q = (b1[:, None, :] * b2[None, :, :]).reshape(-1, b1.shape[1])
        return p * self.scale, q


@dataclass
class LoKr(Adapter):
    """LoKr: ΔW = scale · kron(w1, w2); either factor may be stored decomposed (a·b, or Tucker for w2)."""

    w1: Tensor | None = None
    w1a: Tensor | None = None
    w1b: Tensor | None = None
    w2: Tensor | None = None
    w2a: Tensor | None = None
    w2b: Tensor | None = None
    t2: Tensor | None = None

    def __post_init__(self) -> None:
        self.kind = "lokr"

    @property
    def decomposed_rank(self) -> int | None:
        """Rank of the decomposed factor whose rank divides alpha (w2's, else w1's), if any."""
        if self.w2 is None and self.w2b is not None:
            return int(self.w2b.shape[0])
        if self.w1 is None and self.w1b is not None:
            return int(self.w1b.shape[0])
        return None

    @property
    def rank(self) -> int | None:
        return self.decomposed_rank

    @property
    def full_dimension(self) -> bool:
        return self.decomposed_rank is None

    @property
    def scale(self) -> float:
        r = self.decomposed_rank
        return 1.0 if self.alpha is None or r is None else self.alpha / r

    def factor1(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.w1.to(dtype) if self.w1 is not None else self.w1a.to(dtype) @ self.w1b.to(dtype)

    def factor2(self, dtype: torch.dtype = torch.float32) -> Tensor:
        if self.w2 is not None:
            return self.w2.to(dtype)
        if self.t2 is not None:
            return torch.einsum("ij...,jr,ip->pr...", self.t2.to(dtype), _flat(self.w2b.to(dtype)),
                                _flat(self.w2a.to(dtype)))
        return self.w2a.to(dtype) @ _flat(self.w2b.to(dtype))

    def _shapes(self) -> tuple[tuple[int, int], tuple[int, ...]]:
        s1 = tuple(self.w1.shape) if self.w1 is not None else (self.w1a.shape[0], self.w1b.shape[1])
        if self.w2 is not None:
            s2 = tuple(self.w2.shape)
        elif self.t2 is not None:
            s2 = (self.w2a.shape[1], self.w2b.shape[1], *self.t2.shape[2:])
        else:
            s2 = (self.w2a.shape[0], *self.w2b.shape[1:])
        return (int(s1[0]), int(s1[1])), tuple(int(x) for x in s2)

    @property
    def out_features(self) -> int:
        s1, s2 = self._shapes()
        return s1[0] * s2[0]

    @property
    def in_numel(self) -> int:
        s1, s2 = self._shapes()
        return s1[1] * math.prod(s2[1:])

    def kron(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """kron(w1, w2) unscaled, in w2's dimensionality (conv kernels kept)."""
        w1 = self.factor1(dtype)
        w2 = self.factor2(dtype)
        if w2.dim() > 2:
            w1 = w1.reshape(*w1.shape, *[1] * (w2.dim() - 2))
        return torch.kron(w1, w2)

    def delta_flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return _flat(self.kron(dtype)) * self.scale

    def fro_norm(self) -> float:
        """‖kron(A, B)‖ = ‖A‖·‖B‖, each factor's norm from its own factors."""
        def norm1() -> float:
            if self.w1 is not None:
                return float(self.w1.to(WORK).norm())
            return gram_fro_norm(self.w1a, self.w1b)

        def norm2() -> float:
            if self.w2 is not None:
                return float(self.w2.to(WORK).norm())
            if self.t2 is None:
                return gram_fro_norm(self.w2a, self.w2b)
            return float(self.factor2(WORK).norm())
        return abs(self.scale) * norm1() * norm2()


@dataclass
class Diff(Adapter):
    """A full weight (or bias) difference: ΔW = diff. ``alpha`` is ignored, as every loader does."""

    diff: Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.kind = "diff"

    @property
    def scale(self) -> float:
        return 1.0

    @property
    def out_features(self) -> int:
        return int(self.diff.shape[0]) if self.diff.dim() else 1

    @property
    def in_numel(self) -> int:
        return math.prod(self.diff.shape[1:]) if self.diff.dim() > 1 else 1

    def delta_flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        d = self.diff.to(dtype)
        return d.reshape(d.shape[0], -1) if d.dim() else d.reshape(1, 1)

    def delta(self, shape: tuple[int, ...] | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        d = self.diff.to(dtype)
        return d.reshape(shape) if shape is not None else d

    def fro_norm(self) -> float:
        return float(self.diff.to(WORK).norm())


@dataclass
class SetWeight(Adapter):
    """Replaces the weight outright (``set_weight``); ΔW exists only relative to a base weight."""

    value: Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.kind = "set"

    @property
    def scale(self) -> float:
        return 1.0

    @property
    def needs_base(self) -> bool:
        return True

    @property
    def out_features(self) -> int:
        return int(self.value.shape[0]) if self.value.dim() else 1

    @property
    def in_numel(self) -> int:
        return math.prod(self.value.shape[1:]) if self.value.dim() > 1 else 1

    def delta_flat(self, dtype: torch.dtype = torch.float32) -> Tensor:
        raise ValueError("set_weight has no ΔW without the base weight; use apply_to(weight)")

    def fro_norm(self) -> float:
        raise ValueError("set_weight has no ΔW norm without the base weight")

    def apply_to(self, weight: Tensor, strength: float = 1.0) -> Tensor:
        w = weight.to(WORK)
        return w + strength * (self.value.to(WORK).reshape(weight.shape) - w)
