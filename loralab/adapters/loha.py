"""LoHa (LyCORIS): ΔW = (alpha / rank) · (w1a·w1b) ⊙ (w2a·w2b), or its Tucker (CP) form with t1/t2."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .base import ALPHA_SUFFIX, Adapter, Algorithm, Claim, Shapes, as_dtype, flat

if TYPE_CHECKING:
    import torch

    from .base import Tensor

ROLES = ("w1a", "w1b", "w2a", "w2b", "t1", "t2")
_NEEDED = ("w1a", "w1b", "w2a", "w2b")


def _half(a: Tensor, b: Tensor, t: Tensor | None) -> Tensor:
    if t is None:
        return flat(a) @ flat(b)
    import torch
    # t [i, j, k...], b [j, in], a [i, out] -> [out, in, k...]
    return torch.einsum("ij...,jr,ip->pr...", t, flat(b), flat(a))


def delta(w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor, scale: float, t1: Tensor | None = None,
          t2: Tensor | None = None) -> Tensor:
    """scale · (w1a·w1b) ⊙ (w2a·w2b) as an [out, in·k...] matrix (the trainer's formula too)."""
    return flat(_half(w1a, w1b, t1) * _half(w2a, w2b, t2)) * scale


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

    @property
    def out_features(self) -> int:
        return int(self.w1a.shape[1] if self.t1 is not None else self.w1a.shape[0])

    @property
    def in_numel(self) -> int:
        if self.t1 is not None:
            return int(self.w1b.shape[1]) * math.prod(self.t1.shape[2:])
        return math.prod(self.w1b.shape[1:])

    def delta_flat(self, dtype: torch.dtype | None = None) -> Tensor:
        dtype = as_dtype(dtype)
        t1 = None if self.t1 is None else self.t1.to(dtype)
        t2 = None if self.t2 is None else self.t2.to(dtype)
        return delta(self.w1a.to(dtype), self.w1b.to(dtype), self.w2a.to(dtype), self.w2b.to(dtype), self.scale,
                     t1, t2)

    def low_rank(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor] | None:
        """Exact rank r1·r2 form: (A1•A2)(B1⊙B2) with face-splitting and Khatri-Rao products."""
        if self.t1 is not None:
            return None
        dtype = as_dtype(dtype)
        a1, b1 = flat(self.w1a.to(dtype)), flat(self.w1b.to(dtype))
        a2, b2 = flat(self.w2a.to(dtype)), flat(self.w2b.to(dtype))
        p = (a1[:, :, None] * a2[:, None, :]).reshape(a1.shape[0], -1)
        q = (b1[:, None, :] * b2[None, :, :]).reshape(-1, b1.shape[1])
        return p * self.scale, q

    def file_tensors(self, weight_shape: tuple[int, ...]) -> dict[str, Tensor]:
        import torch
        out = {ALGORITHM.suffix(role): t for role, t in zip(ROLES, (self.w1a, self.w1b, self.w2a, self.w2b, self.t1,
                                                                     self.t2)) if t is not None}
        out[ALPHA_SUFFIX] = torch.tensor(float(self.alpha if self.alpha is not None else self.rank))
        return out


class LoHaAlgorithm(Algorithm):
    kind = "loha"
    suffixes = {".hada_w1_a": ("w1a", "loha"), ".hada_w1_b": ("w1b", "loha"), ".hada_w2_a": ("w2a", "loha"),
                ".hada_w2_b": ("w2b", "loha"), ".hada_t1": ("t1", "loha"), ".hada_t2": ("t2", "loha")}

    def claims(self, roles: Mapping[str, str], styles: set[str]) -> list[Claim]:
        if "loha" not in styles:
            return []
        missing = [r for r in _NEEDED if r not in roles]
        return [Claim("loha", "weight", ROLES, "loha", f"missing {', '.join(missing)}" if missing else None)]

    def problem(self, s: Shapes) -> str | None:
        """Shapes that cannot form ΔW = (w1a·w1b) ⊙ (w2a·w2b) (or its Tucker form)."""
        if ("t1" in s) != ("t2" in s):
            return "hada_t1 and hada_t2 must come together"
        halves = []
        for a, b, t in (("w1a", "w1b", "t1"), ("w2a", "w2b", "t2")):
            sa, sb, st = s[a], s[b], s.get(t)
            if st is not None:
                if len(sa) != 2 or len(sb) != 2 or len(st) < 2 or (sa[0], sb[0]) != st[:2]:
                    return f"{a} {list(sa)}, {b} {list(sb)}, {t} {list(st)} do not chain"
                halves.append((sa[1], sb[1], *st[2:]))
            else:
                if len(sa) < 2 or len(sb) < 2 or math.prod(sa[1:]) != sb[0]:
                    return f"{a} {list(sa)} and {b} {list(sb)} do not multiply"
                halves.append((sa[0], math.prod(sb[1:])))
        if halves[0] != halves[1]:
            return f"the two Hadamard factors have different sizes {list(halves[0])} and {list(halves[1])}"
        return None

    def rank(self, shapes: Shapes) -> int | None:
        shape = shapes.get("w1b")
        return shape[0] if shape else None

    def delta_shape(self, s: Shapes) -> tuple[int, int] | None:
        if "t1" in s:
            return s["w1a"][1], s["w1b"][1] * math.prod(s["t1"][2:])
        return s["w1a"][0], math.prod(s["w1b"][1:])

    def name(self, shapes: Shapes) -> str:
        return "LoHa"

    def build(self, t: Mapping[str, Tensor], alpha: float | None) -> LoHa:
        return LoHa(w1a=t["w1a"], w1b=t["w1b"], w2a=t["w2a"], w2b=t["w2b"], t1=t.get("t1"), t2=t.get("t2"),
                    alpha=alpha, dora_scale=t.get("dora_scale"))


ALGORITHM = LoHaAlgorithm()
