"""Stack report: how strongly each LoRA of a stack changes each weight and absolute block, how each
pair of LoRAs interferes there, which blocks they fight over, and block-weight specs that separate them.

Every number is computed from the factors, one model weight at a time; ΔW is never built for a
module that has an exact low-rank form. A LoRA's update of one weight is x = w·b·ΔW (its stack
weight, its block weight on the weight's absolute block, ΔW at its own scale alpha/rank); pieces
that write row slices of one fused weight (ai-toolkit's Flux q/k/v) are placed in their rows, so a
fused and a split LoRA of one model are compared on the same matrix.

Definitions (x, y: the updates of two LoRAs on one weight, flattened to [out, in·k·k]):

* **strength** ‖x‖_F, from the factors (‖BA‖² = Σ (BᵀB)⊙(AAᵀ)); **relative** ‖x‖/‖W‖ with base weights.
* **cosine** ⟨x, y⟩_F / (‖x‖‖y‖), with ⟨B₁A₁, B₂A₂⟩ = Σ (B₁ᵀB₂)⊙(A₁A₂ᵀ) = trace((B₁ᵀB₂)(A₂A₁ᵀ)). The
  signs of the weights count: a LoRA at weight −1 points the other way.
* **dominant subspaces**: the exact thin SVD x = U·diag(σ)·Vᵀ from the factors
  (:func:`~loralab.ops.lowrank.svd_of_product`: QR of B and Aᵀ, SVD of the small core); the dominant
  output (column) space is spanned by the first k left singular vectors, k the smallest count whose
  Σσ² reaches ``energy`` (0.9 by default) of ‖x‖², the input (row) space by the first k right ones.
* **overlap_out** = ‖U_xᵀU_y‖_F² / min(k_x, k_y): the mean squared cosine of the min(k_x, k_y)
  principal angles between the two dominant output spaces (1: the smaller lies inside the larger;
  about k/out for unrelated spaces). **overlap_in** likewise with V (input features read).
  **overlap** = overlap_out · overlap_in: both updates read the same inputs *and* write the same outputs.
* **conflict** = Σ_{x_pq·y_pq<0} |x_pq·y_pq| / Σ |x_pq·y_pq|: the fraction of the entrywise product
  mass where the two updates push the same weight entry in opposite directions (0.5 for
  unrelated updates; cosine = (1 − 2·conflict)·Σ|xy| / (‖x‖‖y‖)). Estimated on a seeded uniform
  sample of ``samples`` entries per weight (drawn with replacement, the same entries for every
  pair; each entry computed from the factors as B[p]·A[:, q]); exact (every entry) on weights
  with at most ``samples`` entries.

Blocks (by :func:`~loralab.blocks.map.block_of`): a LoRA's block strength is sqrt(Σ‖x_m‖²) over its
weights in the block; a pair's block cosine is Σ⟨x_m, y_m⟩ / (‖x‖_block·‖y‖_block) (the cosine of the
whole block's updates taken together); block overlap_out and overlap_in are the means of the
weights' values weighted by ‖x_m‖·‖y_m‖ over the weights both write, block overlap their product;
block conflict is Σ neg / Σ |xy| of the sample
estimates scaled to each weight's size.

**Fights**: a pair fights on a block both write when its block cosine ≤ −``cos_threshold`` (they
undo each other), or when its block overlap ≥ ``overlap_threshold`` and the weaker one's block
strength is at least ``balance`` of the stronger one's (they compete for the same directions with
comparable force). The **proposal** multiplies the weaker LoRA's block weight by ``lower`` (0 by
default: off) on each block where it fights a stronger one, keeping its own spec elsewhere, and
writes the result as a readable spec (``default=…, BLOCK=…``) that ``parse_block_weights`` reads
back exactly; a LoRA never lowered keeps its spec as given.

Algorithms: LoRA/LoCon/Tucker LoRA by their factors; LoHa by its exact rank r₁·r₂ form; LoKr by the
exact SVD of its Kronecker factors; Tucker LoHa and full diffs by their dense ΔW (that weight only,
noted as ``dense``). OFT, BOFT, GLoRA, DoRA and ``set_weight`` modules are listed as unmeasured with
the reason: their change is a function of the base weight, not a ΔW of their own.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from ..adapters import Adapter, LoKr
from ..blocks.map import OTHER, block_of, block_sort_key
from ..blocks.spec import BlockWeights
from ..errors import LoraFormatError, SpecError
from ..formats.model_weights import ModelWeights
from ..formats.writer import row_placed
from ..layouts import ModelLayout
from ..lora import MappedEntry
from .inputs import MergeInput, by_target, common_layout
from .lowrank import SVD, WORK, RankRule, full_svd, lokr_svd, one_thread, select_rank, svd_of_product
from .results import Progress, dense_dtype

#: report schema version (bump when a field changes meaning)
SCHEMA = 1


@dataclass(frozen=True)
class Thresholds:
    """What the report measures with and when it calls a pair's block a fight (see the module docstring)."""

    samples: int = 4096
    seed: int = 0
    energy: float = 0.9
    cos_threshold: float = 0.1
    overlap_threshold: float = 0.5
    balance: float = 0.25
    lower: float = 0.0

    def __post_init__(self) -> None:
        checks = ((self.samples >= 1, "samples must be ≥ 1", "samples"),
                  (0 < self.energy <= 1, "energy is a fraction in (0, 1]", "energy"),
                  (0 <= self.cos_threshold <= 1, "cos_threshold is in [0, 1]", "cos_threshold"),
                  (0 <= self.overlap_threshold <= 1, "overlap_threshold is in [0, 1]", "overlap_threshold"),
                  (0 <= self.balance <= 1, "balance is in [0, 1]", "balance"),
                  (math.isfinite(self.lower), "lower must be a finite number", "lower"))
        for ok, problem, key in checks:
            if not ok:
                raise SpecError(f"{problem}, got {getattr(self, key)}", key=key)


