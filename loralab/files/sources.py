"""Where a LoRA's tensors come from: a safetensors file (lazy) or tensors already in memory."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping

from .safetensors import SafetensorsFile

if TYPE_CHECKING:
    import torch


class TensorSource:
    """Read access to named tensors plus ``__metadata__``; shapes and dtypes without reading data."""

    path: str | None = None
    metadata: dict[str, str]

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, key: str) -> str:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def scalar(self, key: str) -> float:
        import torch
        return float(self.get(key).reshape(-1)[0].to(torch.float64))

    def close(self) -> None:
        pass

    @property
    def label(self) -> str:
        return self.path or "<tensors in memory>"


class FileSource(TensorSource):
    """Tensors of a safetensors file, read on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.file = SafetensorsFile(path)
        self.path = self.file.path
        self.metadata = self.file.metadata

    def keys(self) -> list[str]:
        return self.file.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self.file.info(key).shape

    def dtype(self, key: str) -> str:
        return self.file.info(key).dtype

    def get(self, key: str) -> torch.Tensor:
        return self.file.get(key)

    def scalar(self, key: str) -> float:
        return self.file.scalar(key)

    def close(self) -> None:
        self.file.close()


class DictSource(TensorSource):
    """Tensors already in memory (a state dict), with optional metadata."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                 label: str | None = None) -> None:
        self.tensors = dict(tensors)
        self.metadata = dict(metadata or {})
        self.path = label

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def dtype(self, key: str) -> str:
        from .safetensors import TORCH_TO_NAME
        return TORCH_TO_NAME.get(self.tensors[key].dtype, str(self.tensors[key].dtype))

    def get(self, key: str) -> torch.Tensor:
        return self.tensors[key]
