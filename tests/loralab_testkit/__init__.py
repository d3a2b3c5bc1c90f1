"""Shared test helpers: the real key layouts of ../shared/fixtures (vendored in tests/fixtures),
turned into tensor sources and real safetensors files with seeded values."""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache

import torch

from loralab.formats.canonical import target_for, target_shape
from loralab.layouts import ModelLayout
from loralab.formats.keys import Entry, group_keys
from loralab.files.safetensors import DTYPES, save_tensors
from loralab.files.sources import TensorSource

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
    "kohya_flux_split_qkv_lora": {"unet": "flux_dev"},
    "kohya_sd15_lora": {"unet": "sd15", "clip_l": "clip_l"},
    "kohya_sdxl_lora": {"unet": "sdxl", "clip_l": "clip_l", "clip_g": "clip_g"},
    "lycoris_sd15_locon_dora": {"unet": "sd15", "clip_l": "clip_l"},
    "lycoris_sd15_loha": {"unet": "sd15", "clip_l": "clip_l"},
    "lycoris_sd15_lokr": {"unet": "sd15", "clip_l": "clip_l"},
    "xlabs_flux_lora": {"unet": "flux_dev"},
    "musubi_wan21_t2v_14b_lora": {"unet": "wan21_t2v_14b"},
    "diffusers_peft_wan21_t2v_14b_lora": {"unet": "wan21_t2v_14b"},
    "peft_default_wan21_t2v_1_3b_lora": {"unet": "wan21_t2v_1_3b"},
    "diffusion_pipe_wan21_i2v_14b_lora": {"unet": "wan21_i2v_14b"},
    "musubi_qwen_image_lora": {"unet": "qwen_image"},
    "diffusers_peft_qwen_image_lora": {"unet": "qwen_image"},
    "aitoolkit_flux2_klein_4b_lora": {"unet": "flux2_klein_4b"},
    "musubi_flux2_klein_4b_lora": {"unet": "flux2_klein_4b"},
    "diffusers_peft_flux2_dev_lora": {"unet": "flux2_dev"},
    "peft_default_flux2_klein_9b_lora": {"unet": "flux2_klein_9b"},
    "aitoolkit_z_image_lora": {"unet": "z_image"},
    "musubi_z_image_lora": {"unet": "z_image"},
    "musubi_comfy_z_image_lora": {"unet": "z_image"},
    "peft_default_z_image_lora": {"unet": "z_image"},
    "aitoolkit_chroma_lora": {"unet": "chroma"},
    "kohya_chroma_lora": {"unet": "chroma"},
    "diffusers_peft_chroma_lora": {"unet": "chroma"},
    "musubi_hunyuan_video_lora": {"unet": "hunyuan_video"},
    "diffusion_pipe_hunyuan_video_lora": {"unet": "hunyuan_video"},
    "diffusers_peft_hunyuan_video_lora": {"unet": "hunyuan_video"},
    "diffusion_pipe_lumina2_lora": {"unet": "lumina2"},
    "kohya_lumina2_lora": {"unet": "lumina2"},
    "diffusers_peft_lumina2_lora": {"unet": "lumina2"},
    "diffusion_pipe_hidream_lora": {"unet": "hidream"},
    "diffusers_peft_hidream_lora": {"unet": "hidream"},
    "simpletuner_lycoris_hidream_lokr": {"unet": "hidream"},
    "ltx_video_trainer_ltxv_lora": {"unet": "ltxv"},
    "ltx_video_trainer_comfy_ltxv_lora": {"unet": "ltxv"},
    "ltx2_trainer_ltx2_lora": {"unet": "ltx2"},
    "kohya_hunyuan_image21_lora": {"unet": "hunyuan_image21"},
    "musubi_hunyuan_video15_lora": {"unet": "hunyuan_video15"},
    "diffusers_peft_hunyuan_video15_lora": {"unet": "hunyuan_video15"},
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


class FixtureSubset(FixtureSource):
    """The keys of a LoRA fixture that a predicate keeps (a LoRA trained on part of the model)."""

    def __init__(self, name: str, keep) -> None:
        super().__init__(name)
        self._keys = [k for k in super().keys() if keep(k)]

    def keys(self) -> list[str]:
        return self._keys


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