@dataclass
class PairStats:
    """How LoRAs ``i`` and ``j`` (indices into the stack) interfere on one weight or block."""

    i: int
    j: int
    cos: float | None  # None where either update is zero
    overlap_out: float | None
    overlap_in: float | None
    conflict: float | None  # None where the sampled product mass is zero
    inner: float = 0.0  # ⟨x, y⟩_F
    neg_mass: float = 0.0  # estimated Σ over opposite-sign entries of |x·y|
    abs_mass: float = 0.0  # estimated Σ |x·y|

    @property
    def overlap(self) -> float | None:
        if self.overlap_out is None or self.overlap_in is None:
            return None
        return self.overlap_out * self.overlap_in


@dataclass
class StackModule:
    """One model weight: each LoRA's strength on it (None: that LoRA does not write it) and every pair."""

    key: str
    block: str
    numel: int
    strength: list[float | None]
    rank: list[int | None]  # dominant subspace dimension k per LoRA
    base_norm: float | None = None
    dense: list[int] = field(default_factory=list)  # LoRAs measured through their dense ΔW here
    unmeasured: dict[int, str] = field(default_factory=dict)  # LoRA index -> why
    pairs: list[PairStats] = field(default_factory=list)

    @property
    def relative(self) -> list[float | None]:
        if not self.base_norm:
            return [None] * len(self.strength)
        return [None if s is None else s / self.base_norm for s in self.strength]


@dataclass
class StackBlock:
    """One absolute block: each LoRA's block strength, and each pair that both write it."""

    block: str
    strength: list[float]
    modules: list[int]  # weights each LoRA writes here
    relative: list[float | None]
    unmeasured: list[int]
    pairs: list[PairStats]


@dataclass
class Fight:
    """A pair that fights on a block, and which of the two the proposal lowers there."""

    block: str
    i: int
    j: int
    reason: str  # "opposed" (negative cosine) or "overlap" (shared dominant directions, comparable strength)
    cos: float | None
    overlap: float | None
    lowered: int


