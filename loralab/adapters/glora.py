"""GLoRA (LyCORIS): W' = W + W·A + B with low-rank A = a1·a2 and B = b1·b2. The update depends on
the base weight, so only the loader applies it (through ComfyUI's own adapters); these are the
shape rules of the two LyCORIS layouts as ComfyUI tells them apart."""
from __future__ import annotations

import math
from typing import Mapping

from .base import Algorithm, Claim, Shapes

ROLES = ("a1", "a2", "b1", "b2")


def _form(s: Shapes, shape: tuple[int, ...] | None = None) -> tuple[str, int] | None:
    """("new" | "old", rank) of GLoRA factors as ComfyUI tells the two LyCORIS layouts apart:
    new a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in...]; old a1 [r, in], a2 [in, r], b1 [r, in...],
    b2 [out, r]. Factors fitting both are old on a square weight of a2's row count."""
    a1, a2, b1, b2 = (s[r] for r in ROLES)
    if min(len(a1), len(a2), len(b1), len(b2)) < 2:
        return None
    old = b2[1] == b1[0] == a1[0] == a2[1]
    new = b2[0] == b1[1] == a1[1] == a2[0]
    if new and not (old and shape is not None and len(shape) >= 2 and a2[0] == shape[0] == shape[1]):
        return "new", a2[0]
    return ("old", a1[0]) if old else None


class GLoRAAlgorithm(Algorithm):
    kind = "glora"
    suffixes = {".a1.weight": ("a1", "glora"), ".a2.weight": ("a2", "glora"), ".b1.weight": ("b1", "glora"),
                ".b2.weight": ("b2", "glora")}
    needs_base = True

    def claims(self, roles: Mapping[str, str], styles: set[str]) -> list[Claim]:
        return [Claim("glora", "weight", ROLES, "glora")] if "glora" in styles else []

    def problem(self, s: Shapes) -> str | None:
        missing = [r for r in ROLES if r not in s]
        if missing:
            return f"missing {', '.join(missing)}"
        if _form(s) is None:
            return "a1 {}, a2 {}, b1 {}, b2 {} do not chain".format(*(list(s[r]) for r in ROLES))
        return None

    def rank(self, s: Shapes) -> int | None:
        form = _form(s) if all(r in s for r in ROLES) else None
        return form[1] if form else None

    def name(self, shapes: Shapes) -> str:
        return "GLoRA"

    def fit_problem(self, s: Shapes, shape: tuple[int, ...]) -> str | None:
        form = _form(s, shape)
        a1, a2, b1, b2 = ((s[r][0], math.prod(s[r][1:])) for r in ROLES)
        if len(shape) < 2:
            return f"GLoRA needs a matrix or kernel, not a weight of {list(shape)}"
        rows, cols = shape[0], math.prod(shape[1:])
        if form is not None and form[0] == "new":  # W·a1·a2 (a1 on the input channels) + b1·b2
            fits = shape[1] == a1[0] == a2[1] and a1[1] == a2[0] and b1 == (rows, b2[0]) and b2[1] == cols
        else:  # W·a2·a1 (on the flattened input) + b2·b1
            fits = a2[0] == a1[1] == b1[1] == cols and a2[1] == a1[0] and b2 == (rows, b1[0])
        if not fits:
            return "a1 {}, a2 {}, b1 {}, b2 {} do not fit a weight of {}".format(
                *(list(s[r]) for r in ROLES), list(shape))
        return None


ALGORITHM = GLoRAAlgorithm()
