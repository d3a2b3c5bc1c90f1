"""Frozen base weights stored in a smaller dtype (fp8 e4m3) for the length of a training call.

Every ≥2-D floating weight under a module is replaced by its ``float8_e4m3fn`` rounding; the
layers must cast weights to their input's dtype at use (ComfyUI's cast layers do, with the
run's weight wrappers applied to the upcast weight), so the model computes in the compute dtype
on weights rounded once to fp8. The original tensors wait on a backup device and come back on
exit, bit for bit, where they were. A model waiting on the backup device has each weight
converted on the device it will compute on (one full-precision weight there at a time), so the
backup device holds the originals and only the fp8 copies that stay there.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

FP8 = torch.float8_e4m3fn


def fp8_round(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t`` rounded through fp8 e4m3 (to nearest) and back to ``dtype`` (default: its own)."""
    return t.to(FP8).to(dtype or t.dtype)


def storable(p: torch.Tensor) -> bool:
    """Whether a tensor is a weight fp8 storage applies to (floating, at least 2-D, not fp8 already)."""
    return p.is_floating_point() and p.dim() >= 2 and p.element_size() > 1


@contextlib.contextmanager
def stored_in_fp8(root: nn.Module, backup: torch.device | str = "cpu",
                  where: Callable[[nn.Module], bool] | None = None,
                  place: Callable[[nn.Module], torch.device | str] | None = None) -> Iterator[int]:
    """Within the block, the frozen ≥2-D weights of ``root``'s modules (those ``where`` accepts)
    are stored in fp8 e4m3, each module's on the device ``place`` gives (default: where its weight
    is; converted there), their originals on ``backup`` and back where they were on exit; yields
    how many were converted."""
    converted: list[tuple[nn.Parameter, torch.Tensor, torch.device]] = []
    try:
        with torch.no_grad():
            for m in root.modules():
                if where is not None and not where(m):
                    continue
                for p in m._parameters.values():
                    if p is not None and storable(p) and not p.requires_grad:
                        original = p.data
                        kept = original if original.device == torch.device(backup) else original.to(backup)
                        p.data = original.to(place(m) if place is not None else original.device).to(FP8)
                        converted.append((p, kept, original.device))
                        del original
        yield len(converted)
    finally:
        with torch.no_grad():
            for p, kept, home in converted:
                p.data = kept.to(home)