@dataclass
class StackReport:
    """The result of :func:`stack_report`; ``to_dict`` is the documented JSON."""

    arch: str
    arch_name: str
    inputs: list[dict]
    thresholds: Thresholds
    modules: list[StackModule]
    blocks: list[StackBlock]
    fights: list[Fight]
    proposals: list[str]  # block-weight spec per LoRA
    relative: bool
    skipped: list[str]

    def to_dict(self) -> dict:
        """The JSON report (schema in README "Stack report")."""
        def pair(p: PairStats) -> dict:
            return {"i": p.i, "j": p.j, "cos": p.cos, "overlap_out": p.overlap_out, "overlap_in": p.overlap_in,
                    "overlap": p.overlap, "conflict": p.conflict}
        return {
            "schema": SCHEMA,
            "arch": {"id": self.arch, "name": self.arch_name},
            "loras": [dict(inp, proposed_block_weights=spec) for inp, spec in zip(self.inputs, self.proposals)],
            "thresholds": asdict(self.thresholds),
            "relative": self.relative,
            "blocks": [{"block": b.block, "strength": b.strength, "relative": b.relative, "modules": b.modules,
                        "unmeasured": b.unmeasured, "pairs": [pair(p) for p in b.pairs]} for b in self.blocks],
            "modules": [{"key": m.key, "block": m.block, "numel": m.numel, "strength": m.strength,
                         "relative": m.relative, "rank": m.rank, "base_norm": m.base_norm, "dense": m.dense,
                         "unmeasured": {str(i): r for i, r in m.unmeasured.items()},
                         "pairs": [pair(p) for p in m.pairs]} for m in self.modules],
            "fights": [asdict(f) for f in self.fights],
            "skipped": self.skipped,
        }

    def to_text(self) -> str:
        """A readable summary: the stack, strength and pair cosines per block written, fights and proposals."""
        names = [inp["title"] for inp in self.inputs]
        lines = [f"stack report: {len(names)} LoRAs for {self.arch_name}"]
        for n, inp in enumerate(self.inputs):
            spec = inp["block_weights"] or "all 1"
            lines.append(f"  [{n + 1}] {inp['title']}  weight {inp['weight']:g}  blocks: {spec}")
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
        what = "‖ΔW‖/‖W‖" if self.relative else "‖ΔW‖"
        head = "block   " + "".join(f"[{n + 1}] {what}".rjust(14) for n in range(len(names))) + \
            "".join(f"cos {i + 1}-{j + 1}".rjust(11) for i, j in pairs)
        lines += ["", head]
        for b in self.blocks:
            if not any(b.modules):
                continue
            vals = b.relative if self.relative else b.strength
            row = f"{b.block:<8}" + "".join(("-" if not b.modules[n] or v is None else f"{v:.4g}").rjust(14)
                                            for n, v in enumerate(vals))
            cos = {(p.i, p.j): p.cos for p in b.pairs}
            row += "".join(("-" if cos.get(ij) is None else f"{cos[ij]:+.3f}").rjust(11) for ij in pairs)
            lines.append(row)
        t = self.thresholds
        lines += ["", f"fights (cos ≤ −{t.cos_threshold:g}, or overlap ≥ {t.overlap_threshold:g} with the weaker "
                      f"≥ {t.balance:g}× the stronger):"]
        if not self.fights:
            lines.append("  none")
        for f in self.fights:
            detail = f"cos {f.cos:+.3f}" if f.reason == "opposed" else f"overlap {f.overlap:.3f}"
            lines.append(f"  {f.block}: [{f.i + 1}] vs [{f.j + 1}] {f.reason} ({detail}); lower [{f.lowered + 1}]")
        lines += ["", f"proposed block weights (lowered blocks × {t.lower:g}):"]
        for n, spec in enumerate(self.proposals):
            lines.append(f"  [{n + 1}] {names[n]}: {spec or '(all 1)'}")
        unmeasured = sum(len(m.unmeasured) for m in self.modules)
        if unmeasured:
            lines.append(f"\n{unmeasured} modules unmeasured (OFT/BOFT/GLoRA/DoRA/set_weight: their change depends on "
                         "the base weight)")
        dense = sum(len(m.dense) for m in self.modules)
        if dense:
            lines.append(f"{dense} modules measured through their dense ΔW (Tucker LoHa, full diffs)")
        if self.skipped:
            lines.append(f"{len(self.skipped)} entries not mapped onto {self.arch_name} (first: {self.skipped[0]})")
        return "\n".join(lines)

    def heat_map(self):
        """A Pillow image: pairwise block cosine, a row per pair and a column per block written."""
        from ..blocks.heatmap import heat_map
        blocks = [b for b in self.blocks if any(b.modules)]
        n = len(self.inputs)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        values = []
        for i, j in pairs:
            by = {b.block: next((p.cos for p in b.pairs if (p.i, p.j) == (i, j)), None) for b in blocks}
            values.append([by[b.block] for b in blocks])
        return heat_map([b.block for b in blocks], [f"{i + 1}-{j + 1}" for i, j in pairs], values,
                        "pairwise cosine of ΔW per block", f"{self.arch_name}; red: opposed, blue: aligned")


