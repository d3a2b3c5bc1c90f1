"""What the operations share: progress callbacks, per-module reports, the result of a merge,
resize or extraction, and the precision of dense per-module work."""
from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch

from ..formats.keys import Entry
from ..formats.writer import save_with_hashes
from .lowrank import WORK, RankRule

#: dense per-module work (full diffs, DoRA, sparsifying merges) is done in float64 up to this many
#: entries (128 MiB), in float32 above (a Flux linear1 in float64 would take 0.5 GB)
DENSE_FLOAT64_MAX = 1 << 24


def dense_dtype(numel: int) -> torch.dtype:
    """Precision of a dense per-module matrix of this size."""
    return WORK if numel <= DENSE_FLOAT64_MAX else torch.float32


#: called after each module: (modules done, modules in all)
Progress = Callable[[int, int], None]


#: the form of a concat module whose inputs' weight·alpha/rank differ by more than a power of two:
#: all but one had theirs multiplied into their up factors, which the output dtype rounds
SCALED_FACTORS = "low-rank, scaled factors"


@dataclass
class ModuleReport:
    """What happened to one model weight."""

    key: str
    inputs: int  # inputs that write it
    rank_in: int | None  # width of the stacked factors (None: a dense term was involved)
    rank: int | None  # rank written (0: cancelled out, not written; None: written as a full diff)
    kept: float  # kept Frobenius energy, Σ_{i≤k}σᵢ² / ‖ΔW‖_F²
    form: str  # "low-rank", "dense", "diff" or SCALED_FACTORS


@dataclass
class MergeResult:
    """A merged LoRA in kohya format, with its metadata and a per-module account."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    modules: list[ModuleReport]
    skipped: list[str]
    arch: str
    method: str
    rule: RankRule | None
    path: str | None = None

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Write the file atomically, its own hashes in its metadata (see
        :func:`~loralab.formats.writer.save_with_hashes`); never overwrites unless asked."""
        self.path = save_with_hashes(path, {k: self.tensors[k] for k in sorted(self.tensors)}, self.metadata,
                                     overwrite=overwrite)
        return self.path

    def report(self) -> str:
        """Per-module kept energy summary, rank histogram, and what was not merged."""
        written = [m for m in self.modules if m.rank != 0]
        how = self.method if self.rule is None or self.method == "concat" else f"{self.method}, {self.rule.describe()}"
        lines = [f"{len(written)} modules written ({how})"]
        ranked = [m for m in written if m.rank is not None]
        if ranked:
            kept = [m.kept for m in ranked]
            lines.append(f"kept energy (Frobenius): min {min(kept):.6f}, median {statistics.median(kept):.6f}, "
                         f"mean {statistics.fmean(kept):.6f}")
            worst = sorted((m for m in ranked if m.kept < 1 - 1e-6), key=lambda m: m.kept)[:5]
            lines += [f"  lowest: {m.key} rank {m.rank} kept {m.kept:.6f}" for m in worst]
            hist = Counter(m.rank for m in ranked)
            lines.append("rank histogram: " + ", ".join(f"{r} ×{n}" for r, n in sorted(hist.items(), reverse=True)))
        scaled = [m for m in written if m.form == SCALED_FACTORS]
        if scaled:
            lines.append(f"{len(scaled)} module(s) stack inputs whose weight·alpha/rank differ by more than a power "
                         "of two: one alpha cannot hold them all, so the others are multiplied into their up factors "
                         "and rounded to the output dtype (exact with --dtype fp32)")
        diffs = [m for m in written if m.rank is None]
        if diffs:
            lines.append(f"full differences (exact, no rank): {len(diffs)}")
        zero = [m.key for m in self.modules if m.rank == 0]
        if zero:
            lines.append(f"cancelled out (zero, not written): {len(zero)}: " + ", ".join(zero[:5])
                         + (" ..." if len(zero) > 5 else ""))
        if self.skipped:
            lines.append(f"not included: {len(self.skipped)}")
            lines += [f"  {s}" for s in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def non_finite(entry: Entry) -> str:
    """The message for a module whose values (or alpha) are NaN or infinite."""
    alpha = entry.alpha is not None and not math.isfinite(entry.alpha)
    return f"{'alpha' if alpha else 'the tensors'} of this module hold NaN or infinite values"
