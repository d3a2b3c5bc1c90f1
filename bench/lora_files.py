"""Full-size LoRA files for the benchmarks: a fixture's real key layout (tests/fixtures) at any
rank, seeded random values, streamed to disk (memory bounded by the largest tensor)."""
from __future__ import annotations

import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from loralab.files.safetensors import DTYPES, SafetensorsWriter  # noqa: E402
from loralab_testkit import fixture, scaled_shapes  # noqa: E402


def write_lora(name: str, path: str, rank: int, seed: int = 0, std: float = 0.02) -> str:
    """Write fixture ``name`` with every LoRA rank set to ``rank``, alpha rank/2 (metadata to match)."""
    d = fixture("loras", name)
    g = torch.Generator().manual_seed(seed)
    metadata = dict(d.get("metadata", {}))
    if "ss_network_dim" in metadata:
        metadata["ss_network_dim"] = str(rank)
        metadata["ss_network_alpha"] = f"{rank / 2:.1f}"
    with SafetensorsWriter(path, overwrite=True) as w:
        for key, shape in scaled_shapes(name, rank, at_most=False).items():
            dtype = DTYPES[d["tensors"][key]["dtype"]][1]
            if key.endswith(".alpha"):
                w.add(key, torch.tensor(rank / 2).to(dtype))
            else:
                w.add(key, (torch.randn(math.prod(shape), generator=g) * std).reshape(shape).to(dtype))
        return w.finish(metadata)