@dataclass
class _Update:
    """One LoRA's update of one whole weight: factors (b [out, R], a [R, in]) or a dense matrix."""

    b: torch.Tensor | None
    a: torch.Tensor | None
    dense: torch.Tensor | None
    norm: float = 0.0
    u: torch.Tensor | None = None  # dominant output basis [out, k]
    v: torch.Tensor | None = None  # dominant input basis [in, k]

    def matrix(self) -> torch.Tensor:
        return self.dense if self.dense is not None else self.b @ self.a

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """x[rows[n], cols[n]] for every n, from the factors (no ΔW)."""
        if self.dense is not None:
            return self.dense[rows, cols].to(WORK)
        return (self.b[rows] * self.a[:, cols].T).sum(1)


def _why_unmeasured(entry_algorithm: str, adapter: Adapter | None) -> str | None:
    if adapter is None:
        return f"{entry_algorithm}: its update is a function of the base weight (applied only by the loader)"
    if adapter.dora_scale is not None:
        return "DoRA: the update renormalises W + ΔW to a magnitude, so it depends on the base weight"
    if not adapter.has_delta:
        return "set_weight: replaces the weight; its change depends on the base weight"
    return None


def _piece(adapter: Adapter, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                              torch.Tensor | None]:
    """(b, a, None) from an exact low-rank form, or (None, None, dense ΔW) where there is none."""
    if len(shape) >= 2:
        if isinstance(adapter, LoKr):
            svd = lokr_svd(adapter)
            return svd.u * (svd.s * adapter.scale), svd.vh, None
        lr = adapter.low_rank(WORK)
        if lr is not None:
            return lr[0], lr[1], None
    return None, None, adapter.delta_flat(dense_dtype(math.prod(shape))).reshape(shape[0] if shape else 1, -1)


def _update(pieces: list[tuple[MappedEntry, Adapter]], shape: tuple[int, ...], coef: float) -> tuple[_Update, bool]:
    """The weighted update of one weight from one LoRA's pieces; True when it needed a dense ΔW."""
    rows = shape[0] if shape else 1
    parts = [(m.target, *_piece(ad, shape)) for m, ad in pieces]
    if all(d is None for *_, d in parts):
        b = torch.cat([row_placed(b, t, rows) for t, b, _, _ in parts], dim=1) * coef
        a = torch.cat([a for _, _, a, _ in parts], dim=0)
        return _Update(b, a, None), False
    dense = sum(row_placed(d if d is not None else (b @ a).to(dense_dtype(rows * a.shape[1])), t, rows)
                for t, b, a, d in parts)
    return _Update(None, None, dense * coef), True


def _measure(up: _Update, rule: RankRule) -> int:
    """Fill in the update's norm and dominant bases; returns k (0 for a zero update)."""
    svd: SVD = full_svd(up.dense.to(WORK)) if up.dense is not None else svd_of_product(up.b, up.a)
    up.norm = math.sqrt(max(svd.energy, 0.0))
    k = select_rank(svd, rule)
    if k:
        top = svd.truncated(k)
        up.u, up.v = top.u.to(WORK), top.vh.T.to(WORK)
    return k


def _inner(x: _Update, y: _Update) -> float:
    if x.dense is None and y.dense is None:
        return float(((x.b.T @ y.b) * (x.a @ y.a.T)).sum())
    return float((x.matrix().to(WORK) * y.matrix().to(WORK)).sum())


def _overlap(p: torch.Tensor | None, q: torch.Tensor | None) -> float | None:
    if p is None or q is None:
        return None
    return float((p.T @ q).pow(2).sum()) / min(p.shape[1], q.shape[1])


