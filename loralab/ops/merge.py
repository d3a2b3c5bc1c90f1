"""Merge LoRAs into one, or resize one, streaming one module at a time.

Inputs of any format and algorithm for one architecture are aligned by canonical model key
(pieces that write row slices of a fused weight, such as ai-toolkit's Flux q/k/v, are placed in
their rows of the whole weight). Each input contributes ``weight · block_weight(key) · ΔW`` with
ΔW at its own scale (alpha / rank), once: ratios are never squared.

Methods:

* ``concat``: exact. The up matrices (carrying each term's weight and scale) and down matrices are
  stacked: rank = sum of ranks, alpha = rank. A module with a term that has no low-rank form (a
  full diff, DoRA) is written as its exact full difference.
* ``svd``: the sum's best approximation at the rank a :class:`~loralab.ops.lowrank.RankRule` chooses,
  computed from the factors (QR of B and Aᵀ, SVD of the small core) without building ΔW; LoKr
  through the SVD of its Kronecker factors; LoHa through its exact rank r₁·r₂ form; full diffs,
  Tucker LoHa and DoRA through a dense ΔW of that module only.
* ``ties``, ``dare``, ``magnitude``: sparsifying merges on the dense ΔW of each module (dense is
  inherent to them), then a randomized SVD back to the target rank. Lossy by design:

  - TIES (Yadav et al. 2023): each input's ΔW keeps its top ``density`` fraction of entries by
    magnitude; the sign of each entry is elected by the sign of the sum; the merged entry is the
    mean of the kept entries that agree with it. Trimming is per module (the paper trims over a
    whole task vector).
  - DARE (Yu et al. 2024): each entry of each input's ΔW is dropped with probability
    p = 1 − ``density`` and the rest rescaled by 1 / (1 − p); the results are summed.
  - magnitude: each input's ΔW keeps its top ``density`` fraction by magnitude; summed.

  Random draws are seeded per (seed, input, module), so a merge is reproducible.

Bias and other one-dimensional differences are summed exactly in every method. DoRA inputs
depend on the base weight: without the base model's weights the merge refuses, naming the module.
"""
from __future__ import annotations

import contextlib
import json
import math
import zlib
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .. import __version__
from ..adapters import Adapter, Diff, LoKr, LoRA
from ..adapters.base import flat
from ..errors import LoraFormatError, SpecError
from ..files.safetensors import DTYPES
from ..formats.model_weights import ModelWeights
from ..formats.writer import carried_metadata, kohya_tensors, lora_metadata, row_placed
from ..layouts import ModelLayout, Target
from .inputs import MergeInput, by_target, common_layout, common_variant
from .lowrank import SVD, WORK, RankRule, dense_svd, lokr_svd, one_thread, select_rank, svds_of_products
from .results import SCALED_FACTORS, MergeResult, ModuleReport, Progress, dense_dtype, non_finite

METHODS = ("concat", "svd", "ties", "dare", "magnitude")
SPARSIFYING = ("ties", "dare", "magnitude")


@dataclass
class _Term:
    """One input's contribution to one weight, placed in the whole weight's rows: coef·b@a, or dense
    (weighted)."""

    source: int  # input index
    b: torch.Tensor | None = None  # [out, r], the input's own up factor (in its dtype) where it is a LoRA
    a: torch.Tensor | None = None  # [r, in]
    dense: torch.Tensor | None = None  # [out, in]
    coef: float = 1.0  # the input's weight (times alpha/rank where b is a LoRA's up factor)

    @property
    def rank(self) -> int | None:
        return None if self.b is None else int(self.b.shape[1])

    def finite(self) -> bool:
        """No NaN or infinite value (a sum is NaN or infinite exactly when an entry is, barring an
        overflow only absurd values reach; it costs a fraction of an element-wise test)."""
        return math.isfinite(self.coef) and all(math.isfinite(_total(t))
                                                for t in (self.b, self.a, self.dense) if t is not None)

    def scaled_b(self) -> torch.Tensor:
        return self.b.to(WORK) * self.coef

    def matrix(self) -> torch.Tensor:
        if self.b is None:
            return self.dense
        return (self.scaled_b() @ self.a.to(WORK)).to(dense_dtype(self.b.shape[0] * self.a.shape[1]))


#: sums of 16-bit tensors in float32 (fast; cannot overflow from float16 values)
_SUM_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _total(t: torch.Tensor) -> float:
    """The sum of ``t``'s entries (16-bit in float32; float8, which has no CPU sum, widened first)."""
    if t.is_floating_point() and t.element_size() == 1:
        return float(t.float().sum())
    return float(t.sum(dtype=_SUM_DTYPE.get(t.dtype)))


