"""The LoRAs an operation takes: each file with its weight and block-weight spec, hashed in the
background while the operation runs."""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from ..blocks.spec import BlockWeights, parse_block_weights
from ..errors import ArchMismatchError, SpecError
from ..files.hashes import addnet_hash
from ..layouts import ModelLayout
from ..layouts.archs import arch
from ..lora import Lora, MappedEntry


@functools.lru_cache(maxsize=1)
def _hasher() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="loralab-hash")


def lora_title(lora: Lora) -> str:
    """The name a LoRA calls itself (``modelspec.title``, ``ss_output_name``), else its file name."""
    meta = lora.metadata
    for key in ("modelspec.title", "ss_output_name"):
        v = meta.get(key, "").strip()
        if v and v != "None":
            return v
    return os.path.splitext(os.path.basename(lora.path or "lora"))[0]


@dataclass
class MergeInput:
    """One LoRA in a merge, with its weight and block-weight spec."""

    lora: Lora
    weight: float = 1.0
    block_spec: str = ""
    title: str = ""
    file_hash: str | None = None  # addnet hash (full hex) of the file; AutoV3 is its first 12 digits
    split_qkv: str | None = None  # a kohya split_qkv file: "as loaded" (1/parts of its trained strength) or "as trained"
    _pending: Future | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight):
            raise SpecError(f"weight {self.weight} is not a finite number", path=self.lora.path)
        self.title = self.title or lora_title(self.lora)
        if self.lora.split_qkv():
            self.split_qkv = "as loaded"

    def split_qkv_as_trained(self) -> int:
        """Give the fused modules of a kohya ``split_qkv`` file the strength they were trained at (see
        :mod:`loralab.formats.split_qkv`); returns how many modules changed (0 for other files)."""
        parts = self.lora.split_qkv(verify=True)
        if parts:
            self.split_qkv = "as trained"
        return self.lora.as_trained(parts)

    @classmethod
    def open(cls, path: str | os.PathLike, weight: float = 1.0, block_spec: str = "",
             layout: ModelLayout | None = None) -> "MergeInput":
        """Open a LoRA file (header and alphas only); its data is hashed in the background while
        the merge runs on the main thread."""
        inp = cls(Lora.open(path, layout), weight, block_spec)
        inp._pending = _hasher().submit(addnet_hash, path)
        return inp

    @property
    def addnet(self) -> str | None:
        """The file's addnet hash (waits for the background hashing)."""
        if self._pending is not None:
            self.file_hash, self._pending = self._pending.result(), None
        return self.file_hash

    def blocks(self, arch_id: str, layout: ModelLayout) -> BlockWeights:
        try:
            return parse_block_weights(self.block_spec, arch_id, layout=layout)
        except SpecError as e:
            raise SpecError(f"block weights of {self.title}: {e.problem}", key=e.key, hint=e.hint) from None

    def recipe(self) -> dict:
        h = self.addnet
        return {"title": self.title, "file": os.path.basename(self.lora.path) if self.lora.path else None,
                "autov3": h[:12] if h else None, "addnet_hash": h, "weight": self.weight,
                "block_weights": self.block_spec or None, **({"split_qkv": self.split_qkv} if self.split_qkv else {})}


def by_target(inputs: Sequence[MergeInput]) -> tuple[dict[str, list[tuple[int, MappedEntry]]], list[str]]:
    """The inputs' mapped entries grouped by the model weight they write (with each input's index),
    and a line for everything that writes none: unmapped modules with their reason, unrecognised
    keys and keys that belong to no complete module."""
    grouped: dict[str, list[tuple[int, MappedEntry]]] = {}
    skipped: list[str] = []
    for i, inp in enumerate(inputs):
        for m in inp.lora.items:
            if m.mapped:
                grouped.setdefault(m.target.key, []).append((i, m))
            else:
                skipped.append(f"{inp.title}: {m.entry.module} ({m.reason})")
        skipped += [f"{inp.title}: key {k} (not a LoRA key this tool knows)" for k in inp.lora.unrecognized]
        skipped += [f"{inp.title}: key {k} (belongs to no complete module)" for k in inp.lora.orphans]
    return grouped, skipped


def common_variant(inputs: Sequence[MergeInput]) -> str | None:
    """The release of the base model (:class:`~loralab.layouts.archs.Variant` label) the inputs name
    between them; None where none names one or they name different ones."""
    named = {inp.lora.detection.arch_variant for inp in inputs} - {None}
    return named.pop() if len(named) == 1 else None


def common_layout(inputs: Sequence[MergeInput], purpose: str) -> ModelLayout:
    """The one layout every input maps onto: of one base model, the largest of theirs (a Wan VACE LoRA's holds
    a T2V LoRA's); :class:`SpecError` for no input, :class:`ArchMismatchError` naming the files where a base
    model cannot be told or two inputs are for different models. ``purpose`` says what needs one base model
    ("merge", "a stack report compares")."""
    if not inputs:
        raise SpecError("no LoRA given: give at least one")
    for inp in inputs:
        if inp.lora.layout is None:
            raise ArchMismatchError(f"cannot tell which base model {inp.title} is for", path=inp.lora.path,
                                    hint="give the architecture (--arch) or connect the model it is for")

    def arch_of(inp: MergeInput) -> str:
        return inp.lora.detection.arch or inp.lora.layout.arch.id
    first = inputs[0]
    for inp in inputs[1:]:
        if arch_of(inp) != arch_of(first) or inp.lora.layout.arch.id != first.lora.layout.arch.id:
            raise ArchMismatchError(
                f"{inp.title} ({inp.lora.path or 'in memory'}) is for {arch(arch_of(inp)).name}, {first.title} "
                f"({first.lora.path or 'in memory'}) for {arch(arch_of(first)).name}: {purpose} LoRAs of one base "
                "model only", path=inp.lora.path, hint="leave out the LoRAs made for another model")
    return max((inp.lora.layout for inp in inputs), key=lambda layout: len(layout.shapes))
