"""Write LoRAs that A1111/Forge, kohya, Civitai and ComfyUI all read: kohya key names, per-module
``alpha``, kohya ``ss_*`` and SAI ``modelspec.*`` metadata (every value a string).

Input is a list of (Target, Adapter) pairs in canonical keys. Adapters that write row slices of
one fused weight (diffusers/ai-toolkit Flux ``to_q``/``to_k``/``to_v``) are joined exactly into one
kohya module on the fused weight: the down matrices stacked, the up matrices block-diagonal.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from collections import defaultdict
from typing import Iterable, Mapping

import torch

from ..adapters import Adapter, Diff, LoRA, dora
from ..adapters.base import ALPHA_SUFFIX
from ..adapters.diff import DIFF
from ..errors import LoraFormatError
from ..files.hashes import LEGACY_OFFSET, StreamHasher
from ..files.safetensors import TORCH_TO_NAME, SafetensorsWriter
from ..layouts import DIFFUSION_PREFIX, ModelLayout, Target
from .keys import group_keys
from ..layouts.archs import arch, arch_variant

SAI_MODEL_SPEC_VERSION = "1.0.1"
#: entry kinds that make a file a LyCORIS network (``ss_network_module = lycoris.kohya``)
LYCORIS_KINDS = ("loha", "lokr")


def kohya_module_name(module: str, layout: ModelLayout) -> str:
    """The kohya name of a canonical module (``lora_unet_...``, ``lora_te1_...``)."""
    a = layout.arch
    if module.startswith(DIFFUSION_PREFIX):
        name = module[len(DIFFUSION_PREFIX):]
        if a.kohya_diffusers_names:
            name = layout.diffusers_name(module) or name
        return "lora_unet_" + name.replace(".", "_")
    te, sep, inner = module.partition(".transformer.")
    if not sep or te not in a.kohya_te_prefix:
        raise LoraFormatError(f"{a.name} has no text encoder for this module", key=module)
    return a.kohya_te_prefix[te] + inner.replace(".", "_")


def row_placed(m: torch.Tensor, target: Target, full_rows: int) -> torch.Tensor:
    """``m`` (rows in the producer's order, for the part of the weight ``target`` covers) as rows of
    the whole weight: halves swapped where the producer orders them the other way, zero rows
    elsewhere. Works for an up matrix B (so B·A is placed exactly) and for a dense ΔW."""
    if target.swap_halves:
        half = m.shape[0] // 2
        m = torch.cat([m[half:], m[:half]])
    if target.rows is None:
        return m
    start, length = target.rows
    padded = m.new_zeros(full_rows, *m.shape[1:])
    padded[start:start + length] = m
    return padded


def _fuse(pieces: list[tuple[Target, Adapter]], full_rows: int) -> LoRA:
    """One LoRA on the fused weight equal to the row-sliced pieces (exact; rank = sum of ranks)."""
    ups, downs = [], []
    for target, adapter in pieces:
        lr = adapter.low_rank(torch.float32)
        if lr is None or adapter.needs_base:
            raise LoraFormatError(f"{adapter.kind} pieces of a fused weight cannot be joined exactly", key=target.key)
        b, a_ = lr
        ups.append(row_placed(b, target, full_rows))
        downs.append(a_)
    up = torch.cat(ups, dim=1)
    down = torch.cat(downs, dim=0)
    return LoRA(up=up, down=down, alpha=float(down.shape[0]))


def kohya_tensors(items: Iterable[tuple[Target, Adapter]], layout: ModelLayout,
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a kohya-format LoRA file for these adapters (canonical targets), floating ones
    in ``dtype`` but an alpha that ``dtype`` would round (kept in float32)."""
    by_key: dict[str, list[tuple[Target, Adapter]]] = defaultdict(list)
    for target, adapter in items:
        by_key[target.key].append((target, adapter))
    out: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor) -> None:
        if name in out:
            raise LoraFormatError("two adapters write the same weight", key=name)
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            narrowed = t.to(dtype)
            # an alpha the dtype cannot hold (a merge's weight·scale) stays float32: loaders read it as a number
            keep = name.endswith(ALPHA_SUFFIX) and float(narrowed) != float(t)
            t = t.to(torch.float32) if keep else narrowed
        out[name] = t

    for key, pieces in by_key.items():
        module, param = key.rsplit(".", 1)
        name = kohya_module_name(module, layout)
        if param == "bias":
            if len(pieces) != 1 or not isinstance(pieces[0][1], Diff):
                raise LoraFormatError("a bias can only take one full difference", key=key)
            put(name + DIFF.suffix("diff_b"), pieces[0][1].diff)
            continue
        shape = layout.shapes[key]
        if len(pieces) > 1 or pieces[0][0].rows is not None or pieces[0][0].swap_halves:
            adapter: Adapter = _fuse(pieces, shape[0])
        else:
            adapter = pieces[0][1]
        try:
            written = adapter.file_tensors(shape)
        except NotImplementedError:
            raise LoraFormatError(f"cannot write a {adapter.kind} adapter", key=key) from None
        for suffix, t in written.items():
            put(name + suffix, t)
        if adapter.dora_scale is not None:
            put(name + dora.SUFFIX, adapter.dora_scale)
    return out


def _uniform(values: list[float]) -> str:
    if not values:
        return "None"
    return str(values[0]) if all(math.isclose(v, values[0]) for v in values) else "Dynamic"


