"""Autograd through models written for inference.

ComfyUI's Flux blocks and text encoders (CLIP, T5) add residuals in place (``x += ...``,
``txt += ...``) into the very tensor a LayerNorm just normalised; the LayerNorm saved that tensor
for its backward, so autograd refuses the in-place change. Giving every norm layer (torch's
LayerNorm and RMSNorm, and modules named ``*LayerNorm`` / ``*RMSNorm`` such as T5's) its own copy
of a grad-carrying input leaves the saved tensor intact and the arithmetic unchanged (one
activation copy per norm).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def _copy_input(module: nn.Module, args: tuple) -> tuple | None:
    if args and torch.is_tensor(args[0]) and args[0].requires_grad:
        return (args[0].clone(), *args[1:])
    return None


def is_norm(module: nn.Module) -> bool:
    """Whether a module is a LayerNorm or RMSNorm (torch's, or a model's own of that name)."""
    if isinstance(module, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))):
        return True
    return type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


@contextlib.contextmanager
def copy_norm_inputs(root: nn.Module) -> Iterator[int]:
    """Within the block, every norm layer under ``root`` works on a copy of its input; yields how
    many there are."""
    handles = [m.register_forward_pre_hook(_copy_input) for m in root.modules() if is_norm(m)]
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()
