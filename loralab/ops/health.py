"""Health checks: what is broken or suspicious in a LoRA file, each finding with a one-line reason.

Header-level checks (:func:`header_warnings`, no tensor data read) cover alphas, rank and alpha
against ``ss_network_dim``/``ss_network_alpha``, metadata claiming another base model, keys that
land nowhere, and duplicate targets. Tensor-level checks (:class:`TensorChecks`, fed one module
at a time while its tensors are in memory anyway) find NaN/Inf values and all-zero modules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ..files.safetensors import round_to_dtype
from ..formats import split_qkv
from ..formats.keys import Entry
from ..formats.metadata import Metadata
from ..formats.not_lora import not_a_lora, use_instead
from ..lora import Lora, MappedEntry

if TYPE_CHECKING:
    import torch

#: a scale alpha/rank above this is reported (kohya's default is 1 or below; 2 is common)
FAR_ABOVE_RANK = 16.0
#: network_args that give per-block or per-module ranks: no global rank/alpha to compare against
PER_MODULE_RANK_ARGS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas", "in_dims", "emb_dims",
                        "module_algo_map", "name_algo_map")
#: items listed per warning in reports (the count is always complete)
MAX_ITEMS = 50


@dataclass
class HealthWarning:
    """One kind of problem, the modules or keys it affects, and a one-line reason."""

    code: str
    message: str
    items: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "count": len(self.items), "items": self.items[:MAX_ITEMS]}


def _warning(code: str, items: list[str], message: str) -> list[HealthWarning]:
    return [HealthWarning(code, message, items)] if items else []


def _fmt(x: float) -> str:
    return f"{x:g}"


def _alpha_warnings(entries: list[Entry]) -> list[HealthWarning]:
    nonfinite, not_positive, far, ignored = [], [], [], []
    for e in entries:
        if e.alpha is None or not e.supported or not e.algorithm_spec.weighted:
            continue
        r = e.rank()
        if not math.isfinite(e.alpha):
            nonfinite.append(f"{e.module}: alpha {e.alpha}")
        elif e.alpha <= 0:
            not_positive.append(f"{e.module}: alpha {_fmt(e.alpha)}")
        elif r is None and e.alpha > FAR_ABOVE_RANK:
            ignored.append(f"{e.module}: alpha {_fmt(e.alpha)}")
        elif r and e.alpha / r > FAR_ABOVE_RANK:
            far.append(f"{e.module}: alpha {_fmt(e.alpha)}, rank {r}")
    return (_warning("alpha_nonfinite", nonfinite, f"{len(nonfinite)} module(s) store a NaN/Inf alpha (an fp16 "
                     "overflow?): every loader that applies it writes NaN/Inf into the model")
            + _warning("alpha_not_positive", not_positive, f"{len(not_positive)} module(s) have alpha <= 0: "
                       "the update is switched off or inverted")
            + _warning("alpha_far_above_rank", far, f"{len(far)} module(s) have alpha more than "
                       f"{FAR_ABOVE_RANK:g}x their rank: the update is scaled up that much")
            + _warning("alpha_ignored", ignored, f"{len(ignored)} full-dimension LoKr module(s) store a large alpha "
                       "that ComfyUI and LyCORIS ignore (scale 1); tools dividing it by a rank would blow them up"))


def _is_wide_conv(m: MappedEntry, lora: Lora) -> bool:
    """A k×k convolution with k > 1 (where kohya and LyCORIS use conv_dim/conv_alpha)."""
    shape: tuple[int, ...] = ()
    if m.target is not None and lora.layout is not None:
        shape = lora.layout.shapes.get(m.target.key, ())
    if not shape:
        shape = m.entry.shapes.get("down", m.entry.shapes.get("w1b", ()))
    return len(shape) == 4 and shape[2] * shape[3] > 1


def _as_number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _metadata_warnings(lora: Lora, md: Metadata) -> list[HealthWarning]:
    dim = md.get("ss_network_dim")
    alpha = _as_number(md.get("ss_network_alpha"))
    if not isinstance(dim, int) or isinstance(dim, bool):
        return []  # absent, "Dynamic" (resized) or unreadable: nothing to compare against
    args = md.get("ss_network_args")
    args = args if isinstance(args, dict) else {}
    if any(k in args for k in PER_MODULE_RANK_ARGS):
        return []
    lycoris = "lycoris" in str(md.get("ss_network_module") or "")
    conv_dim = _as_number(args.get("conv_dim"))
    conv_alpha = _as_number(args.get("conv_alpha"))
    if lycoris:
        conv_dim = dim if conv_dim is None else conv_dim
        conv_alpha = alpha if conv_alpha is None else conv_alpha
    elif conv_dim is not None and conv_alpha is None:
        conv_alpha = 1.0  # kohya's default when only conv_dim is given
    ranks, alphas = [], []
    split = lora.split_qkv()
    for m in lora.items:
        e = m.entry
        r = e.rank()
        if not e.supported or r is None:
            continue
        if e.module in split:
            r //= split[e.module]  # one part's rank: what ss_network_dim gives
        wide = _is_wide_conv(m, lora)
        want_rank = conv_dim if wide else dim
        want_alpha = conv_alpha if wide else alpha
        if want_rank is not None and r != int(want_rank):
            ranks.append(f"{e.module}: rank {r}, metadata says {int(want_rank)}")
        if e.alpha is not None and want_alpha is not None and math.isfinite(e.alpha):
            expected = round_to_dtype(want_alpha, e.dtypes.get("alpha", "F32"))
            if e.alpha != expected:
                alphas.append(f"{e.module}: alpha {_fmt(e.alpha)}, metadata says {_fmt(want_alpha)}")
    what = "conv_dim/ss_network_dim" if conv_dim is not None else "ss_network_dim"
    return (_warning("rank_vs_metadata", ranks, f"{len(ranks)} module(s) have a rank other than {what} "
                     f"({dim}): the metadata's global rank is wrong for them")
            + _warning("alpha_vs_metadata", alphas, f"{len(alphas)} module(s) have an alpha other than "
                       f"ss_network_alpha ({_fmt(alpha) if alpha is not None else md.get('ss_network_alpha')}): "
                       "the metadata's global alpha is wrong for them"))


def _duplicate_targets(lora: Lora) -> list[HealthWarning]:
    by_key: dict[str, list[tuple[int, int, str]]] = {}
    for m in lora.mapped():
        t = m.target
        start, length = t.rows if t.rows is not None else (0, 1 << 62)
        by_key.setdefault(t.key, []).append((start, start + length, m.entry.module))
    items = []
    for key, spans in by_key.items():
        spans.sort()
        for (s1, e1, m1), (s2, e2, m2) in zip(spans, spans[1:]):
            if s2 < e1:
                items.append(f"{key}: {m1} and {m2}")
    return _warning("duplicate_target", items, f"{len(items)} weight(s) are written by two modules: both are "
                    "added, so that weight gets the update twice (for example lora_te_ and lora_te1_ copies)")


def _unmapped_warnings(lora: Lora) -> list[HealthWarning]:
    unknown = list(lora.unrecognized) + list(lora.orphans)
    mismatch, broken, nowhere = [], [], []
    for m in lora.unmapped():
        e = m.entry
        label = f"{e.module} ({m.reason})"
        if e.problem is not None:
            broken.append(label)
        elif m.target is not None:
            mismatch.append(label)
        else:
            nowhere.append(e.module)
    where = lora.layout.arch.name if lora.layout is not None else "any known model"
    kind = lora.detection.not_lora
    if kind is not None:
        return _warning("not_a_lora", unknown, f"{not_a_lora(kind)}: none of its {len(unknown)} keys is a LoRA "
                        f"tensor ({use_instead(kind)})")
    return (_warning("unknown_keys", unknown, f"{len(unknown)} key(s) match no LoRA tensor naming LoRA Lab "
                     "knows: they are ignored")
            + _warning("unmapped_modules", nowhere, f"{len(nowhere)} module(s) name no weight of {where}: "
                       "they change nothing")
            + _warning("size_mismatch", mismatch, f"{len(mismatch)} module(s) do not fit their weight's size")
            + _warning("broken_module", broken, f"{len(broken)} module(s) are incomplete or malformed"))


def _split_qkv_warnings(lora: Lora) -> list[HealthWarning]:
    parts = lora.split_qkv()
    if not parts:
        return []
    entries = {e.module: e for e in lora.entries if e.module in parts}
    message = split_qkv.describe(parts, {k: e.rank() or 0 for k, e in entries.items()},
                                 {k: e.alpha for k, e in entries.items()})
    return _warning("split_qkv", [f"{k}: {n} parts" for k, n in parts.items()], message)


def header_warnings(lora: Lora, md: Metadata) -> list[HealthWarning]:
    """Every problem visible from the header and alpha scalars alone."""
    det = lora.detection
    arch = []
    if det.metadata_arch and det.arch and det.metadata_arch != det.arch:
        arch = [w for w in det.warnings if w.startswith("metadata says")]
    unknown_arch = [w for w in det.warnings if "fit no known" in w]
    return (_warning("arch_mismatch", arch, arch[0] if arch else "")
            + _warning("unknown_arch", unknown_arch, unknown_arch[0] if unknown_arch else "")
            + _alpha_warnings(lora.entries)
            + _metadata_warnings(lora, md)
            + _split_qkv_warnings(lora)
            + _duplicate_targets(lora)
            + _unmapped_warnings(lora))


def adapter_tensors(adapter: object) -> list[torch.Tensor]:
    """The tensors an adapter holds (factors, diffs, dora_scale)."""
    import torch
    return [v for f in fields(adapter) if isinstance(v := getattr(adapter, f.name), torch.Tensor)]


def all_finite(t: torch.Tensor) -> bool:
    """Whether ``t`` holds no NaN and no ±Inf: its minimum and maximum, which propagate NaN, are
    finite. One vectorised pass without a temporary (``torch.isfinite`` on 16-bit floats is slow on
    CPU); float8 is widened to float32 first, other dtypes are finite by nature."""
    import torch
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = t.float()
    lo, hi = torch.aminmax(t.reshape(-1))
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


@dataclass
class TensorChecks:
    """Tensor-level findings, collected one module at a time."""

    nonfinite: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)

    def check(self, entry: Entry, tensors: list[torch.Tensor], norm: float | None) -> None:
        """Record NaN/Inf values in ``tensors`` and an all-zero update (``norm`` == 0)."""
        if not all(all_finite(t) for t in tensors):
            self.nonfinite.append(entry.module)
        elif norm == 0.0:
            self.zero.append(entry.module)

    def warnings(self) -> list[HealthWarning]:
        return (_warning("nonfinite_values", self.nonfinite, f"{len(self.nonfinite)} module(s) contain NaN or Inf "
                         "values: applying them ruins the model's output")
                + _warning("all_zero", self.zero, f"{len(self.zero)} module(s) have an all-zero update: they change "
                           "nothing (saved before training, or zeroed)"))
