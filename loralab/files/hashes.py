"""The hashes model sites and UIs identify a LoRA by, computed in one streamed pass.

- ``sha256``: of the whole file; ``autov2`` is its first 10 hex digits (Civitai AutoV2).
- ``addnet``: sha256 of everything after the safetensors header (bytes ``8 + N`` to the end, N
  being the header length): A1111's ``addnet_hash_safetensors`` and what kohya and LyCORIS store
  as ``sshs_model_hash`` (LyCORIS with a ``0x`` prefix). Editing the metadata leaves it
  unchanged. ``autov3`` is its first 12 hex digits (Civitai AutoV3, A1111's LoRA short hash).
- ``legacy``: sha256 of the 64 KiB at offset 1 MiB of the file, first 8 hex digits: A1111's old
  model hash, kohya's ``model_hash`` and ``sshs_legacy_hash`` (which kohya computes over the file
  as saved with ``ss_*`` metadata only, so it matches only while the header is unchanged).
- SAI's ``modelspec.hash_sha256`` is the addnet hash too, written ``0x`` + 64 hex digits ("a hash of
  all tensor content, excluding the header").

The file is read once, in large chunks into one reused buffer (hashlib releases the GIL while it
hashes them). Results are kept in memory, keyed by real path, size and modification time; nothing
is written.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

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
    stored_spec: str | None = None  # modelspec.hash_sha256, '0x' prefix removed

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

    @property
    def spec_matches(self) -> bool | None:
        """Whether ``modelspec.hash_sha256`` names the tensor data (None when it is not stored)."""
        return None if self.stored_spec is None else self.stored_spec == self.addnet

    def to_dict(self) -> dict:
        return {**asdict(self), "autov2": self.autov2, "autov3": self.autov3,
                "addnet_matches": self.addnet_matches, "legacy_matches": self.legacy_matches,
                "spec_matches": self.spec_matches}


def stored_hash(value: str | None) -> str | None:
    """A hash as a file's metadata stores it, lower case without a ``0x`` prefix (None if empty)."""
    if not value:
        return None
    v = value.strip().lower()
    return v[2:] if v.startswith("0x") else v


#: called with (bytes hashed, bytes in all) after each chunk; it may raise to stop hashing
HashProgress = Callable[[int, int], None]


class StreamHasher:
    """The hashes of a safetensors file fed to it in order, from byte ``start`` on: ``sha256`` of
    the whole file (when ``whole``: the stream must then start at 0), ``addnet`` of everything from
    ``data_start`` on, and the legacy window."""

    def __init__(self, data_start: int, start: int = 0, whole: bool = True) -> None:
        self.data_start = data_start
        self.pos = start
        self.full = hashlib.sha256() if whole else None
        self.data = hashlib.sha256()
        self.legacy = hashlib.sha256()

    def update(self, chunk: bytes | memoryview) -> None:
        """Hash the next bytes of the file."""
        pos, end = self.pos, self.pos + len(chunk)
        if self.full is not None:
            self.full.update(chunk)
        if end > self.data_start:
            self.data.update(chunk[self.data_start - pos:] if pos < self.data_start else chunk)
        lo, hi = max(pos, LEGACY_OFFSET), min(end, LEGACY_OFFSET + LEGACY_LENGTH)
        if lo < hi:
            self.legacy.update(chunk[lo - pos:hi - pos])
        self.pos = end

    def feed(self, chunks: Iterable[bytes | memoryview]) -> "StreamHasher":
        """Hash every chunk in order; returns itself."""
        for chunk in chunks:
            self.update(chunk)
        return self

    @property
    def addnet(self) -> str:
        return self.data.hexdigest()

    @property
    def legacy_hash(self) -> str:
        return self.legacy.hexdigest()[:8]


def _compute(path: str, size: int, header_len: int, metadata: dict[str, str],
             progress: HashProgress | None = None) -> Hashes:
    stream = StreamHasher(8 + header_len)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            stream.update(view[:n])
            if progress is not None:
                progress(stream.pos, size)
    if stream.pos != size:
        raise LoRALabError(f"file changed size while hashing ({size} -> {stream.pos} bytes)", path=path,
                           hint="hash it again once it is written completely")
    assert stream.full is not None
    return Hashes(stream.full.hexdigest(), stream.addnet, stream.legacy_hash,
                  stored_hash(metadata.get("sshs_model_hash")), stored_hash(metadata.get("sshs_legacy_hash")),
                  stored_hash(metadata.get("modelspec.hash_sha256")))


def file_hashes(path: str | os.PathLike, progress: HashProgress | None = None) -> Hashes:
    """All hashes of a safetensors file (one streamed read; cached by path, size and mtime);
    ``progress(bytes done, bytes in all)`` is called after each chunk and may raise to stop."""
    header = read_header(path)
    real = os.path.realpath(header.path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    result = _compute(real, st.st_size, header.header_size, header.metadata, progress)
    with _LOCK:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    return result


def addnet_hash(path: str | os.PathLike) -> str:
    """The addnet (AutoV3) hash of a safetensors file: sha256 of everything after its header."""
    return file_hashes(path).addnet
