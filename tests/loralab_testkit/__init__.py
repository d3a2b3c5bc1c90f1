"""Shared test helpers: the real key layouts of ../shared/fixtures (vendored in tests/fixtures),
turned into tensor sources and real safetensors files with seeded values."""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache

import torch

from loralab.modules import group_keys
from loralab.safetensors_io import DTYPES, save_tensors
from loralab.sources import TensorSource

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
SHARED_FIXTURES = os.path.normpath(os.path.join(REPO, "..", "shared", "fixtures"))

LORA_FIXTURES = sorted(f[:-5] for f in os.listdir(os.path.join(FIXTURES, "loras")) if f.endswith(".json"))

#: fixture -> the model fixtures its keys must land in ("unet" model, then text encoders by ComfyUI name)
FIXTURE_MODELS: dict[str, dict[str, str]] = {
    "aitoolkit_flux_lora": {"unet": "flux_dev"},
    "comfyui_trainer_sd15_lora": {"unet": "sd15"},
    "diffusers_sdxl_dreambooth_lora": {"unet": "sdxl", "clip_l": "clip_l", "clip_g": "clip_g"},
    "kohya_flux_lora": {"unet": "flux_dev"},
    "kohya_flux_lora_with_te1": {"unet": "flux_dev", "clip_l": "clip_l"},
    "kohya_sd15_lora": {"unet": "sd15", "clip_l": "clip_l"},
    "kohya_sdxl_lora": {"unet": "sdxl", "clip_l": "clip_l", "clip_g": "clip_g"},
    "lycoris_sd15_locon_dora": {"unet": "sd15", "clip_l": "clip_l"},
    "lycoris_sd15_loha": {"unet": "sd15", "clip_l": "clip_l"},
    "lycoris_sd15_lokr": {"unet": "sd15", "clip_l": "clip_l"},
    "xlabs_flux_lora": {"unet": "flux_dev"},
}


@lru_cache(maxsize=None)
def fixture(kind: str, name: str) -> dict:
    """A fixture JSON (kind: loras, models, metadata)."""
    with open(os.path.join(FIXTURES, kind, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def model_shapes(name: str, component: str) -> dict[str, tuple[int, ...]]:
    """A model fixture's keys in ComfyUI's canonical names (``diffusion_model.*`` / ``clip_l.transformer.*``)."""
    d = fixture("models", name)
    if component == "unet":
        return {k: tuple(v["shape"]) for k, v in d["tensors"].items()}
    return {f"{component}.transformer.{k}": tuple(v["shape"]) for k, v in d["tensors"].items()}


class FixtureSource(TensorSource):
    """A LoRA fixture as a tensor source with its exact shapes; only scalars can be read."""

    def __init__(self, name: str) -> None:
        self.d = fixture("loras", name)
        self.metadata = dict(self.d.get("metadata", {}))
        self.path = name

    def keys(self) -> list[str]:
        return list(self.d["tensors"])

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.d["tensors"][key]["shape"])

    def dtype(self, key: str) -> str:
        return self.d["tensors"][key]["dtype"]

    def scalar(self, key: str) -> float:
        return float(self.d.get("scalar_values", {}).get(key, 1.0))

    def get(self, key: str) -> torch.Tensor:
        raise AssertionError("fixture sources hold shapes only")


#: role -> which dims of the tensor are the rank (for scaled-down materialisation)
_RANK_DIMS = {
    ("lora", "up"): (1,), ("lora", "down"): (0,), ("lora", "mid"): (0, 1),
    ("loha", "w1a"): (1,), ("loha", "w1b"): (0,), ("loha", "w2a"): (1,), ("loha", "w2b"): (0,),
    ("lokr", "w1a"): (1,), ("lokr", "w1b"): (0,), ("lokr", "w2a"): (1,), ("lokr", "w2b"): (0,),
}


def scaled_shapes(name: str, rank: int | None, at_most: bool = True) -> dict[str, tuple[int, ...]]:
    """The fixture's shapes with every rank dimension capped at ``rank`` (None keeps them), or set
    to ``rank`` when ``at_most`` is false (for full-size benchmark files at a higher rank)."""
    d = fixture("loras", name)
    shapes = {k: tuple(v["shape"]) for k, v in d["tensors"].items()}
    if rank is None:
        return shapes
    parsed = group_keys(shapes, {k: v["dtype"] for k, v in d["tensors"].items()})
    out = dict(shapes)
    for e in parsed.entries:
        for role, key in e.keys.items():
            dims = _RANK_DIMS.get((e.kind, role))
            if dims:
                s = list(out[key])
                for i in dims:
                    s[i] = min(s[i], rank) if at_most else rank
                out[key] = tuple(s)
    return out


def fixture_tensors(name: str, rank: int | None = None, seed: int = 0, dtype: torch.dtype | None = None,
                    std: float = 0.02) -> dict[str, torch.Tensor]:
    """Seeded random tensors with the fixture's keys (shapes capped at ``rank``); scalars keep their values."""
    d = fixture("loras", name)
    g = torch.Generator().manual_seed(seed)
    scalars = d.get("scalar_values", {})
    out = {}
    for key, shape in scaled_shapes(name, rank).items():
        tdt = dtype or DTYPES[d["tensors"][key]["dtype"]][1]
        if key in scalars or math.prod(shape) == 1 and len(shape) == 0:
            out[key] = torch.tensor(float(scalars.get(key, 1.0))).to(tdt)
        else:
            out[key] = (torch.randn(shape, generator=g) * std).to(tdt)
    return out


def materialize(name: str, path: str, rank: int | None = 4, seed: int = 0, dtype: torch.dtype | None = None) -> str:
    """Write a LoRA fixture as a real safetensors file (rank capped for speed; None = full size)."""
    return save_tensors(path, fixture_tensors(name, rank, seed, dtype), fixture("loras", name).get("metadata", {}))


def xlabs_keys(double: int = 19, single: int = 38) -> list[str]:
    """XLabs x-flux LoRA key names for every block of a Flux model (the fixture covers some only)."""
    keys = []
    for i in range(double):
        for p in ("qkv_lora1", "qkv_lora2", "proj_lora1", "proj_lora2"):
            keys += [f"double_blocks.{i}.processor.{p}.down.weight", f"double_blocks.{i}.processor.{p}.up.weight"]
    for i in range(single):
        for p in ("qkv_lora", "proj_lora"):
            keys += [f"single_blocks.{i}.processor.{p}.down.weight", f"single_blocks.{i}.processor.{p}.up.weight"]
    return keys
