"""File hashes that identify a LoRA on model sites and in UIs."""
from __future__ import annotations

import hashlib
import os

from .safetensors_io import read_header

CHUNK = 8 << 20


def addnet_hash(path: str | os.PathLike) -> str:
    """sha256 (hex) of a safetensors file's bytes after its header (8-byte length + JSON header):
    A1111's ``addnet_hash_safetensors``; its first 12 digits are Civitai's AutoV3. Streamed."""
    header = read_header(path)
    h = hashlib.sha256()
    with open(header.path, "rb") as f:
        f.seek(header.data_start)
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
