"""Rewrite a LoRA from any producer into ComfyUI-native kohya keys, one file or a whole folder.

A converted file has kohya module names, a per-module ``alpha``, true ``ss_network_*`` and
``modelspec.*`` metadata (the source's training metadata is carried over) and the same ΔW per
module, exactly: adapters are written as they are, pieces of a fused weight joined into its rows.
A file ComfyUI drops (diffusers/PEFT Wan, diffusers-dreambooth SDXL, XLabs Flux) becomes one it loads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch

from .. import __version__
from ..errors import LoRALabError, LoraFormatError
from ..formats.writer import carried_metadata, kohya_tensors, lora_metadata
from ..layouts import ModelLayout
from ..lora import Lora
from .inputs import MergeInput, common_layout
from .merge import default_dtype
from .results import MergeResult, ModuleReport

SUFFIX = ".safetensors"


def convert(lora: Lora, *, title: str, dtype: torch.dtype | None = None,
            extra_metadata: Mapping[str, str] | None = None, split_qkv: str | None = None) -> MergeResult:
    """``lora`` (a LORA_MODEL from a trainer, a file in any naming) as a kohya-format LoRA with true
    metadata. Exact; refuses, listing them, when some modules or keys cannot be placed.
    ``split_qkv``: how a kohya split_qkv file's strength was written ("as loaded"/"as trained"),
    recorded in the recipe."""
    inp = MergeInput(lora, title=title)
    layout = common_layout([inp], "convert")
    problems = [f"{m.entry.module} ({m.reason})" for m in lora.unmapped()]
    problems += [f"key {k} (not a LoRA key this tool knows)" for k in lora.unrecognized]
    problems += [f"key {k} (belongs to no complete module)" for k in lora.orphans]
    if problems:
        raise LoraFormatError(f"{len(problems)} modules cannot be written: " + "; ".join(problems[:5])
                              + (" ..." if len(problems) > 5 else ""), path=lora.path,
                              hint="connect the model this LoRA is for, so its layout is known")
    tensors = kohya_tensors([(m.target, lora.adapter(m.entry)) for m in lora.mapped()], layout,
                            dtype or default_dtype([inp]))
    recipe = {"tool": f"LoRA Lab {__version__}", "method": "convert", "source_format": lora.detection.format}
    if split_qkv:
        recipe["split_qkv"] = split_qkv
    meta = lora_metadata(layout.arch.id, tensors, title=title, variant=lora.detection.arch_variant,
                         extra={"loralab.recipe": json.dumps(recipe), **(extra_metadata or {})})
    modules = [ModuleReport(m.target.key, 1, m.entry.rank(), m.entry.rank(), 1.0, m.entry.kind) for m in lora.mapped()]
    return MergeResult(tensors, meta, modules, [], layout.arch.id, "convert", None)


def convert_file(path: str | os.PathLike, layout: ModelLayout | None = None, *, split_qkv_as_trained: bool = False,
                 dtype: torch.dtype | None = None) -> MergeResult:
    """A LoRA file converted (see :func:`convert`), keeping its title and training metadata;
    ``split_qkv_as_trained`` writes a kohya split_qkv file at the strength it was trained at."""
    with Lora.open(path, layout) as lora:
        inp = MergeInput(lora)
        if split_qkv_as_trained:
            inp.split_qkv_as_trained()
        kept = carried_metadata(lora.metadata)
        kept.pop("modelspec.title", None)
        kept.pop("ss_output_name", None)
        return convert(lora, title=inp.title, dtype=dtype, extra_metadata=kept, split_qkv=inp.split_qkv)


def lora_files(paths: list[str], recursive: bool = False) -> Iterator[tuple[str, str]]:
    """(file, its path relative to the folder it was found in) for each ``.safetensors`` file given
    or inside a folder given (sub-folders with ``recursive``), in name order; links to folders are
    not followed."""
    for given in paths:
        if not os.path.isdir(given):
            yield given, os.path.basename(given)
            continue
        for root, dirs, files in os.walk(given):
            dirs[:] = sorted(d for d in dirs if recursive and not os.path.islink(os.path.join(root, d)))
            for name in sorted(files):
                if name.lower().endswith(SUFFIX):
                    full = os.path.join(root, name)
                    yield full, os.path.relpath(full, given)


@dataclass
class Converted:
    """One file of a batch: where it was written, or why not."""

    source: str
    output: str | None = None
    error: str | None = None
    modules: int = 0


def convert_folder(paths: list[str], out_dir: str, *, recursive: bool = False, suffix: str = "",
                   overwrite: bool = False, layout: ModelLayout | None = None, split_qkv_as_trained: bool = False,
                   dtype: torch.dtype | None = None) -> Iterator[Converted]:
    """Convert every LoRA file given or found in the folders given into ``out_dir`` (same relative
    names, ``suffix`` added to each stem); a file that cannot be converted is reported and skipped,
    the rest go on. Never overwrites unless asked; an output that would replace its own source is refused."""
    for source, relative in lora_files(paths, recursive):
        stem, _ = os.path.splitext(relative)
        output = os.path.join(out_dir, stem + suffix + SUFFIX)
        if os.path.exists(output) and os.path.samefile(output, source):
            yield Converted(source, error=f"would replace its own source {output}: give another folder or a suffix")
            continue
        try:
            result = convert_file(source, layout, split_qkv_as_trained=split_qkv_as_trained, dtype=dtype)
            os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
            yield Converted(source, result.save(output, overwrite=overwrite), modules=len(result.modules))
        except (LoRALabError, OSError) as e:  # a broken, hostile or unreadable file: the batch goes on
            yield Converted(source, error=str(e))
