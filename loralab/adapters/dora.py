"""DoRA (weight-decomposed LoRA): a ``dora_scale`` magnitude beside any LoRA-family adapter. The
patched weight is W + s·ΔW normalised per output row or input column (by the magnitude's shape)
to that magnitude; strength m interpolates the normalising factor as m·(f − 1) + 1."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

SUFFIX = ".dora_scale"
ROLE = "dora_scale"


def column_norms(w: Tensor) -> Tensor:
    """‖W[:, j, ...]‖ for every input column j, shaped [1, in, 1, ...] (the trainer's magnitude layout)."""
    cols = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1, keepdim=True)
    return cols.reshape(w.shape[1], *[1] * (w.dim() - 1)).transpose(0, 1)


def _norms(m: Tensor, magnitude: Tensor) -> Tensor:
    if magnitude.shape[0] == m.shape[0] and magnitude.numel() == m.shape[0]:
        return m.reshape(m.shape[0], -1).norm(dim=1).reshape(m.shape[0], *[1] * (m.dim() - 1))
    return column_norms(m)


def normalize(merged: Tensor, magnitude: Tensor, strength: float = 1.0) -> Tensor:
    """``merged`` = W + s·ΔW scaled per row or column to ``magnitude`` (LyCORIS's DoRA; the
    trainer's too)."""
    import torch
    norm = _norms(merged, magnitude)
    factor = magnitude.to(merged.dtype).reshape(norm.shape) / (norm + torch.finfo(merged.dtype).eps)
    if strength != 1.0:
        factor = strength * (factor - 1) + 1
    return merged * factor


def fits(magnitude: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether a magnitude vector has one value per output row or per input column of ``shape``."""
    n = math.prod(magnitude)
    return len(shape) >= 2 and ((magnitude[:1] == shape[:1] and n == shape[0]) or n == shape[1])
