"""Group a LoRA file's tensor keys into adapter entries, from key names and shapes alone.

Every key ends up in exactly one place: an entry, or the list of keys this module does not
recognise. Nothing is dropped silently. The key suffixes and the rules of each algorithm come from
:mod:`loralab.adapters`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..adapters import ALGORITHMS, Algorithm, dora
from ..adapters.base import ALPHA_SUFFIX

#: key suffix -> (role, naming style), from every algorithm. Matched longest first.
SUFFIXES: dict[str, tuple[str, str]] = {
    ALPHA_SUFFIX: ("alpha", ""),
    dora.SUFFIX: (dora.ROLE, ""),
    **{suffix: hit for a in ALGORITHMS.values() for suffix, hit in a.suffixes.items()},
}
#: the old diffusers attention-processor naming (``attn1.processor.to_q_lora.up.weight``) applies to these only
_PROCESSOR_LAYERS = ("to_q", "to_k", "to_v", "to_out", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
#: roles an entry of a weighted algorithm shares with the module
_SHARED_ROLES = ("alpha", dora.ROLE)


@dataclass
class Entry:
    """One adapter of a LoRA file: the tensors that together change one model weight or bias."""

    module: str  # the module name as written in the file
    kind: str  # a key of loralab.adapters.ALGORITHMS: "lora" | "loha" | "lokr" | "diff" | "set" | "oft" | "glora"
    param: str  # "weight" or "bias"
    keys: dict[str, str]  # role -> tensor key in the file
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    style: str = ""  # key naming style of the up/down pair
    alpha: float | None = None  # filled in from the file's alpha scalar, when there is one
    problem: str | None = None  # set when the entry cannot be used (missing partner, bad shapes)

    @property
    def algorithm_spec(self) -> Algorithm:
        return ALGORITHMS[self.kind]

    @property
    def alpha_key(self) -> str | None:
        return self.keys.get("alpha")

    @property
    def has_dora(self) -> bool:
        return dora.ROLE in self.keys

    @property
    def supported(self) -> bool:
        """Whether the engine can compute this entry's ΔW (from its own tensors alone)."""
        return self.problem is None and not self.needs_base

    @property
    def needs_base(self) -> bool:
        """An OFT, BOFT or GLoRA entry: its update depends on the base weight, so only the loader applies it."""
        return self.algorithm_spec.needs_base

    def algorithm(self) -> str:
        """Human name of the algorithm: LoRA, LoCon, LoRA (Tucker), LoHa, LoKr, DoRA variants, Full diff..."""
        name = self.algorithm_spec.name(self.shapes)
        return name + " + DoRA" if self.has_dora else name

    def base_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why this OFT, BOFT or GLoRA entry cannot act on a weight of ``shape`` the way ComfyUI
        computes it (None where it can)."""
        if self.problem is not None:
            return self.problem
        return self.algorithm_spec.fit_problem(self.shapes, shape)

    def rank(self) -> int | None:
        """The rank alpha is divided by (None where the algorithm has none)."""
        return self.algorithm_spec.rank(self.shapes)

    def scale(self) -> float:
        """The factor ΔW is multiplied by (alpha / rank; 1 where there is no alpha or no rank)."""
        r = self.rank()
        if self.alpha is None or not r or not self.algorithm_spec.weighted:
            return 1.0
        return self.alpha / r

    def delta_shape(self) -> tuple[int, int] | None:
        """(out_features, in_numel) of ΔW from the shapes alone, or None if they do not fit."""
        try:
            return self.algorithm_spec.delta_shape(self.shapes)
        except (KeyError, IndexError):
            return None


@dataclass
class ParsedKeys:
    """The result of grouping: entries, unrecognised keys, and problems found on the way."""

    entries: list[Entry] = field(default_factory=list)
    unrecognized: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # recognised suffix, but nothing to belong to


_MAX_SUFFIX_DOTS = max(s.count(".") for s in SUFFIXES)


def split_key(key: str) -> tuple[str, str, str] | None:
    """(module, role, style) for a tensor key, or None if no known suffix matches (longest first)."""
    cuts = []
    pos = len(key)
    for _ in range(_MAX_SUFFIX_DOTS):
        pos = key.rfind(".", 0, pos)
        if pos <= 0:
            break
        cuts.append(pos)
        underscore = key.rfind("_lora", 0, pos)
        if underscore > 0 and underscore + len("_lora") == pos:
            cuts.append(underscore)
    for cut in sorted(cuts):
        hit = SUFFIXES.get(key[cut:])
        if hit is None:
            continue
        role, style = hit
        module = key[:cut]
        if style == "diffusers_attn_processor" and not module.endswith(_PROCESSOR_LAYERS):
            continue
        return module, role, style
    return None


#: dtypes an adapter's factors may have (alpha may be any number)
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def _value_problem(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> str | None:
    """Factors stored as integers or booleans, and empty factors: nothing to apply."""
    for role, dtype in dtypes.items():
        if role != "alpha" and dtype not in FLOAT_DTYPES:
            return f"{role} is stored as {dtype}, not a floating-point type"
    empty = [role for role, shape in shapes.items() if role != "alpha" and math.prod(shape) == 0]
    if empty:
        return f"empty tensor ({', '.join(f'{r} {list(shapes[r])}' for r in empty)})"
    return None


def group_keys(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> ParsedKeys:
    """Group tensor keys (with their shapes and dtypes) into adapter entries."""
    by_module: dict[str, dict[str, tuple[str, str]]] = {}
    out = ParsedKeys()
    for key in shapes:
        parsed = split_key(key)
        if parsed is None:
            out.unrecognized.append(key)
            continue
        module, role, style = parsed
        roles = by_module.setdefault(module, {})
        if role in roles:  # two naming styles for the same role: keep the first, report the other
            out.unrecognized.append(key)
            continue
        roles[role] = (key, style)

    for module, roles in by_module.items():
        keys = {r: k for r, (k, _) in roles.items()}
        styles = {s for _, s in roles.values() if s}
        role_styles = {r: s for r, (_, s) in roles.items()}
        used: set[str] = set()
        for algorithm in ALGORITHMS.values():
            for claim in algorithm.claims(role_styles, styles):
                ks = {r: keys[r] for r in claim.roles if r in keys}
                if algorithm.shares_alpha:
                    ks.update({r: keys[r] for r in _SHARED_ROLES if r in keys})
                used.update(ks.values())
                e_shapes = {r: tuple(shapes[k]) for r, k in ks.items()}
                e_dtypes = {r: dtypes[k] for r, k in ks.items()}
                problem = (claim.problem or algorithm.problem(e_shapes)
                           or _value_problem(e_shapes, e_dtypes))
                out.entries.append(Entry(module, claim.kind, claim.param, ks, e_shapes, e_dtypes, claim.style,
                                         problem=problem))
        out.orphans.extend(k for k in keys.values() if k not in used)
    return out
