"""Block-weight specifications: parse what users write into a weight per absolute block id.

Accepted forms (case-insensitive):

* **Vectors** as LoRA Block Weight users know them, by arch: SD1.x/SD2 17 or 26 values, SDXL 12
  or 20, Flux 57 (D00–D18, S00–S37) or LBW's 61 (CLIP, T5, IN, D00–D18, S00–S37, OUT). Each value
  is a number or a token: ``R`` (random in [0, 1)), ``U`` (random in [-0.5, 1.5)), ``X``, ``A``,
  ``B`` (parameters). Blocks a short vector does not list keep weight 1, as LBW does.
* **Readable specs** that need no counting: ``IN04-IN08=0.5, M00=1, OUT=0, D0-6=1, S=0.3,
  default=1``. Left side: ``default``, a block id (``IN04``, ``D3``, ``S10``, ``BASE``, ``CLIP``,
  ``T5``, Flux ``IN``/``OUT``, Wan/Qwen-Image ``B12``, Lumina 2 ``L03``, ``OTHER``), a range of one family
  (``IN04-IN08``, ``D0-6``, ``B10-19``) or a family (``IN``, ``M``, ``OUT``, ``D``, ``S``, ``J``, ``B``, ``L``). ``default`` (1 unless given) applies to every
  block no item names, ``OTHER`` included; items apply left to right, later ones win.
* **Preset names** (``ALL``, ``OUTALL``, ``SDXL-INALL``, ``FLUX-SINGLE``...) from
  ``block_presets.txt`` and an optional user file in the same ``NAME:value`` format.

Every id is absolute: ``D05`` is the sixth double block of the model, whatever the LoRA touches.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import SpecError
from ..layouts import ModelLayout, layout_for
from ..layouts.archs import arch
from .map import OTHER, block_of, block_sort_key, layout_blocks, split_block_id

_SD26 = ["BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12))]
_SD17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02d}" for i in range(3, 12))]
_XL20 = ["BASE", *(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9))]
_XL12 = ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02d}" for i in range(6))]
_FLUX57 = [*(f"D{i:02d}" for i in range(19)), *(f"S{i:02d}" for i in range(38))]
_FLUX61 = ["CLIP", "T5", "IN", *_FLUX57, "OUT"]

#: arch id -> {vector length: the absolute block id of each position}
VECTOR_FORMS: dict[str, dict[int, list[str]]] = {
    "sd1": {17: _SD17, 26: _SD26},
    "sd2": {17: _SD17, 26: _SD26},
    "sdxl": {12: _XL12, 20: _XL20},
    "sdxl_refiner": {26: _SD26},
    "flux": {57: _FLUX57, 61: _FLUX61},
    "chroma": {57: _FLUX57, 60: ["T5", "IN", *_FLUX57, "OUT"]},
}

PRESETS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets.txt")
_TOKENS = ("R", "U", "X", "A", "B")
_ITEM = re.compile(r"^\s*([A-Za-z]+)(\d+)?(?:\s*-\s*([A-Za-z]*)(\d+))?\s*$")


@dataclass(frozen=True)
class BlockWeights:
    """A weight for every absolute block of one architecture family."""

    arch: str
    weights: dict[str, float]  # block id -> weight, for blocks the spec set
    default: float = 1.0  # every other block, OTHER included
    source: str = ""  # the spec as given, for reports

    @property
    def family(self) -> str:
        return arch(self.arch).family

    def weight(self, block: str) -> float:
        """The weight of an absolute block id."""
        return self.weights.get(block, self.default)

    def for_key(self, key: str) -> float:
        """The weight of the block a canonical model key belongs to."""
        return self.weight(block_of(key, self.family))

    def is_uniform(self, value: float = 1.0) -> bool:
        """Whether every block has this weight."""
        return self.default == value and all(w == value for w in self.weights.values())

    def table(self, keys: Iterable[str]) -> list[tuple[str, float, int]]:
        """(block, weight, number of keys) for the blocks these keys fall into, in display order."""
        counts: dict[str, int] = {}
        for k in keys:
            b = block_of(k, self.family)
            counts[b] = counts.get(b, 0) + 1
        order = sorted(counts, key=lambda b: block_sort_key(b, self.family))
        return [(b, self.weight(b), counts[b]) for b in order]


@dataclass
class _Params:
    a: float
    b: float
    x: float
    rng: random.Random = field(default_factory=random.Random)


def _value(text: str, params: _Params, where: str) -> float:
    t = text.strip()
    up = t.upper()
    if up == "R":
        return params.rng.random()
    if up == "U":
        return params.rng.uniform(-0.5, 1.5)
    if up in ("X", "A", "B"):
        return {"X": params.x, "A": params.a, "B": params.b}[up]
    try:
        v = float(t)
    except ValueError:
        raise SpecError(f"{t!r} is not a number or one of R, U, X, A, B", key=where) from None
    if v != v or v in (float("inf"), float("-inf")):
        raise SpecError(f"{t!r} is not a finite number", key=where)
    return v


def standard_blocks(arch_id: str) -> list[str]:
    """The absolute block ids of an architecture's released model, in display order."""
    return list(layout_blocks(layout_for(arch_id)))


