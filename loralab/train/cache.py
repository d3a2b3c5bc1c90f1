"""The on-disk cache of encoded training data (latents, text conditioning).

Entries are safetensors files named by a content key: a SHA-256 over everything the encoding
depends on (the image bytes or caption text, the encoder's identity, the bucket and crop). A
changed image, caption, VAE, text encoder or bucket therefore misses the cache instead of
reusing a stale entry. Writes are atomic; an unreadable entry is treated as missing and
rewritten.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, Mapping

import torch

from ..errors import FileExistsRefusedError, LoRALabError
from ..files.safetensors import load_tensors, read_header, save_tensors

#: bumped when what an entry holds changes meaning
CACHE_VERSION = "1"
#: elements of each tensor that an identity fingerprint reads (a strided sample plus the tail)
FINGERPRINT_SAMPLES = 1024


def cache_key(*parts: object) -> str:
    """SHA-256 hex of the parts (joined unambiguously)."""
    h = hashlib.sha256(f"loralab-cache-v{CACHE_VERSION}".encode())
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def fingerprint(tensors: Iterable[tuple[str, torch.Tensor]], *extra: object) -> str:
    """A cheap identity of a set of weights: names, shapes, dtypes and a strided sample of every
    tensor's values (no full pass over multi-gigabyte encoders)."""
    h = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        flat = t.detach().reshape(-1)
        n = flat.numel()
        step = max(1, n // FINGERPRINT_SAMPLES)
        sample = torch.cat([flat[::step][:FINGERPRINT_SAMPLES], flat[-16:]]) if n else flat
        raw = sample.to("cpu").contiguous()
        if raw.dtype not in (torch.float32, torch.float64):
            raw = raw.to(torch.float64)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(raw.numpy().tobytes())
    for e in extra:
        h.update(f"|{e}".encode())
    return h.hexdigest()


class TensorCache:
    """A folder of safetensors entries keyed by :func:`cache_key`."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.path.abspath(os.fspath(folder))

    def path(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], key + ".safetensors")

    def has(self, key: str) -> bool:
        """Whether a readable entry exists (its header parses and its data is all there)."""
        try:
            read_header(self.path(key))
        except (LoRALabError, OSError):
            return False
        return True

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, or None when it is absent or unreadable."""
        path = self.path(key)
        if not os.path.isfile(path):
            return None
        try:
            return load_tensors(path)
        except (LoRALabError, OSError):
            return None

    def put(self, key: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
        """Store an entry atomically (an unreadable old entry is replaced; a good one is kept)."""
        overwrite = os.path.exists(self.path(key)) and not self.has(key)
        try:
            save_tensors(self.path(key), {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                         metadata, overwrite=overwrite)
        except FileExistsRefusedError:
            pass  # another run wrote the same entry first; both hold the same content