def default_dtype(inputs: Sequence[MergeInput]) -> torch.dtype:
    """The floating dtype most of the inputs' factor tensors are stored in."""
    counts: Counter = Counter()
    for inp in inputs:
        for e in inp.lora.entries:
            for role, dt in e.dtypes.items():
                if role != "alpha" and dt in ("F16", "BF16", "F32", "F64"):
                    counts[dt] += 1
    name = counts.most_common(1)[0][0] if counts else "F16"
    return DTYPES[name][1] if name != "F64" else torch.float32


def _seed(seed: int, *parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(":".join(map(str, (seed, *parts))).encode()))


def _base_part(base: ModelWeights, target: Target, shape: tuple[int, ...]) -> torch.Tensor:
    w = base.get(target.key).to(WORK)
    if target.rows is not None:
        w = w[target.rows[0]:target.rows[0] + target.rows[1]]
    if target.swap_halves:
        half = w.shape[0] // 2
        w = torch.cat([w[half:], w[:half]])
    return w.reshape(shape)


def _term(source: int, inp: MergeInput, target: Target, adapter: Adapter, weight: float, layout: ModelLayout,
          base: ModelWeights | None) -> _Term:
    full = layout.shapes[target.key]
    rows = full[0] if len(full) else 1
    dense = dense_dtype(math.prod(full))
    if adapter.needs_base:
        if base is None or target.key not in base:
            what = "DoRA" if adapter.dora_scale is not None else "set_weight"
            raise LoraFormatError(
                f"{inp.title}: this module is {what}; its change depends on the base weight", key=target.key,
                hint="give the base model's weights (--base FILE, or connect the model) or leave this LoRA out")
        part_shape = (target.rows[1], *full[1:]) if target.rows is not None else tuple(full)
        w = _base_part(base, target, part_shape)
        d = (adapter.apply_to(w, weight) - w).reshape(part_shape[0], -1)
        return _Term(source, dense=row_placed(d.to(dense), target, rows))
    if len(full) < 2:
        return _Term(source, dense=row_placed(adapter.delta_flat(dense).reshape(-1, 1) * weight, target, rows))
    if isinstance(adapter, LoRA) and adapter.mid is None:  # the stored factors, their scale kept apart
        return _Term(source, b=row_placed(flat(adapter.up), target, rows), a=flat(adapter.down),
                     coef=weight * adapter.scale)
    if isinstance(adapter, LoKr):
        svd = lokr_svd(adapter)
        b, a = svd.u * (svd.s * adapter.scale), svd.vh
    else:
        lr = adapter.low_rank(WORK)
        if lr is None:
            return _Term(source, dense=row_placed(adapter.delta_flat(dense) * weight, target, rows))
        b, a = lr
    return _Term(source, b=row_placed(b, target, rows), a=a, coef=weight)


def _concat(terms: list[_Term]) -> tuple[LoRA, bool]:
    """The terms side by side as one LoRA, and whether its factors are the inputs' own values.

    A module has one alpha, so one coefficient (weight·alpha/rank) goes there: the one shared by
    most of the stacked rank up to a power of two. Every other term's ratio to it is multiplied
    into its up factor, which keeps the factor's values (exact in the inputs' dtype) only where the
    ratio is ± a power of two; otherwise the written up factor is rounded to the output dtype."""
    def mantissa(c: float) -> float:
        return abs(math.frexp(c)[0])
    rank_by: Counter = Counter()
    for t in terms:
        if t.coef != 0:
            rank_by[mantissa(t.coef)] += t.rank
    shared = rank_by.most_common(1)[0][0] if rank_by else None
    c = next((t.coef for t in terms if t.coef != 0 and mantissa(t.coef) == shared), 1.0)
    up = torch.cat([t.b.to(WORK) * (t.coef / c) for t in terms], 1)
    down = torch.cat([t.a.to(WORK) for t in terms], 0)
    kept = all(t.coef == 0 or mantissa(t.coef) == shared for t in terms)
    return LoRA(up=up, down=down, alpha=c * up.shape[1]), kept


def _low_rank_svd(terms: list[_Term], shape: tuple[int, int]) -> bool:
    """Whether the SVD of Σ terms comes from the stacked factors: every term has them and the stack
    is thinner than the matrix (otherwise from the dense sum)."""
    return all(t.b is not None for t in terms) and sum(t.rank for t in terms) < min(shape)


