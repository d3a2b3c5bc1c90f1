"""LoKr (LyCORIS): ΔW = scale · kron(w1, w2); either factor may be stored decomposed (a·b, or a
Tucker form for w2). The scale is alpha / rank of the decomposed factor, 1 when neither factor is
decomposed (full-dimension LoKr: alpha is ignored, as every loader does)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .base import ALPHA_SUFFIX, Adapter, Algorithm, Claim, Shapes, as_dtype, flat, gram_fro_norm

if TYPE_CHECKING:
    import torch

    from .base import Tensor

ROLES = ("w1", "w2", "w1a", "w1b", "w2a", "w2b", "t2")


def delta(w1: Tensor, w2: Tensor, scale: float) -> Tensor:
    """scale · kron(w1, w2) in w2's dimensionality (conv kernels kept; the trainer's formula too)."""
    import torch
    if w2.dim() > 2:
        w1 = w1.reshape(*w1.shape, *[1] * (w2.dim() - 2))
    return torch.kron(w1, w2) * scale


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

    def factor1(self, dtype: torch.dtype | None = None) -> Tensor:
        dtype = as_dtype(dtype)
        return self.w1.to(dtype) if self.w1 is not None else self.w1a.to(dtype) @ self.w1b.to(dtype)

    def factor2(self, dtype: torch.dtype | None = None) -> Tensor:
        dtype = as_dtype(dtype)
        if self.w2 is not None:
            return self.w2.to(dtype)
        if self.t2 is not None:
            import torch
            return torch.einsum("ij...,jr,ip->pr...", self.t2.to(dtype), flat(self.w2b.to(dtype)),
                                flat(self.w2a.to(dtype)))
        return self.w2a.to(dtype) @ flat(self.w2b.to(dtype))

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

    def kron(self, dtype: torch.dtype | None = None) -> Tensor:
        """kron(w1, w2) unscaled, in w2's dimensionality (conv kernels kept)."""
        return delta(self.factor1(dtype), self.factor2(dtype), 1.0)

    def delta_flat(self, dtype: torch.dtype | None = None) -> Tensor:
        return flat(delta(self.factor1(dtype), self.factor2(dtype), self.scale))

    def fro_norm(self) -> float:
        """‖kron(A, B)‖ = ‖A‖·‖B‖, each factor's norm from its own factors."""
        import torch
        f64 = torch.float64

        def norm1() -> float:
            if self.w1 is not None:
                return float(self.w1.to(f64).norm())
            return gram_fro_norm(self.w1a, self.w1b)

        def norm2() -> float:
            if self.w2 is not None:
                return float(self.w2.to(f64).norm())
            if self.t2 is None:
                return gram_fro_norm(self.w2a, self.w2b)
            return float(self.factor2(f64).norm())
        return abs(self.scale) * norm1() * norm2()

    def file_tensors(self, weight_shape: tuple[int, ...]) -> dict[str, Tensor]:
        values = (self.w1, self.w2, self.w1a, self.w1b, self.w2a, self.w2b, self.t2)
        out = {ALGORITHM.suffix(role): t for role, t in zip(ROLES, values) if t is not None}
        if self.alpha is not None:
            import torch
            out[ALPHA_SUFFIX] = torch.tensor(float(self.alpha))
        return out


def full_dimension(shapes: Shapes) -> bool:
    """Whether both Kronecker factors are stored whole (the scale is then 1)."""
    return "w1" in shapes and "w2" in shapes


class LoKrAlgorithm(Algorithm):
    kind = "lokr"
    suffixes = {".lokr_w1": ("w1", "lokr"), ".lokr_w2": ("w2", "lokr"), ".lokr_w1_a": ("w1a", "lokr"),
                ".lokr_w1_b": ("w1b", "lokr"), ".lokr_w2_a": ("w2a", "lokr"), ".lokr_w2_b": ("w2b", "lokr"),
                ".lokr_t2": ("t2", "lokr")}

    def claims(self, roles: Mapping[str, str], styles: set[str]) -> list[Claim]:
        if "lokr" not in styles:
            return []
        ok1 = "w1" in roles or ("w1a" in roles and "w1b" in roles)
        ok2 = "w2" in roles or ("w2a" in roles and "w2b" in roles)
        return [Claim("lokr", "weight", ROLES, "lokr", None if ok1 and ok2 else "incomplete Kronecker factors")]

    def problem(self, s: Shapes) -> str | None:
        """Shapes that cannot form ΔW = kron(w1, w2)."""
        if "w1" in s:
            if len(s["w1"]) != 2:
                return f"lokr_w1 {list(s['w1'])} is not a matrix"
        elif len(s["w1a"]) != 2 or len(s["w1b"]) != 2 or s["w1a"][1] != s["w1b"][0]:
            return f"w1a {list(s['w1a'])} and w1b {list(s['w1b'])} do not multiply"
        if "w2" in s:
            if len(s["w2"]) < 2:
                return f"lokr_w2 {list(s['w2'])} is not a matrix"
        elif "t2" in s:
            a, b, t = s["w2a"], s["w2b"], s["t2"]
            if len(a) != 2 or len(b) != 2 or len(t) < 2 or (a[0], b[0]) != t[:2]:
                return f"w2a {list(a)}, w2b {list(b)}, t2 {list(t)} do not chain"
        elif len(s["w2a"]) != 2 or len(s["w2b"]) < 2 or s["w2a"][1] != s["w2b"][0]:
            return f"w2a {list(s['w2a'])} and w2b {list(s['w2b'])} do not multiply"
        return None

    def rank(self, s: Shapes) -> int | None:
        if "w2" not in s and s.get("w2b"):
            return s["w2b"][0]
        if "w1" not in s and s.get("w1b"):
            return s["w1b"][0]
        return None

    def delta_shape(self, s: Shapes) -> tuple[int, int] | None:
        s1 = s["w1"] if "w1" in s else (s["w1a"][0], s["w1b"][1])
        if "w2" in s:
            s2 = s["w2"]
        elif "t2" in s:
            s2 = (s["w2a"][1], s["w2b"][1], *s["t2"][2:])
        else:
            s2 = (s["w2a"][0], *s["w2b"][1:])
        return s1[0] * s2[0], s1[1] * math.prod(s2[1:])

    def name(self, shapes: Shapes) -> str:
        return "LoKr (full-dimension)" if full_dimension(shapes) else "LoKr"

    def build(self, t: Mapping[str, Tensor], alpha: float | None) -> LoKr:
        return LoKr(w1=t.get("w1"), w1a=t.get("w1a"), w1b=t.get("w1b"), w2=t.get("w2"), w2a=t.get("w2a"),
                    w2b=t.get("w2b"), t2=t.get("t2"), alpha=alpha, dora_scale=t.get("dora_scale"))


ALGORITHM = LoKrAlgorithm()
