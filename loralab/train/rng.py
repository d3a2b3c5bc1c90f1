"""Random-number state a training run owns, and its round trip through tensors + JSON.

A run draws from its own ``torch.Generator`` (noise, timesteps, augmentation choices) and its
own ``random.Random`` (data order). The process-wide torch, NumPy, Python and CUDA states are
also captured per run and swapped in only while the run trains, so a run's steps do not depend
on what else ran in the process, and nothing else depends on the run.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import CheckpointError


def _cuda_ready() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture_global() -> dict[str, Any]:
    """The process-wide RNG states (torch CPU, CUDA when in use, NumPy, Python)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if _cuda_ready():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global(state: dict[str, Any]) -> None:
    """Install states captured by :func:`capture_global` (CUDA states only where CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and _cuda_ready() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seeded_global(seed: int) -> dict[str, Any]:
    """Global RNG states as seeding every generator with ``seed`` would leave them (the process's
    own states are untouched)."""
    saved = capture_global()
    try:
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        random.seed(seed)
        return capture_global()
    finally:
        restore_global(saved)


@contextlib.contextmanager
def global_rng_of(holder: dict[str, Any]) -> Iterator[None]:
    """Swap the run's global RNG states in for the duration of the block; on exit store the
    advanced states back into ``holder`` and restore the process's own."""
    saved = capture_global()
    restore_global(holder)
    try:
        yield
    finally:
        holder.clear()
        holder.update(capture_global())
        restore_global(saved)


def global_to_saved(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states as tensors (``rng.*``) and JSON."""
    name, keys, pos, has_gauss, gauss = state["numpy"]
    tensors = {"rng.torch": state["torch"], "rng.numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    for i, s in enumerate(state.get("cuda", [])):
        tensors[f"rng.cuda.{i}"] = s
    version, internal, gauss_next = state["python"]
    meta = {"numpy": [name, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def global_from_saved(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """The inverse of :func:`global_to_saved`; CheckpointError when something is missing or malformed."""
    try:
        name, pos, has_gauss, gauss = meta["numpy"]
        keys = tensors["rng.numpy"].numpy().astype(np.uint32)
        version, internal, gauss_next = meta["python"]
        state: dict[str, Any] = {"torch": tensors["rng.torch"].to(torch.uint8),
                                 "numpy": (name, keys, int(pos), int(has_gauss), float(gauss)),
                                 "python": (int(version), tuple(int(v) for v in internal), gauss_next)}
        cuda = [tensors[k].to(torch.uint8) for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda:
            state["cuda"] = cuda
        random.Random().setstate(state["python"])
        np.random.RandomState().set_state(state["numpy"])
        torch.Generator().set_state(state["torch"])
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"random-number state is missing or malformed ({type(e).__name__}: {e})",
                              path=path) from None
    return state
