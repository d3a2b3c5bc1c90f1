"""Which base models a LoRA may be applied to, and the picker's search: pure functions of arch ids
and words, shared by the index, the ``/loralab/library`` route and the command line.

A LoRA *fits* a model architecture when LoRA Lab's loader would apply it there rather than refuse
it (:func:`loralab.ops.coverage.refusal`): its own architecture, one whose weights its tensors
fit at least as well, and the other Wan sizes' I2V/T2V twin. A file that is no LoRA, or whose
weights fit no known model, fits none.
"""
from __future__ import annotations

from typing import Iterable

from ..formats.detect import Detection
from ..layouts.archs import ARCHS
from ..ops.coverage import refusal


def fitting_archs(detection: Detection) -> list[str]:
    """The arch ids (in :data:`~loralab.layouts.archs.ARCHS` order) whose models the loader would
    apply this LoRA to."""
    if detection.not_lora is not None or detection.arch is None:
        return []
    return [a for a in ARCHS if refusal(detection, a) is None]


def compatible(fits: Iterable[str], model_arch: str | None) -> bool:
    """Whether a LoRA that fits ``fits`` belongs in a picker for a model of ``model_arch`` (None:
    any model, so every file does)."""
    return model_arch is None or model_arch in fits


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def matches(words: Iterable[str], query: str | None) -> bool:
    """Whether every whitespace-separated term of ``query`` occurs (case-insensitively) in one of
    ``words`` (a file's name, title, trigger words...); an empty query matches everything."""
    terms = _norm(query or "").split()
    if not terms:
        return True
    texts = [_norm(w) for w in words if w]
    return all(any(t in text for text in texts) for t in terms)