def _known_blocks(arch_id: str, layout: ModelLayout | None) -> list[str]:
    blocks = standard_blocks(arch_id)
    if layout is not None:
        blocks += [b for b in layout_blocks(layout) if b not in blocks]
    return blocks + [OTHER]


def _families(blocks: list[str]) -> dict[str, list[str]]:
    fams: dict[str, list[str]] = {}
    for b in blocks:
        fam, num = split_block_id(b)
        fams.setdefault(fam if num is not None else b, []).append(b)
    return fams


def block_families(arch_id: str, layout: ModelLayout | None = None) -> dict[str, list[str]]:
    """What each family name of a readable spec names (``IN`` -> IN00.., ``BASE`` -> BASE), OTHER included."""
    return _families(_known_blocks(arch_id, layout))


def _expand(lhs: str, arch_id: str, blocks: list[str]) -> list[str]:
    """The block ids a left-hand side names (a block, a range or a family)."""
    fams = _families(blocks)
    whole = lhs.strip().upper()
    if whole in fams:  # a block or family name, digits included (Flux ``T5``)
        return fams[whole]
    m = _ITEM.match(lhs)
    if not m:
        raise SpecError(f"{lhs.strip()!r} is not a block, range or family name", key=lhs.strip())
    fam, start, fam2, end = m.group(1).upper(), m.group(2), (m.group(3) or "").upper(), m.group(4)
    name = arch(arch_id).name
    if start is None and end is None:
        if fam in fams:
            return fams[fam]
        raise SpecError(f"{name} has no block or family {lhs.strip()!r} (known: {', '.join(sorted(fams))})",
                        key=lhs.strip())
    numbered = {split_block_id(b)[1]: b for b in fams.get(fam, []) if split_block_id(b)[1] is not None}
    if not numbered:
        raise SpecError(f"{name} has no numbered blocks {fam!r}", key=lhs.strip())
    if fam2 and fam2 != fam:
        raise SpecError(f"a range stays within one family ({fam} vs {fam2})", key=lhs.strip())
    lo = int(start) if start is not None else None
    hi = int(end) if end is not None else lo
    if lo is None:
        raise SpecError("a range needs a start", key=lhs.strip())
    if hi < lo:
        raise SpecError(f"range {lo}..{hi} is empty", key=lhs.strip())
    missing = [i for i in (lo, hi) if i not in numbered]
    if missing:
        raise SpecError(f"{fam}{missing[0]:02d} does not exist in {name} ({min(numbered):02d}..{max(numbered):02d})",
                        key=lhs.strip())
    return [numbered[i] for i in range(lo, hi + 1) if i in numbered]