def _dense_svd_of_sum(terms: list[_Term], rule: RankRule, key: str, seed: int, exact: bool) -> SVD:
    parts = [t.matrix() for t in terms]
    scale = sum(float(p.norm()) for p in parts)
    return dense_svd(sum(parts), rule, exact=exact, generator=_seed(seed, "svd", key), scale=scale)


#: bytes of stacked factors gathered before their SVDs are taken together
_BATCH_BYTES = 32 << 20
#: most worker threads for the SVDs of stacked factors (each holds a batch)
_MAX_WORKERS = 8

_Merged = tuple[str, "LoRA | None", ModuleReport]


@dataclass
class _Pending:
    """One module waiting in a :class:`_Batches` for the SVD of its stacked factors."""

    key: str
    terms: list[_Term]
    n_inputs: int

    @property
    def width(self) -> int:
        return sum(t.rank for t in self.terms)


def _decompose(pending: list[_Pending], work: torch.dtype, rule: RankRule) -> list[_Merged]:
    """The merged modules of equally shaped stacks (:func:`svds_of_products`): factors stacked in
    ``work`` precision where their values are exact there (float64 otherwise)."""
    rows, cols, width = pending[0].terms[0].b.shape[0], pending[0].terms[0].a.shape[1], pending[0].width
    exact = all(torch.finfo(x.dtype).bits <= torch.finfo(work).bits for p in pending for t in p.terms for x in (t.b, t.a))
    dtype = work if exact else WORK
    b = torch.empty(len(pending), rows, width, dtype=dtype)
    a = torch.empty(len(pending), width, cols, dtype=dtype)
    coef = torch.empty(len(pending), width, dtype=WORK)
    for i, p in enumerate(pending):
        at = 0
        for t in p.terms:
            b[i, :, at:at + t.rank] = t.b
            a[i, at:at + t.rank] = t.a
            coef[i, at:at + t.rank] = t.coef
            at += t.rank
    return [(p.key, *_truncated(p.key, svd, p.n_inputs, width, "low-rank", rule))
            for p, svd in zip(pending, svds_of_products(b, a, coef, work))]


class _Batches:
    """Modules of an ``svd`` merge whose sums are taken from stacked factors: gathered by shape, up
    to :data:`_BATCH_BYTES`, so that equally shaped stacks are decomposed at once
    (:func:`_decompose`), on ``workers`` threads while the caller reads on. Use as a context
    manager; results come back from :meth:`add` and :meth:`drain` in the order batches finish."""

    def __init__(self, work: torch.dtype, rule: RankRule, workers: int) -> None:
        self.work, self.rule = work, rule
        self.groups: dict[tuple[int, int, int], list[_Pending]] = {}
        self.nbytes = 0
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="loralab-svd") if workers > 1 else None
        self.limit = workers
        self.running: deque[Future] = deque()

    def __enter__(self) -> "_Batches":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, key: str, terms: list[_Term], n_inputs: int) -> list[_Merged]:
        """Queue a module; returns the modules finished meanwhile."""
        p = _Pending(key, terms, n_inputs)
        rows, cols = terms[0].b.shape[0], terms[0].a.shape[1]
        self.groups.setdefault((rows, cols, p.width), []).append(p)
        self.nbytes += (rows + cols) * p.width * self.work.itemsize
        if self.nbytes < _BATCH_BYTES:
            return self._done()
        return self._submit() + self._done(keep=self.limit)

    def drain(self) -> list[_Merged]:
        """Every module still queued or running, finished."""
        return self._submit() + self._done(keep=0)

    def _submit(self) -> list[_Merged]:
        groups, self.groups, self.nbytes = self.groups, {}, 0
        if self.pool is None:
            return [m for pending in groups.values() for m in _decompose(pending, self.work, self.rule)]
        self.running.extend(self.pool.submit(_decompose, pending, self.work, self.rule) for pending in groups.values())
        return []

    def _done(self, keep: int | None = None) -> list[_Merged]:
        """The finished batches' modules, oldest batch first; waits while more than ``keep`` batches
        run (None: no wait)."""
        out: list[_Merged] = []
        while self.running and (self.running[0].done() or (keep is not None and len(self.running) > keep)):
            out += self.running.popleft().result()
        return out


def _trim(t: torch.Tensor, density: float) -> torch.Tensor:
    """``t`` with all but its top ``density`` fraction of entries (by magnitude) set to zero."""
    if density >= 1:
        return t
    keep = int(round(density * t.numel()))
    if keep <= 0:
        return torch.zeros_like(t)
    mag = t.abs().reshape(-1)
    threshold = torch.kthvalue(mag, mag.numel() - keep + 1).values
    return t * (t.abs() >= threshold)


