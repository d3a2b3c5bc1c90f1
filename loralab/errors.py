"""Error types of the LoRA Lab engine.

Every error names the file (and key, where there is one), the problem, and what to do about it.
"""
from __future__ import annotations

import os


class LoRALabError(Exception):
    """Base class of every error the engine raises on purpose."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None,
                 hint: str | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.key = key
        self.problem = message
        self.hint = hint
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}: ")
        if key is not None:
            parts.append(f"key {key!r}: ")
        parts.append(message)
        if hint:
            parts.append(f" ({hint})")
        super().__init__("".join(parts))


class SafetensorsError(LoRALabError):
    """The file is not a valid safetensors file (truncated, corrupt, hostile or unsupported)."""


class PickleRefusedError(LoRALabError):
    """The file is a pickled checkpoint; LoRA Lab never unpickles."""


class FileExistsRefusedError(LoRALabError):
    """A write would overwrite an existing file and overwriting was not asked for."""


class UnsafeNameError(LoRALabError):
    """A file name escapes its folder or is otherwise not acceptable."""


class LoraFormatError(LoRALabError):
    """The tensors do not form a LoRA the engine understands (bad shapes, missing partners)."""


class BaseWeightsNeededError(LoraFormatError):
    """An adapter (OFT, BOFT, GLoRA) whose update depends on the base weights, asked for a ΔW of its own."""


class ArchMismatchError(LoRALabError):
    """The LoRA is for a different base model architecture than the one it is used with."""


class SpecError(LoRALabError):
    """A block-weight or other user specification could not be parsed."""


class WriteError(LoRALabError):
    """A file could not be written (disk full, no permission...); the destination is unchanged."""


class DatasetError(LoRALabError):
    """A training dataset could not be read or has nothing usable in it."""


class TrainingError(LoRALabError):
    """Training settings that cannot work together, or a model the trainer cannot train."""


class CheckpointError(LoRALabError):
    """A training state file is corrupt, incomplete, or does not belong to the run resuming from it."""
