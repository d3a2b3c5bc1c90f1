"""The hashes model sites and UIs identify a LoRA by, computed in one streamed pass.

- ``sha256``: of the whole file; ``autov2`` is its first 10 hex digits (Civitai AutoV2).
- ``addnet``: sha256 of everything after the safetensors header (bytes ``8 + N`` to the end, N
  being the header length): A1111's ``addnet_hash_safetensors`` and what kohya and LyCORIS store
  as ``sshs_model_hash`` (LyCORIS with a ``0x`` prefix). Editing the metadata leaves it
  unchanged. ``autov3`` is its first 12 hex digits (Civitai AutoV3, A1111's LoRA short hash).
- ``legacy``: sha256 of the 64 KiB at offset 1 MiB of the file, first 8 hex digits: A1111's old
  model hash, kohya's ``model_hash`` and ``sshs_legacy_hash`` (which kohya computes over the file
  as saved with ``ss_*`` metadata only, so it matches only while the header is unchanged).

Results are kept in memory, keyed by real path, size and modification time; nothing is written.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass

from ..errors import LoRALabError
from .safetensors import read_header

CHUNK = 8 << 20
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000

CACHE_SIZE = 256
_CACHE: dict[tuple[str, int, int], "Hashes"] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Hashes:
    """A file's hashes, and the ``sshs_*`` hashes its metadata claims."""

    sha256: str
    addnet: str
    legacy: str
    stored_addnet: str | None = None  # sshs_model_hash, '0x' prefix removed
    stored_legacy: str | None = None  # sshs_legacy_hash

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    @property
    def autov3(self) -> str:
        return self.addnet[:12]

    @property
    def addnet_matches(self) -> bool | None:
        """Whether the data equals what the trainer hashed (None when it stored no hash)."""
        return None if self.stored_addnet is None else self.stored_addnet == self.addnet

    @property
    def legacy_matches(self) -> bool | None:
        return None if self.stored_legacy is None else self.stored_legacy == self.legacy

    def to_dict(self) -> dict:
        return {**asdict(self), "autov2": self.autov2, "autov3": self.autov3,
                "addnet_matches": self.addnet_matches, "legacy_matches": self.legacy_matches}


def _stored(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip().lower()
    return v[2:] if v.startswith("0x") else v


def _compute(path: str, size: int, header_len: int, metadata: dict[str, str]) -> Hashes:
    full = hashlib.sha256()
    data = hashlib.sha256()
    legacy = hashlib.sha256()
    data_start = 8 + header_len
    pos = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            end = pos + len(chunk)
            full.update(chunk)
            if end > data_start:
                data.update(chunk[max(0, data_start - pos):] if pos < data_start else chunk)
            lo, hi = max(pos, LEGACY_OFFSET), min(end, LEGACY_OFFSET + LEGACY_LENGTH)
            if lo < hi:
                legacy.update(chunk[lo - pos:hi - pos])
            pos = end
    if pos != size:
        raise LoRALabError(f"file changed size while hashing ({size} -> {pos} bytes)", path=path,
                           hint="hash it again once it is written completely")
    return Hashes(full.hexdigest(), data.hexdigest(), legacy.hexdigest()[:8],
                  _stored(metadata.get("sshs_model_hash")), _stored(metadata.get("sshs_legacy_hash")))


def file_hashes(path: str | os.PathLike) -> Hashes:
    """All hashes of a safetensors file (one streamed read; cached by path, size and mtime)."""
    header = read_header(path)
    real = os.path.realpath(header.path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    result = _compute(real, st.st_size, header.header_size, header.metadata)
    with _LOCK:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    return result



def addnet_hash(path: str | os.PathLike) -> str:
    """The addnet (AutoV3) hash of a safetensors file: sha256 of everything after its header."""
    return file_hashes(path).addnet
