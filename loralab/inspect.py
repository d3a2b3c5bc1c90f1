"""Inspect a LoRA: what it is for, what it changes, from the header and alpha scalars alone."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from .lora import Lora


def _distribution(values: list) -> str:
    """``16 ×304`` or ``16 ×200, 32 ×104``."""
    counts = Counter(values)
    return ", ".join(f"{v:g} ×{n}" if isinstance(v, float) else f"{v} ×{n}" for v, n in
                     sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


@dataclass
class Summary:
    """The header-level facts about a LoRA file."""

    path: str
    file_size: int
    tensor_count: int
    dtypes: dict[str, int]
    format: str
    format_name: str
    arch: str | None
    arch_name: str
    algorithms: dict[str, int]
    ranks: str
    alphas: str
    components: dict[str, int]
    mapped: int
    unmapped: list[dict[str, str]] = field(default_factory=list)
    unrecognized_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        lines = [
            f"{os.path.basename(self.path)}  ({self.file_size / 2**20:.1f} MiB, {self.tensor_count} tensors, "
            + ", ".join(f"{k} ×{v}" for k, v in self.dtypes.items()) + ")",
            f"format: {self.format_name}",
            f"base model: {self.arch_name}",
            "algorithm: " + ", ".join(f"{k} ×{v}" for k, v in self.algorithms.items()),
            f"rank: {self.ranks or '-'}",
            f"alpha: {self.alphas or '-'}",
            "modules: " + ", ".join(f"{k} {v}" for k, v in self.components.items())
            + f"; {self.mapped} mapped, {len(self.unmapped)} not mapped",
        ]
        lines += [f"not mapped: {u['module']} ({u['reason']})" for u in self.unmapped[:20]]
        if len(self.unmapped) > 20:
            lines.append(f"... and {len(self.unmapped) - 20} more not mapped")
        lines += [f"unrecognised key: {k}" for k in self.unrecognized_keys[:20]]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def summarize(path: str | os.PathLike) -> Summary:
    """Summarise a LoRA file from its header (and 0-d alpha tensors); no weight data is read."""
    with Lora.open(path) as lora:
        header = lora.source.file.header
        dtypes = Counter(t.dtype for t in header.tensors.values())
        det = lora.detection
        ranks = [e.rank() for e in lora.entries if e.rank() is not None]
        alphas = [e.alpha for e in lora.entries if e.alpha is not None]
        return Summary(
            path=os.fspath(path), file_size=header.file_size, tensor_count=len(header.tensors),
            dtypes=dict(dtypes), format=det.format, format_name=det.format_name, arch=det.arch,
            arch_name=det.arch_name, algorithms=dict(Counter(m.algorithm(lora.layout) for m in lora.items)),
            ranks=_distribution(ranks), alphas=_distribution(alphas),
            components=dict(Counter(m.component for m in lora.mapped())),
            mapped=sum(1 for _ in lora.mapped()),
            unmapped=[{"module": m.entry.module, "param": m.entry.param, "reason": m.reason or ""}
                      for m in lora.unmapped()],
            unrecognized_keys=list(lora.unrecognized) + list(lora.orphans),
            warnings=list(det.warnings),
        )