def _sparsified(method: str, taus: list[torch.Tensor], density: float, seed: int, key: str,
                sources: list[int]) -> torch.Tensor:
    if method == "ties":
        trimmed = [_trim(t, density) for t in taus]
        sign = torch.sign(sum(trimmed))
        total = torch.zeros_like(trimmed[0])
        count = torch.zeros_like(trimmed[0])
        for t in trimmed:
            agree = (torch.sign(t) == sign) & (t != 0)
            total += t * agree
            count += agree
        return total / count.clamp_min(1)
    if method == "dare":
        p = 1 - density
        out = torch.zeros_like(taus[0])
        for t, src in zip(taus, sources):
            if p <= 0:
                out += t
                continue
            keep = torch.rand(t.shape, generator=_seed(seed, "dare", src, key), dtype=t.dtype) >= p
            out += t * keep / (1 - p)
        return out
    return sum(_trim(t, density) for t in taus)


def merge(inputs: Sequence[MergeInput], method: str = "svd", rule: RankRule | None = None, *,
          density: float = 0.5, seed: int = 0, base: ModelWeights | None = None, dtype: torch.dtype | None = None,
          title: str = "merged", progress: Progress | None = None, exact_dense: bool = True,
          extra_metadata: Mapping[str, str] | None = None) -> MergeResult:
    """Merge ``inputs`` with ``method`` at the ranks ``rule`` chooses (``concat`` takes no rule).

    Reads one module's tensors at a time; the result holds only the output tensors (in ``dtype``,
    by default the inputs' dtype). ``progress`` is called after every module (and may raise to
    cancel: nothing is written then). ``exact_dense`` chooses a full SVD for modules that need a
    dense ΔW in ``svd`` merges (a randomized one otherwise; sparsifying merges always use the
    randomized one).
    """
    if method not in METHODS:
        raise SpecError(f"unknown merge method {method!r}; use one of {', '.join(METHODS)}", key=method)
    if method != "concat" and rule is None:
        raise SpecError(f"{method} needs a rank: a fixed rank or a dynamic rule", key="rank")
    if not 0 < density <= 1:
        raise SpecError(f"density is the fraction of entries kept, in (0, 1]; got {density}", key="density")
    layout = common_layout(inputs, "merge")
    arch_id = layout.arch.id
    out_dtype = dtype or default_dtype(inputs)
    blocks = [inp.blocks(arch_id, layout) for inp in inputs]

    by_key, skipped = by_target(inputs)
    if not by_key:
        raise LoraFormatError(f"no module of {', '.join(inp.title for inp in inputs)} lands on a weight of "
                              f"{layout.arch.name}" + (f" ({skipped[0]}{', ...' if len(skipped) > 1 else ''})"
                                                       if skipped else ""),
                              hint="check that the LoRAs are for this model")
    order = {k: n for n, k in enumerate(layout.shapes)}
    keys = sorted(by_key, key=lambda k: order.get(k, len(order)))

    tensors: dict[str, torch.Tensor] = {}
    reports: dict[str, ModuleReport] = {}
    done = 0
    # factors of 16-bit outputs are stacked and multiplied in float32, whose error is far below their rounding
    work = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else WORK
    workers = min(torch.get_num_threads(), _MAX_WORKERS)

    def finished(key: str, adapter: Adapter | None, report: ModuleReport | None) -> None:
        nonlocal done
        if report is not None:
            reports[key] = report
        if adapter is not None:
            tensors.update(kohya_tensors([(Target(key), adapter)], layout, out_dtype))
        done += 1
        if progress is not None:
            progress(done, len(keys))

    # the low-rank methods work on thin matrices, where extra threads inside an operation only add contention
    with one_thread() if method not in SPARSIFYING else contextlib.nullcontext(), \
            _Batches(work, rule, workers if method == "svd" else 1) as batches:
        for key in keys:
            terms: list[_Term] = []
            for i, m in by_key[key]:
                w = inputs[i].weight * blocks[i].for_key(key)
                if w != 0:
                    terms.append(_term(i, inputs[i], m.target, inputs[i].lora.adapter(m.entry), w, layout, base))
                    if not terms[-1].finite():
                        raise LoraFormatError(non_finite(m.entry), path=inputs[i].lora.path, key=m.entry.module,
                                              hint="the file is damaged: leave it out")
            n_inputs = len({i for i, _ in by_key[key]})
            full = layout.shapes[key]
            if not terms:
                finished(key, None, None)
            elif method == "svd" and len(full) >= 2 and _low_rank_svd(terms, (full[0], math.prod(full[1:]))):
                for merged in batches.add(key, terms, n_inputs):
                    finished(*merged)
            else:
                finished(key, *_merge_module(key, terms, n_inputs, method, rule, layout, density, seed, exact_dense))
        for merged in batches.drain():
            finished(*merged)

    meta = _metadata(arch_id, tensors, inputs, method, rule, title, density, seed, out_dtype)
    meta.update(extra_metadata or {})
    return MergeResult(tensors, meta, [reports[k] for k in keys if k in reports], skipped, arch_id, method, rule)


