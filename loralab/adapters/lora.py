"""LoRA and LoCon (and their Tucker form): ΔW = (alpha / rank) · up · (mid ·) down.

Every spelling producers use for the up/down/mid factors is declared here: kohya
(``lora_up``/``lora_down``), PEFT (``lora_B``/``lora_A``), diffusers (``lora.up``,
``lora_linear_layer``, attention processors' ``to_q_lora``) and XLabs (``up``/``down``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .base import ALPHA_SUFFIX, Adapter, Algorithm, Claim, Shapes, as_dtype, flat, gram_fro_norm

if TYPE_CHECKING:
    import torch

    from .base import Tensor

ROLES = ("up", "down", "mid")


def merged(weight_flat: Tensor, up: Tensor, down: Tensor, scale: float) -> Tensor:
    """W + scale·up·down for a flattened weight, in one fused op (no ΔW temporary)."""
    import torch
    return torch.addmm(weight_flat, up, down, alpha=scale)


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
            return flat(down)
        # A[m, (i, k...)] = Σ_n mid[m, n, k...] · down[n, i]
        import torch
        mid = self.mid.to(dtype)
        d2 = down.reshape(down.shape[0], down.shape[1])
        return torch.einsum("mn...,ni->mi...", mid, d2).reshape(mid.shape[0], -1)

    def low_rank(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        dtype = as_dtype(dtype)
        return flat(self.up.to(dtype)) * self.scale, self._down_flat(dtype)

    def fro_norm(self) -> float:
        """‖scale·up·down‖ from the stored factors (no scaled or widened copies)."""
        import torch
        down = flat(self.down) if self.mid is None else self._down_flat(torch.float64)
        return abs(self.scale) * gram_fro_norm(self.up, down)

    def delta_flat(self, dtype: torch.dtype | None = None) -> Tensor:
        b, a = self.low_rank(dtype)
        return b @ a

    def file_tensors(self, weight_shape: tuple[int, ...]) -> dict[str, Tensor]:
        """kohya/A1111 names; a conv LoRA is stored as down [r, in, kh, kw] and up [out, r, 1, 1]."""
        up, down = self.up, self.down
        if len(weight_shape) == 4 and self.mid is None:
            r = down.shape[0]
            down = down.reshape(r, *weight_shape[1:])
            up = up.reshape(up.shape[0], r, 1, 1)
        import torch
        out = {ALGORITHM.suffix("up"): up, ALGORITHM.suffix("down"): down}
        if self.mid is not None:
            out[ALGORITHM.suffix("mid")] = self.mid
        out[ALPHA_SUFFIX] = torch.tensor(float(self.alpha if self.alpha is not None else self.rank))
        return out


class LoRAAlgorithm(Algorithm):
    kind = "lora"
    suffixes = {
        ".lora_up.weight": ("up", "kohya"),
        ".lora_down.weight": ("down", "kohya"),
        ".lora_mid.weight": ("mid", "kohya"),
        ".lora_B.weight": ("up", "peft"),
        ".lora_A.weight": ("down", "peft"),
        ".lora_B.default.weight": ("up", "peft"),
        ".lora_A.default.weight": ("down", "peft"),
        ".lora.up.weight": ("up", "diffusers"),
        ".lora.down.weight": ("down", "diffusers"),
        "_lora.up.weight": ("up", "diffusers_attn_processor"),
        "_lora.down.weight": ("down", "diffusers_attn_processor"),
        ".lora_linear_layer.up.weight": ("up", "diffusers"),
        ".lora_linear_layer.down.weight": ("down", "diffusers"),
        ".up.weight": ("up", "xlabs"),
        ".down.weight": ("down", "xlabs"),
    }

    def claims(self, roles: Mapping[str, str], styles: set[str]) -> list[Claim]:
        if "up" not in roles and "down" not in roles:
            return []
        style = roles.get("up", roles.get("down", ""))
        missing = None if "up" in roles and "down" in roles else ("down" if "up" in roles else "up")
        return [Claim("lora", "weight", ROLES, style, f"{missing} matrix missing" if missing else None)]

    def problem(self, shapes: Shapes) -> str | None:
        up, down = shapes["up"], shapes["down"]
        mid = shapes.get("mid")
        if len(up) < 2 or len(down) < 2 or (mid is not None and len(mid) < 2):
            return f"up {list(up)} / down {list(down)}" + (f" / mid {list(mid)}" if mid else "") + " are not matrices"
        rank = down[0]
        if rank == 0:
            return "rank 0 (empty down matrix)"
        if mid is not None:
            if math.prod(up[1:]) != mid[0] or mid[1] != rank or math.prod(down[2:]) != 1:
                return f"up {list(up)}, mid {list(mid)}, down {list(down)} do not chain"
        elif math.prod(up[1:]) != rank:
            return f"up {list(up)} and down {list(down)} disagree on the rank"
        return None

    def rank(self, shapes: Shapes) -> int | None:
        shape = shapes.get("down")
        return shape[0] if shape else None

    def delta_shape(self, shapes: Shapes) -> tuple[int, int] | None:
        up, down = shapes["up"], shapes["down"]
        if "mid" in shapes:
            return up[0], down[1] * math.prod(shapes["mid"][2:])
        return up[0], math.prod(down[1:])

    def name(self, shapes: Shapes) -> str:
        if "mid" in shapes:
            return "LoRA (Tucker)"
        if len(shapes.get("down", ())) == 4 and math.prod(shapes["down"][2:]) > 1:
            return "LoCon"
        return "LoRA"

    def build(self, tensors: Mapping[str, Tensor], alpha: float | None) -> LoRA:
        return LoRA(up=tensors["up"], down=tensors["down"], mid=tensors.get("mid"), alpha=alpha,
                    dora_scale=tensors.get("dora_scale"))


ALGORITHM = LoRAAlgorithm()