def _read_presets(path: str | os.PathLike) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or ":" not in line:
                continue
            name, value = line.split(":", 1)
            name = name.strip().upper()
            if name and not name.startswith("@"):  # "@" lines are LBW's XYZ-plot entries, not weights
                out.setdefault(name, []).append(value.strip())
    return out


def load_presets(paths: Iterable[str | os.PathLike] = ()) -> dict[str, list[str]]:
    """Presets from ``block_presets.txt`` and the given user files (LBW's ``NAME:value`` format):
    NAME -> its values (one vector per arch, or readable specs). A user value replaces a shipped
    one of the same vector length; missing files are skipped."""
    presets = _read_presets(PRESETS_FILE)
    for path in paths:
        if not os.path.isfile(path):
            continue
        for name, values in _read_presets(path).items():
            lengths = {_vector_len(v) for v in values}
            presets[name] = values + [v for v in presets.get(name, []) if _vector_len(v) not in lengths]
    return presets


def _vector_len(value: str) -> int | None:
    return None if "=" in value else len(value.split(","))


def _is_vector(spec: str) -> bool:
    return "=" not in spec and "," in spec


def parse_block_weights(spec: str, arch_id: str, *, a: float = 1.0, b: float = 1.0, x: float = 1.0, seed: int = 0,
                        presets: dict[str, list[str]] | None = None, layout: ModelLayout | None = None) -> BlockWeights:
    """Resolve a spec (vector, readable spec, preset name, or empty for all 1) for an arch."""
    text = (spec or "").strip()
    params = _Params(a, b, x, random.Random(seed))
    if not text:
        return BlockWeights(arch_id, {}, 1.0, spec or "")
    presets = load_presets() if presets is None else presets
    key = text.upper()
    if key in presets:
        for candidate in presets[key]:
            try:
                resolved = parse_block_weights(candidate, arch_id, a=a, b=b, x=x, seed=seed, presets={}, layout=layout)
            except SpecError:
                continue
            return BlockWeights(arch_id, resolved.weights, resolved.default, spec)
        raise SpecError(f"preset {text!r} has no form for {arch(arch_id).name}", key=text)
    if _is_vector(text):
        values = [v for v in text.split(",")]
        forms = VECTOR_FORMS.get(arch_id, {})
        if len(values) not in forms:
            want = " or ".join(str(n) for n in sorted(forms)) or "no"
            raise SpecError(f"{len(values)} values given; {arch(arch_id).name} takes {want}", key=text)
        ids = forms[len(values)]
        weights = {ids[i]: _value(v, params, f"value {i + 1} ({ids[i]})") for i, v in enumerate(values)}
        return BlockWeights(arch_id, weights, 1.0, spec)
    if "=" not in text and "," not in text and text.upper() not in _families(_known_blocks(arch_id, layout)):
        try:
            return BlockWeights(arch_id, {}, _value(text, params, text), spec)  # one value: every block
        except SpecError:
            raise SpecError(f"{text!r} is not a preset, a number, a vector or BLOCK=VALUE items", key=text) from None
    blocks = _known_blocks(arch_id, layout)
    default = 1.0
    weights: dict[str, float] = {}
    items = [i for i in re.split(r"[,;\n]", text) if i.strip()]
    for item in items:
        if "=" not in item:
            raise SpecError(f"{item.strip()!r} has no '=' (write BLOCK=VALUE, e.g. OUT03=0.5)", key=item.strip())
        lhs, rhs = item.split("=", 1)
        if lhs.strip().lower() == "default":
            default = _value(rhs, params, item.strip())
            continue
        value = _value(rhs, params, item.strip())
        for block in _expand(lhs, arch_id, blocks):
            weights[block] = value
    return BlockWeights(arch_id, weights, default, spec)


def preset_names(arch_id: str, presets: dict[str, list[str]] | None = None) -> list[str]:
    """Preset names that have a form for this arch, in file order."""
    presets = load_presets() if presets is None else presets
    names = []
    for name in presets:
        try:
            parse_block_weights(name, arch_id, presets=presets)
        except SpecError:
            continue
        names.append(name)
    return names
