"""Whole-tensor updates: a weight or bias difference (``diff``, ``diff_b``, ``w_norm``, ``b_norm``,
PEFT's ``lora_B.bias``) added as is, and ``set_weight``, which replaces the weight outright."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .base import Adapter, Algorithm, Claim, Shapes, as_dtype

if TYPE_CHECKING:
    import torch

    from .base import Tensor


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

    def delta_flat(self, dtype: torch.dtype | None = None) -> Tensor:
        d = self.diff.to(as_dtype(dtype))
        return d.reshape(d.shape[0], -1) if d.dim() else d.reshape(1, 1)

    def delta(self, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None) -> Tensor:
        d = self.diff.to(as_dtype(dtype))
        return d.reshape(shape) if shape is not None else d

    def fro_norm(self) -> float:
        import torch
        return float(self.diff.to(torch.float64).norm())

    def file_tensors(self, weight_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {DIFF.suffix("diff"): self.diff}


@dataclass
class SetWeight(Adapter):
    """Replaces the weight outright (``set_weight``); ΔW exists only relative to a base weight."""

    value: Tensor = None  # type: ignore[assignment]
    has_delta = False

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

    def delta_flat(self, dtype: torch.dtype | None = None) -> Tensor:
        raise ValueError("set_weight has no ΔW without the base weight; use apply_to(weight)")

    def fro_norm(self) -> float:
        raise ValueError("set_weight has no ΔW norm without the base weight")

    def apply_to(self, weight: Tensor, strength: float = 1.0) -> Tensor:
        import torch
        w = weight.to(torch.float64)
        return w + strength * (self.value.to(torch.float64).reshape(weight.shape) - w)

    def file_tensors(self, weight_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {SET.suffix("set"): self.value}


class _WholeTensor(Algorithm):
    shares_alpha = False
    weighted = False
    whole_tensor = True
    #: role -> the parameter it updates
    params: Mapping[str, str] = {}

    def claims(self, roles: Mapping[str, str], styles: set[str]) -> list[Claim]:
        return [Claim(self.kind, param, (role,), "full") for role, param in self.params.items() if role in roles]

    def delta_shape(self, shapes: Shapes) -> tuple[int, int] | None:
        t = next(iter(shapes.values()))
        return (t[0] if t else 1), math.prod(t[1:])


class DiffAlgorithm(_WholeTensor):
    kind = "diff"
    suffixes = {".diff": ("diff", "full"), ".diff_b": ("diff_b", "full"), ".w_norm": ("w_norm", "norm"),
                ".b_norm": ("b_norm", "norm"), ".lora_B.bias": ("diff_b", "peft")}
    params = {"diff": "weight", "w_norm": "weight", "diff_b": "bias", "b_norm": "bias"}

    def name(self, shapes: Shapes) -> str:
        return "Full diff"

    def build(self, t: Mapping[str, Tensor], alpha: float | None) -> Diff:
        (value,) = (v for r, v in t.items() if r != "dora_scale")
        return Diff(diff=value)


class SetAlgorithm(_WholeTensor):
    kind = "set"
    suffixes = {".set_weight": ("set", "full")}
    params = {"set": "weight"}

    def name(self, shapes: Shapes) -> str:
        return "Set weight"

    def build(self, t: Mapping[str, Tensor], alpha: float | None) -> SetWeight:
        return SetWeight(value=t["set"])


DIFF = DiffAlgorithm()
SET = SetAlgorithm()