def _merge_module(key: str, terms: list[_Term], n_inputs: int, method: str, rule: RankRule | None,
                  layout: ModelLayout, density: float, seed: int,
                  exact_dense: bool) -> tuple[Adapter | None, ModuleReport]:
    """One module's merged adapter (None where it cancels out) and report, for the modules not
    decomposed from stacked factors (those go through :class:`_Batches`)."""
    full = layout.shapes[key]
    low = all(t.b is not None for t in terms)
    rank_in = sum(t.rank for t in terms) if low else None
    if len(full) < 2:
        diff = sum(t.matrix() for t in terms).reshape(full)
        return Diff(diff=diff), ModuleReport(key, n_inputs, None, None, 1.0, "diff")
    if method == "concat":
        if low:
            lora, kept = _concat(terms)
            return lora, ModuleReport(key, n_inputs, rank_in, lora.rank, 1.0, "low-rank" if kept else SCALED_FACTORS)
        diff = sum(t.matrix() for t in terms).reshape(full)
        return Diff(diff=diff), ModuleReport(key, n_inputs, None, None, 1.0, "diff")
    if method == "svd":
        svd = _dense_svd_of_sum(terms, rule, key, seed, exact_dense)
    else:
        sources = sorted({t.source for t in terms})
        taus = [sum(t.matrix() for t in terms if t.source == s) for s in sources]
        merged = _sparsified(method, taus, density, seed, key, sources)
        svd = dense_svd(merged, rule, exact=False, power_iters=4, generator=_seed(seed, "svd", key))
    return _truncated(key, svd, n_inputs, rank_in, "dense", rule)


def _truncated(key: str, svd: SVD, n_inputs: int, rank_in: int | None, form: str,
               rule: RankRule) -> tuple[LoRA | None, ModuleReport]:
    """The best approximation at the rank ``rule`` keeps of ``svd`` (None for a zero matrix), and its report."""
    k = select_rank(svd, rule)
    if k == 0:
        return None, ModuleReport(key, n_inputs, rank_in, 0, 1.0, form)
    up, down = svd.factors(k)
    return LoRA(up=up, down=down, alpha=float(k)), ModuleReport(key, n_inputs, rank_in, k, svd.kept_energy(k), form)


def _metadata(arch_id: str, tensors: Mapping[str, torch.Tensor], inputs: Sequence[MergeInput], method: str,
              rule: RankRule | None, title: str, density: float, seed: int, dtype: torch.dtype) -> dict[str, str]:
    recipe: dict = {"tool": f"LoRA Lab {__version__}", "method": method,
                    "rank": None if method == "concat" or rule is None else rule.to_dict(),
                    "dtype": str(dtype).replace("torch.", ""), "inputs": [inp.recipe() for inp in inputs]}
    if method in SPARSIFYING:
        recipe.update(density=density, seed=seed)
    extra = {"modelspec.merged_from": ", ".join(inp.title for inp in inputs),
             "loralab.recipe": json.dumps(recipe, ensure_ascii=False)}
    return lora_metadata(arch_id, tensors, title=title, extra=extra, variant=common_variant(inputs))


def resize(inp: MergeInput, rule: RankRule, *, base: ModelWeights | None = None, dtype: torch.dtype | None = None,
           title: str | None = None, progress: Progress | None = None) -> MergeResult:
    """One LoRA at a smaller (or dynamic) rank: its best approximation per module. The input's
    metadata is kept where it still describes the file (training settings, tags, trigger words)."""
    result = merge([inp], "svd", rule, base=base, dtype=dtype, title=title or inp.title, progress=progress)
    kept = carried_metadata(inp.lora.metadata)
    recipe = json.loads(result.metadata["loralab.recipe"])
    recipe["method"] = "resize"
    ours = {k: v for k, v in result.metadata.items() if k != "modelspec.merged_from"}
    ours["loralab.recipe"] = json.dumps(recipe, ensure_ascii=False)
    result.metadata = {**kept, **ours}
    result.method = "resize"
    return result


__all__ = ["METHODS", "MergeInput", "MergeResult", "ModuleReport", "RankRule", "default_dtype", "merge", "resize"]