def network_facts(tensors: Mapping[str, torch.Tensor]) -> tuple[str, str, str]:
    """(ss_network_module, ss_network_dim, ss_network_alpha) that are true for these kohya tensors:
    one value where every module agrees, ``Dynamic`` where they differ."""
    parsed = group_keys({k: tuple(t.shape) for k, t in tensors.items()},
                        {k: TORCH_TO_NAME.get(t.dtype, "") for k, t in tensors.items()})
    ranks = [r for e in parsed.entries if (r := e.rank()) is not None]
    lycoris = any(e.kind in LYCORIS_KINDS for e in parsed.entries)
    alphas = [float(t.float()) for k, t in tensors.items() if k.endswith(ALPHA_SUFFIX)]
    dim = _uniform([float(r) for r in ranks])
    if dim not in ("Dynamic", "None"):
        dim = str(int(float(dim)))
    return ("lycoris.kohya" if lycoris else ""), dim, _uniform(alphas)


#: metadata that no longer describes a file once its tensors are rewritten: hashes, network facts, recipes
_STALE_PREFIXES = ("sshs_", "modelspec.hash_", "ss_network_", "loralab.")


def carried_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The metadata of a LoRA that stays true when its tensors are rewritten (training settings,
    tags, trigger words): everything but hashes, ``ss_network_*`` and LoRA Lab's own recipe."""
    return {k: v for k, v in metadata.items() if not k.startswith(_STALE_PREFIXES)}


def lora_metadata(arch_id: str, tensors: Mapping[str, torch.Tensor], *, title: str,
                  resolution: tuple[int, int] | None = None, prediction_type: str | None = None,
                  trigger_phrase: str | None = None, extra: Mapping[str, str] | None = None,
                  date: _dt.datetime | None = None, variant: str | None = None) -> dict[str, str]:
    """kohya ``ss_*`` and SAI ``modelspec.*`` metadata that describe these tensors truthfully;
    ``variant``: the label of the release of ``arch_id`` they are for (Flux.1 "Kontext"...), named
    in the base model strings."""
    a = arch(arch_id)
    named = arch_variant(arch_id, variant) or a
    module, dim, alpha = network_facts(tensors)
    when = (date or _dt.datetime.now()).replace(microsecond=0)
    meta = {
        "ss_network_module": module or a.kohya_network_module,
        "ss_network_dim": dim,
        "ss_network_alpha": alpha,
        "ss_base_model_version": named.ss_base_model_version,
        "ss_v2": str(arch_id == "sd2"),
        "ss_output_name": title,
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": named.modelspec_architecture,
        "modelspec.implementation": a.modelspec_implementation,
        "modelspec.title": title,
        "modelspec.date": when.isoformat(),
    }
    if resolution is not None:
        meta["ss_resolution"] = f"({resolution[0]}, {resolution[1]})"
        meta["modelspec.resolution"] = f"{resolution[0]}x{resolution[1]}"
    if prediction_type:
        meta["modelspec.prediction_type"] = prediction_type
    if trigger_phrase:
        meta["modelspec.trigger_phrase"] = trigger_phrase
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else str(v)
    return meta


def save_lora(path: str | os.PathLike, items: Iterable[tuple[Target, Adapter]], layout: ModelLayout,
              metadata: Mapping[str, str], *, dtype: torch.dtype | None = None, overwrite: bool = False) -> str:
    """Write a kohya-format LoRA file atomically; never overwrites unless asked."""
    tensors = kohya_tensors(items, layout, dtype)
    with SafetensorsWriter(path, overwrite=overwrite) as w:
        for name in sorted(tensors):
            w.add(name, tensors[name])
        return w.finish(metadata)


#: the hashes :func:`save_with_hashes` embeds, with placeholders of their final length
HASH_PLACEHOLDERS = {"sshs_model_hash": "0" * 64, "modelspec.hash_sha256": "0x" + "0" * 64, "sshs_legacy_hash": "0" * 8}


def save_with_hashes(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *,
                     overwrite: bool = False) -> str:
    """Write a LoRA file (atomic; never overwrites unless asked) whose metadata holds its own
    hashes, equal to what :mod:`loralab.files.hashes` computes from the finished file:
    ``sshs_model_hash`` and ``modelspec.hash_sha256`` (the addnet / AutoV3 hash of the tensor data;
    the second with SAI's ``0x`` prefix) and ``sshs_legacy_hash`` (A1111's old hash of the 64 KiB at
    1 MiB; left out when the header reaches into those bytes, since no value could then equal the
    file's). The tensor data is hashed as spooled, before the header is written: with placeholders
    of the values' length the header, and so where the data begins, is known in advance. The
    whole-file sha256 (AutoV2) cannot be inside the file it hashes."""
    with SafetensorsWriter(path, overwrite=overwrite) as w:
        for name, t in tensors.items():
            w.add(name, t)
        data_start = w.data_start({**metadata, **HASH_PLACEHOLDERS})
        stream = StreamHasher(data_start, start=data_start, whole=False).feed(w.data_chunks())
        meta = {**metadata, "sshs_model_hash": stream.addnet, "modelspec.hash_sha256": "0x" + stream.addnet}
        if data_start <= LEGACY_OFFSET:
            meta["sshs_legacy_hash"] = stream.legacy_hash
        else:
            meta.pop("sshs_legacy_hash", None)
        return w.finish(meta)
