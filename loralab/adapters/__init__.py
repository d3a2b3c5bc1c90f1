"""Adapter algorithms, one file each: its tensor roles and key suffixes, its shape rules, the
:class:`~loralab.adapters.base.Adapter` it builds from a file's tensors (and writes back in
kohya/LyCORIS names), and its ΔW formula, which the trainer's modules call too.

``ALGORITHMS`` is the registry, by entry kind, in the order entries of one module are formed.
"""
from __future__ import annotations

from . import diff, glora, lokr, lora, loha, oft
from .base import Adapter, Algorithm, Claim, gram_fro_norm
from .diff import Diff, SetWeight
from .loha import LoHa
from .lokr import LoKr
from .lora import LoRA

ALGORITHMS: dict[str, Algorithm] = {a.kind: a for a in (lora.ALGORITHM, loha.ALGORITHM, lokr.ALGORITHM, diff.DIFF,
                                                        diff.SET, oft.ALGORITHM, glora.ALGORITHM)}

__all__ = ["ALGORITHMS", "Adapter", "Algorithm", "Claim", "Diff", "LoHa", "LoKr", "LoRA", "SetWeight",
           "gram_fro_norm"]
