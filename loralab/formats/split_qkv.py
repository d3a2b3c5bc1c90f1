"""kohya's ``split_qkv`` Flux LoRAs: one fused weight trained as separate low-rank parts.

With ``network_args = ["split_qkv=True"]`` kohya's sd-scripts train each of q, k and v of a double
block's fused ``qkv`` (and q, k, v and the MLP input of a single block's ``linear1``) as its own
rank-r LoRA scaled by alpha/r, and save them as one module of rank parts × r: the downs stacked, the
ups block-diagonal, one alpha. Every loader (ComfyUI's, kohya's own inference loader, LoRA Lab's by
default) scales that module by alpha/(parts × r): 1/3 (``qkv``) and 1/4 (``linear1``) of the
strength it was trained at. Multiplying those modules' alpha by their number of parts gives the
trained strength back.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch

_QKV = re.compile(r"(^|\.)double_blocks\.\d+\.(img|txt)_attn\.qkv\.weight$")
_LINEAR1 = re.compile(r"(^|\.)single_blocks\.\d+\.linear1\.weight$")


def declared(metadata: Mapping[str, str]) -> bool:
    """Whether kohya's ``ss_network_args`` says the file was trained with ``split_qkv=True``."""
    raw = metadata.get("ss_network_args")
    if not raw:
        return False
    try:
        args = json.loads(raw)
    except (TypeError, ValueError, RecursionError):  # hostile or broken metadata: not declared
        return False
    return isinstance(args, dict) and str(args.get("split_qkv", "")).strip().lower() == "true"


def network_dim(metadata: Mapping[str, str]) -> int | None:
    """kohya's global rank (``ss_network_dim``), None where absent or not a number ("Dynamic")."""
    try:
        return int(metadata.get("ss_network_dim", ""))
    except ValueError:
        return None


def part_rows(target_key: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Row counts of the parts kohya splits the Flux weight ``target_key`` of ``shape`` into
    (q, k, v; and the MLP input for ``linear1``), None for a weight it does not split."""
    if len(shape) != 2:
        return None
    if _QKV.search(target_key) and shape[0] % 3 == 0:
        return (shape[0] // 3,) * 3
    hidden = shape[1]
    if _LINEAR1.search(target_key) and shape[0] > 3 * hidden:
        return (hidden, hidden, hidden, shape[0] - 3 * hidden)
    return None


def block_diagonal(up: "torch.Tensor", rows: tuple[int, ...]) -> bool:
    """Whether ``up`` (out × rank) is block-diagonal with one rank/len(rows) column block per part of
    ``rows`` rows: the shape kohya writes, and the one that makes its per-part scale exact."""
    parts = len(rows)
    if up.dim() != 2 or up.shape[0] != sum(rows) or up.shape[1] % parts:
        return False
    r = up.shape[1] // parts
    start = 0
    for i, n in enumerate(rows):
        block = up[start:start + n]
        if block[:, :i * r].count_nonzero() or block[:, (i + 1) * r:].count_nonzero():
            return False
        start += n
    return True


def describe(parts: Mapping[str, int], ranks: Mapping[str, int], alphas: Mapping[str, float | None]) -> str:
    """One plain paragraph: which modules hold split parts, the scale they were trained at and the
    scale loaders apply."""
    by_parts: dict[int, list[str]] = {}
    for module, n in parts.items():
        by_parts.setdefault(n, []).append(module)
    pieces = []
    for n, modules in sorted(by_parts.items()):
        r = ranks[modules[0]]
        alpha = alphas.get(modules[0])
        trained = f"alpha/{r // n}" + (f" = {alpha / (r // n):g}" if alpha is not None else "")
        applied = f"alpha/{r}" + (f" = {alpha / r:g}" if alpha is not None else "")
        pieces.append(f"{len(modules)} module(s) of {n} rank-{r // n} parts (trained at {trained}, loaded at "
                      f"{applied}: 1/{n} of the trained strength)")
    return ("kohya split_qkv: " + "; ".join(pieces) + ". Load with split_qkv 'as trained', or save a corrected "
            "copy (merge, resize or convert with split_qkv 'as trained')")