def _fitted_shape(entry: Entry, role: str, fixture_shape: tuple[int, ...], target: tuple[int, ...],
                  rank: int) -> tuple[int, ...]:
    """The shape of one tensor of ``entry`` rebuilt for a target weight of shape ``target``
    (rows of a split already taken), keeping the fixture tensor's dimensionality."""
    out, rest = target[0], target[1:]
    fan_in = math.prod(rest) if rest else 1
    kernel = tuple(rest[1:])
    r = min(rank, entry.rank() or rank)
    if role in ("diff", "set", "w_norm", "diff_b", "b_norm"):
        return target
    if role == "dora_scale":
        if fixture_shape[0] == 1:  # magnitude per input column
            return (1, rest[0], *[1] * (len(fixture_shape) - 2))
        return (out, *[1] * (len(fixture_shape) - 1))
    if entry.kind == "lora":
        if role == "up":
            return (out, r, *fixture_shape[2:])
        if role == "down":
            return (r, rest[0], *kernel) if len(fixture_shape) > 2 else (r, fan_in)
        if role == "mid":
            return (r, r, *kernel)
    if entry.kind == "loha":
        if role in ("w1a", "w2a"):
            return (out, r)
        if role in ("w1b", "w2b"):
            return (r, fan_in)
    if entry.kind == "lokr":
        s1 = entry.shapes.get("w1") or (entry.shapes["w1a"][0], entry.shapes["w1b"][1])
        a, b = math.gcd(out, s1[0]), math.gcd(fan_in, s1[1])
        if role == "w1":
            return (a, b)
        if role == "w1a":
            return (a, r)
        if role == "w1b":
            return (r, b)
        if role == "w2":
            return (out // a, fan_in // b)
        if role == "w2a":
            return (out // a, r)
        if role == "w2b":
            return (r, fan_in // b)
    raise ValueError(f"{entry.kind} {role} {fixture_shape}: no rule to fit this tensor to {target}")


def fit_fixture_to_layout(name: str, layout: ModelLayout, rank: int = 4, seed: int = 0,
                          dtype: torch.dtype | None = None, std: float = 0.02) -> dict[str, torch.Tensor]:
    """A LoRA fixture rebuilt for the model of ``layout`` (a tiny test model): every fixture module
    that resolves in ``layout`` keeps its own key names and naming style, its tensors are shaped for
    that model's weight (rank capped at ``rank``), seeded random values; scalars keep their values.
    Modules the model does not have are left out."""
    d = fixture("loras", name)
    infos = d["tensors"]
    scalars = d.get("scalar_values", {})
    parsed = group_keys({k: tuple(v["shape"]) for k, v in infos.items()}, {k: v["dtype"] for k, v in infos.items()})
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for e in parsed.entries:
        target, _ = target_for(e, layout)
        if target is None:
            continue
        tshape = target_shape(target, layout)
        for role, key in e.keys.items():
            tdt = dtype or DTYPES[infos[key]["dtype"]][1]
            if role == "alpha":
                out[key] = torch.tensor(float(scalars.get(key, 1.0))).to(tdt)
                continue
            shape = _fitted_shape(e, role, tuple(infos[key]["shape"]), tshape, rank)
            values = torch.randn(shape, generator=g) * std
            if role == "dora_scale":
                values = values.abs() + 1.0
            out[key] = values.to(tdt)
    return out


def materialize_fitted(name: str, path: str, layout: ModelLayout, rank: int = 4, seed: int = 0,
                       dtype: torch.dtype | None = None) -> str:
    """Write :func:`fit_fixture_to_layout`'s tensors with the fixture's metadata as a real safetensors file."""
    return save_tensors(path, fit_fixture_to_layout(name, layout, rank, seed, dtype),
                        fixture("loras", name).get("metadata", {}))


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


def sparse_model_file(path: str, parts: list[tuple[str, str]]) -> str:
    """A model safetensors file with the real header of model fixtures: each part is (model fixture,
    the prefix its keys carry in the file, which replaces ``diffusion_model.``: ``"model.diffusion_model."``
    in a checkpoint, ``""`` in a diffusion-model file; a text encoder's: ``"conditioner.embedders.0.transformer."``).
    Every tensor's bytes are zeros in a sparse data section that uses no disk: the header is
    exactly a released file's, so only readers of the header may open it."""
    header: dict[str, dict] = {}
    offset = 0
    for name, prefix in parts:
        for key, info in fixture("models", name)["tensors"].items():
            bare = key[len("diffusion_model."):] if key.startswith("diffusion_model.") else key
            size = math.prod(info["shape"]) * DTYPES[info["dtype"]][0]
            header[prefix + bare] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + size]}
            offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)
    return path