def _sample(key: str, rows: int, cols: int, t: Thresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries the conflict estimate reads: all of them for a small weight, else a seeded uniform draw."""
    numel = rows * cols
    if numel <= t.samples:
        idx = torch.arange(numel)
    else:
        g = torch.Generator().manual_seed(zlib.crc32(f"{t.seed}:{key}".encode()))
        idx = torch.randint(numel, (t.samples,), generator=g)
    return idx // cols, idx % cols


def _pair(i: int, j: int, x: _Update, y: _Update, vx: torch.Tensor, vy: torch.Tensor, scale: float) -> PairStats:
    inner = _inner(x, y)
    prod = vx * vy
    neg = float((-prod).clamp_min(0).sum()) * scale
    tot = float(prod.abs().sum()) * scale
    both = x.norm > 0 and y.norm > 0
    return PairStats(i, j, inner / (x.norm * y.norm) if both else None, _overlap(x.u, y.u), _overlap(x.v, y.v),
                     neg / tot if tot > 0 else None, inner, neg, tot)


def _num(v: float) -> str:
    """A float written short, but so that it reads back exactly."""
    s = f"{v:g}"
    return s if float(s) == v else repr(v)


def proposed_spec(weights: BlockWeights, lowered: dict[str, float], family: str) -> str:
    """A readable spec equal to ``weights`` with the blocks of ``lowered`` set to the given weights."""
    table = dict(weights.weights)
    table.update(lowered)
    items = [f"default={_num(weights.default)}"]
    items += [f"{b}={_num(w)}" for b, w in sorted(table.items(), key=lambda kv: (kv[0] == OTHER,
                                                                                  block_sort_key(kv[0], family)))
              if w != weights.default]
    return ", ".join(items)


def stack_report(inputs: Sequence[MergeInput], *, base: ModelWeights | None = None,
                 thresholds: Thresholds | None = None, progress: Progress | None = None) -> StackReport:
    """The stack report of ``inputs`` (each a LoRA with its weight and block spec), one weight at a
    time; ``base`` (the model's weights) adds relative strengths ‖ΔW‖/‖W‖."""
    t = thresholds or Thresholds()
    layout = common_layout(inputs, "a stack report compares")
    arch_id, family = layout.arch.id, layout.arch.family
    specs = [inp.blocks(arch_id, layout) for inp in inputs]
    rule = RankRule("sv_fro", t.energy)
    n = len(inputs)

    by_key, skipped = by_target(inputs)
    if not by_key:
        raise LoraFormatError(f"no module of {', '.join(inp.title for inp in inputs)} lands on a weight of "
                              f"{layout.arch.name}", hint="check that the LoRAs are for this model")
    order = {k: o for o, k in enumerate(layout.shapes)}
    keys = sorted(by_key, key=lambda k: order.get(k, len(order)))

    modules: list[StackModule] = []
    with one_thread():
        for done, key in enumerate(keys, 1):
            modules.append(_module(key, by_key[key], inputs, specs, layout, base, rule, t))
            if progress is not None:
                progress(done, len(keys))
    blocks = _blocks(modules, n, family, base is not None)
    fights = _fights(blocks, t)
    proposals = []
    for i, (inp, spec) in enumerate(zip(inputs, specs)):
        lowered = {f.block: spec.weight(f.block) * t.lower for f in fights if f.lowered == i}
        proposals.append(proposed_spec(spec, lowered, family) if lowered else inp.block_spec)
    info = [{"title": inp.title, "file": os.path.basename(inp.lora.path) if inp.lora.path else None,
             "weight": inp.weight, "block_weights": inp.block_spec} for inp in inputs]
    return StackReport(arch_id, layout.arch.name, info, t, modules, blocks, fights, proposals, base is not None,
                       skipped)


def _module(key: str, items: list[tuple[int, MappedEntry]], inputs: Sequence[MergeInput],
            specs: list[BlockWeights], layout: ModelLayout, base: ModelWeights | None, rule: RankRule,
            t: Thresholds) -> StackModule:
    """Strengths and pair statistics of one weight."""
    shape = tuple(layout.shapes[key])
    block = block_of(key, layout.arch.family)
    rows, cols = (shape[0] if shape else 1), (math.prod(shape[1:]) if len(shape) > 1 else 1)
    n = len(inputs)
    mod = StackModule(key, block, rows * cols, [None] * n, [None] * n)
    if base is not None and key in base:
        mod.base_norm = float(base.get(key).to(WORK).norm())
    pieces: dict[int, list[tuple[MappedEntry, Adapter]]] = {}
    for i, m in items:
        if i in mod.unmeasured:
            continue
        adapter = None if m.entry.needs_base else inputs[i].lora.adapter(m.entry)
        why = _why_unmeasured(m.entry.algorithm(), adapter)
        if why is not None:
            mod.unmeasured[i] = why
            pieces.pop(i, None)
            continue
        pieces.setdefault(i, []).append((m, adapter))
    updates: dict[int, _Update] = {}
    for i, ps in pieces.items():
        up, dense = _update(ps, shape, inputs[i].weight * specs[i].weight(block))
        if not all(math.isfinite(float(x.sum())) for x in (up.b, up.a, up.dense) if x is not None):
            raise LoraFormatError("the update has NaN or infinite values", path=inputs[i].lora.path,
                                  key=ps[0][0].entry.module, hint="the file is damaged: leave it out of the stack")
        mod.rank[i] = _measure(up, rule)
        mod.strength[i] = up.norm
        if dense:
            mod.dense.append(i)
        updates[i] = up
    if len(updates) > 1:
        r, c = _sample(key, rows, cols, t)
        values = {i: up.entries(r, c) for i, up in updates.items()}
        scale = mod.numel / len(r)
        idx = sorted(updates)
        mod.pairs = [_pair(i, j, updates[i], updates[j], values[i], values[j], scale)
                     for a, i in enumerate(idx) for j in idx[a + 1:]]
    return mod


def _blocks(modules: list[StackModule], n: int, family: str, with_base: bool) -> list[StackBlock]:
    """Block aggregates (see the module docstring) for every block some LoRA writes."""
    names = sorted({m.block for m in modules}, key=lambda b: (b == OTHER, block_sort_key(b, family)))
    out = []
    for name in names:
        mods = [m for m in modules if m.block == name]
        sq = [sum((m.strength[i] or 0.0) ** 2 for m in mods) for i in range(n)]
        count = [sum(1 for m in mods if m.strength[i] is not None or i in m.unmeasured) for i in range(n)]
        unmeasured = [sum(1 for m in mods if i in m.unmeasured) for i in range(n)]
        relative: list[float | None] = [None] * n
        if with_base:
            for i in range(n):
                touched = [m for m in mods if m.strength[i] is not None]
                if touched and all(m.base_norm for m in touched):
                    relative[i] = math.sqrt(sq[i] / sum(m.base_norm ** 2 for m in touched))
        strength = [math.sqrt(v) for v in sq]
        pairs = []
        for i in range(n):
            for j in range(i + 1, n):
                ps = [p for m in mods for p in m.pairs if (p.i, p.j) == (i, j)]
                if not ps:
                    continue
                wts = [(m.strength[i] or 0.0) * (m.strength[j] or 0.0) for m in mods for p in m.pairs
                       if (p.i, p.j) == (i, j)]
                inner = sum(p.inner for p in ps)
                neg, tot = sum(p.neg_mass for p in ps), sum(p.abs_mass for p in ps)
                norm = strength[i] * strength[j]

                def mean(vals: list[float | None]) -> float | None:
                    got = [(v, w) for v, w in zip(vals, wts) if v is not None and w > 0]
                    return sum(v * w for v, w in got) / sum(w for _, w in got) if got else None
                pairs.append(PairStats(i, j, inner / norm if norm > 0 else None,
                                       mean([p.overlap_out for p in ps]), mean([p.overlap_in for p in ps]),
                                       neg / tot if tot > 0 else None, inner, neg, tot))
        out.append(StackBlock(name, strength, count, relative, unmeasured, pairs))
    return out


def _fights(blocks: list[StackBlock], t: Thresholds) -> list[Fight]:
    """The (block, pair)s that fight, by the thresholds; the weaker of the two is the one lowered."""
    fights = []
    for b in blocks:
        for p in b.pairs:
            si, sj = b.strength[p.i], b.strength[p.j]
            weaker = p.j if sj <= si else p.i
            ratio = min(si, sj) / max(si, sj) if max(si, sj) > 0 else 0.0
            if p.cos is not None and p.cos <= -t.cos_threshold:
                fights.append(Fight(b.block, p.i, p.j, "opposed", p.cos, p.overlap, weaker))
            elif p.overlap is not None and p.overlap >= t.overlap_threshold and ratio >= t.balance:
                fights.append(Fight(b.block, p.i, p.j, "overlap", p.cos, p.overlap, weaker))
    return fights
