"""Gradient checkpointing of a model's blocks for the length of a training call: activations
inside each block are recomputed in the backward pass instead of stored. A block works on copies
of its floating-point tensor inputs, so blocks that update their input in place (ComfyUI's Flux
blocks do, also on inputs without grad) recompute from the input as it was. With ``offload`` the
block inputs checkpointing keeps for backward wait on the CPU (``save_on_cpu``)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.autograd.graph import save_on_cpu
from torch.utils.checkpoint import checkpoint

_CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def checkpoint_blocks(root: nn.Module) -> list[nn.Module]:
    """The outermost modules under ``root`` that are not plain containers (ModuleList, Sequential,
    ModuleDict and their subclasses are opened up)."""
    out: list[nn.Module] = []
    for child in root.children():
        if isinstance(child, _CONTAINERS):
            out += checkpoint_blocks(child)
        else:
            out.append(child)
    return out


def _copy(value):
    return value.clone() if torch.is_tensor(value) and value.is_floating_point() else value


@contextlib.contextmanager
def gradient_checkpointing(root: nn.Module, enabled: bool = True, offload: bool = False) -> Iterator[int]:
    """Checkpoint every block of ``root`` inside the block (their kept inputs on the CPU with
    ``offload``); yields how many were wrapped. The original ``forward`` methods are restored on
    exit."""
    if not enabled:
        yield 0
        return
    blocks = checkpoint_blocks(root)
    own = [block.__dict__.get("forward") for block in blocks]  # a forward set on the instance by others
    for block in blocks:
        original = block.forward

        def on_copies(*args, _original=original, **kwargs):
            return _original(*[_copy(a) for a in args], **{k: _copy(v) for k, v in kwargs.items()})

        def wrapped(*args, _original=original, _on_copies=on_copies, **kwargs):
            if not torch.is_grad_enabled():
                return _original(*args, **kwargs)
            if offload:
                with save_on_cpu(pin_memory=torch.cuda.is_available()):
                    return checkpoint(_on_copies, *args, use_reentrant=False, **kwargs)
            return checkpoint(_on_copies, *args, use_reentrant=False, **kwargs)

        block.forward = wrapped
    try:
        yield len(blocks)
    finally:
        for block, previous in zip(blocks, own):
            if previous is None:
                del block.forward  # the class's forward shows through again
            else:
                block.forward = previous
