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

from loralab.modules import group_keys  # noqa: E402
from loralab.safetensors_io import DTYPES, SafetensorsWriter  # noqa: E402
from loralab_testkit import fixture  # noqa: E402

#: (kind, role) -> the dims of that tensor that are the rank
RANK_DIMS = {("lora", "up"): (1,), ("lora", "down"): (0,), ("lora", "mid"): (0, 1)}


def write_lora(name: str, path: str, rank: int, seed: int = 0, std: float = 0.02) -> str:
    """Write fixture ``name`` with every LoRA rank set to ``rank`` (metadata dim/alpha updated)."""
    d = fixture("loras", name)
    shapes = {k: tuple(v["shape"]) for k, v in d["tensors"].items()}
    parsed = group_keys(shapes, {k: v["dtype"] for k, v in d["tensors"].items()})
    for e in parsed.entries:
        for role, key in e.keys.items():
            dims = RANK_DIMS.get((e.kind, role))
            if dims:
                s = list(shapes[key])
                for i in dims:
                    s[i] = rank
                shapes[key] = tuple(s)
    scalars = d.get("scalar_values", {})
    g = torch.Generator().manual_seed(seed)
    metadata = dict(d.get("metadata", {}))
    if "ss_network_dim" in metadata:
        metadata["ss_network_dim"] = str(rank)
        metadata["ss_network_alpha"] = f"{rank / 2:.1f}"
    with SafetensorsWriter(path, overwrite=True) as w:
        for key, shape in shapes.items():
            dtype = DTYPES[d["tensors"][key]["dtype"]][1]
            if key in scalars:
                w.add(key, torch.tensor(rank / 2 if key.endswith(".alpha") else scalars[key]).to(dtype))
            else:
                w.add(key, (torch.randn(math.prod(shape), generator=g) * std).reshape(shape).to(dtype))
        return w.finish(metadata)
