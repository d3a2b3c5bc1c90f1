"""A base model's weights by canonical key (``diffusion_model.*``, ``clip_l.transformer.*``), read
lazily from a checkpoint or diffusion-model safetensors file, or from tensors in memory.

File keys are recognised in the layouts checkpoints use: ``model.diffusion_model.*`` (full
checkpoints), ``diffusion_model.*`` and bare keys (diffusion-model files such as
``flux1-dev.safetensors``), ``cond_stage_model.transformer.*`` (SD1.x text encoder),
``conditioner.embedders.0.transformer.*`` (SDXL's CLIP-L), ``text_encoders.<name>.transformer.*``
(ComfyUI) and the canonical names themselves. Text encoders stored in the OpenCLIP layout (SD2's
CLIP-H, SDXL's CLIP-G) are not mapped and are reported in ``unused``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..errors import ArchMismatchError
from ..files.safetensors import SafetensorsFile
from ..layouts import ModelLayout, layout_for
from ..layouts.archs import ARCHS

#: file key prefix -> canonical prefix, tried in order
PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.diffusion_model.", "diffusion_model."),
    ("cond_stage_model.transformer.", "clip_l.transformer."),
    ("conditioner.embedders.0.transformer.", "clip_l.transformer."),
    ("text_encoders.", ""),
)


def canonical_key(key: str, layout: ModelLayout) -> str | None:
    """The canonical key a model file's key stands for in ``layout``, or None."""
    for prefix, repl in PREFIXES:
        if key.startswith(prefix):
            c = repl + key[len(prefix):]
            return c if c in layout.shapes else None
    if key in layout.shapes:
        return key
    c = "diffusion_model." + key
    return c if c in layout.shapes else None


@dataclass(frozen=True)
class ArchFit:
    """How a model file's keys fit one architecture's released layout."""

    arch: str
    fitting: int  # keys that name a weight of the layout and have its shape
    named: int  # keys that name a weight of the layout, whatever their shape


def _fit(shapes: Mapping[str, tuple[int, ...]], arch_id: str) -> ArchFit:
    layout = layout_for(arch_id)
    fitting = named = 0
    for k, s in shapes.items():
        c = canonical_key(k, layout)
        if c is not None:
            named += 1
            fitting += layout.shapes[c] == tuple(s)
    return ArchFit(arch_id, fitting, named)


def arch_fits(shapes: Mapping[str, tuple[int, ...]]) -> list[ArchFit]:
    """How the keys fit every known architecture, best first (most keys of the right name and
    shape, then most of the right name)."""
    return sorted((_fit(shapes, a) for a in ARCHS), key=lambda f: (-f.fitting, -f.named))


def model_arch(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The released model's architecture a model file's keys (by name and shape) belong to: the one
    most keys fit, None where no key fits any, or where most keys that name its weights have other
    sizes (a model of a size LoRA Lab has no layout for)."""
    best = arch_fits(shapes)[0]
    return best.arch if best.fitting and best.fitting * 2 >= best.named else None


def canonical_shapes(shapes: Mapping[str, tuple[int, ...]], layout: ModelLayout) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of ``layout`` a model file holds, by canonical key (its keys that
    name no weight of the layout left out)."""
    out: dict[str, tuple[int, ...]] = {}
    for k, s in shapes.items():
        c = canonical_key(k, layout)
        if c is not None:
            out.setdefault(c, tuple(s))
    return out


def guess_layout(shapes: Mapping[str, tuple[int, ...]], label: str | None = None) -> ModelLayout:
    """The released model's layout most of these keys fit (by name and shape); ``label`` names the
    model in the error when none fits."""
    best = arch_fits(shapes)[0]
    if best.fitting == 0:
        known = ", ".join(layout_for(a).arch.name for a in ARCHS)
        raise ArchMismatchError(f"no weight fits a known base model ({known})", path=label,
                                hint="give the architecture explicitly")
    return layout_for(best.arch)


class ModelWeights:
    """Weights by canonical key; tensors are read one at a time, on demand."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], get: Callable[[str], torch.Tensor],
                 layout: ModelLayout | None = None, label: str = "<model in memory>",
                 close: Callable[[], None] | None = None) -> None:
        self.layout = layout or guess_layout(shapes, label)
        self.label = label
        self._get = get
        self._close = close
        self._file_key: dict[str, str] = {}
        self.unused: list[str] = []  # file keys that name no weight of the layout
        self.mismatched: list[str] = []  # canonical keys whose shape differs from the layout's
        for k, s in shapes.items():
            c = canonical_key(k, self.layout)
            if c is None:
                self.unused.append(k)
            elif tuple(s) != self.layout.shapes[c]:
                self.mismatched.append(c)
            else:
                self._file_key.setdefault(c, k)

    @classmethod
    def open(cls, path: str | os.PathLike, layout: ModelLayout | None = None) -> "ModelWeights":
        """A checkpoint or diffusion-model safetensors file (header only until :meth:`get`)."""
        f = SafetensorsFile(path)
        shapes = {k: info.shape for k, info in f.header.tensors.items()}
        try:
            return cls(shapes, f.get, layout, f.path, f.close)
        except BaseException:
            f.close()
            raise

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, torch.Tensor], layout: ModelLayout | None = None,
                        label: str = "<model in memory>") -> "ModelWeights":
        return cls({k: tuple(v.shape) for k, v in tensors.items()}, tensors.__getitem__, layout, label)

    def keys(self) -> list[str]:
        """Canonical keys present, in the layout's order."""
        return [k for k in self.layout.shapes if k in self._file_key]

    def __contains__(self, key: object) -> bool:
        return key in self._file_key

    def get(self, key: str) -> torch.Tensor:
        """The weight stored under a canonical key."""
        return self._get(self._file_key[key])

    def file_key(self, key: str) -> str:
        """The name a canonical key has in the file or state dict."""
        return self._file_key[key]

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> "ModelWeights":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
