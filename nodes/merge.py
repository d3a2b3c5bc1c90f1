"""Merge, resize, extract, save and bake LoRAs: thin nodes over loralab.ops.merge / extract / bake.

LoRAs come out as a ``LORA_MODEL`` (a kohya-format state dict that core's "Load LoRA Model"
accepts) and, when an output name is given, as a new file in ``loras/`` (never overwriting).
Every long loop reports progress and stops between modules when the user cancels; a cancelled
run writes nothing.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from comfy_api.latest import io

from ..loralab.files.paths import sanitize_output_name, unused_path
from ..loralab.lora import Lora
from ..loralab.ops.bake import baked_weights
from ..loralab.ops.extract import extract
from ..loralab.ops.lowrank import RANK_MODES, RankRule
from ..loralab.ops.convert import convert
from ..loralab.ops.merge import METHODS, MergeInput, MergeResult, merge, resize
from .common import CATEGORY, SPLIT_QKV, advanced, display_name, node_id, split_qkv_input, unlisted
from .host.folders import lora_names, output_folder, picked_lora, picked_stamp
from .host.models import effective_weights, model_layout, required_layout
from .host.progress import progress_callback

MERGE_CATEGORY = f"{CATEGORY}/Merge"
MergeList = io.Custom("LORALAB_MERGE_LIST")
NONE = "None"
DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

LORA_TIP = "a LoRA file (.safetensors) from the loras folders"
WEIGHT_TIP = "how much of this LoRA goes into the result (1 as trained; negative subtracts it)"
SPEC_TIP = ("weight per absolute block of this LoRA: empty = all 1; a preset name, an LBW vector or items such as "
            "'IN=0, OUT=1' (as on the loader)")
_RANK_TIP = ("fixed: every module gets this rank. sv_fro: per module the smallest rank keeping this fraction of "
             "the Frobenius energy Σσ². sv_ratio: keep σ ≥ σ₁/threshold. sv_cumulative: the smallest rank whose "
             "Σσ reaches this fraction")


def _rank_inputs(default_rank: int) -> list:
    return [
        io.Combo.Input("rank_mode", options=list(RANK_MODES), default="fixed", tooltip=_RANK_TIP),
        io.Int.Input("rank", default=default_rank, min=1, max=4096,
                     tooltip="fixed: the rank of every module (16-64 is usual); dynamic modes: the largest rank a module "
                             "may get"),
        io.Float.Input("threshold", default=0.95, min=0.0, max=100000.0, step=0.001,
                       tooltip="dynamic modes only: sv_fro / sv_cumulative a fraction in (0, 1] (0.9-0.99 is usual); "
                               "sv_ratio a ratio ≥ 1 (e.g. 10)"),
    ]


def _rule(rank_mode: str, rank: int, threshold: float) -> RankRule:
    if rank_mode == "fixed":
        return RankRule.from_options(rank)
    return RankRule.from_options(max_rank=rank, **{rank_mode: threshold})


def _output_inputs() -> list:
    return [
        io.String.Input("output_name", default="", placeholder="empty: do not save a file",
                        tooltip="save the LoRA as loras/<name>.safetensors (a new name is picked if it exists)"),
        advanced(io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                tooltip="dtype of the written tensors (auto: the inputs' dtype; fp16 for "
                                        "extraction); fp16 is usual")),
    ]


def _lora_outputs() -> list:
    return [io.LoraModel.Output(display_name="lora"), io.String.Output(display_name="file_name"),
            io.String.Output(display_name="report")]


def _save(result: MergeResult, output_name: str) -> str:
    """Save into the loras folder under a new name; returns the name relative to that folder."""
    if not output_name.strip():
        return ""
    folder = output_folder("loras")
    path = unused_path(folder, sanitize_output_name(output_name, default="merged_lora"))
    result.save(path)
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _title(output_name: str, default: str | None) -> str | None:
    """The title a result gets: the output file's name, else ``default``."""
    return os.path.splitext(os.path.basename(output_name.strip()))[0] or default


def _report(result: MergeResult, saved: str) -> str:
    return result.report() + (f"\nfile: loras/{saved}" if saved else "")


def _outputs(result: MergeResult, output_name: str) -> io.NodeOutput:
    saved = _save(result, output_name)
    report = _report(result, saved)
    return io.NodeOutput(result.tensors, saved, report, ui={"text": [report]})


def _inputs_from(items, layout, split_qkv: str) -> list[MergeInput]:
    inputs = [MergeInput.open(picked_lora(item["lora_name"]), item["weight"], item["block_weights"], layout)
              for item in items]
    if split_qkv == "as trained":
        for inp in inputs:
            inp.split_qkv_as_trained()
    return inputs


class _PicksOneLora(io.ComfyNode):
    """A node that reads one LoRA named by its ``lora_name`` input."""

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None) -> bool | str:
        return unlisted({"lora_name": lora_name}, lora_names())

    @classmethod
    def fingerprint_inputs(cls, lora_name: str | None = None, **kwargs: Any) -> Any:
        """Size and modification time of the file: an edited file is read again, an unchanged one not."""
        return picked_stamp(lora_name)


class LoRALabMergeInput(_PicksOneLora):
    """One LoRA, its weight and block weights, added to a merge list (chain as many as needed)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("MergeInput"), display_name=display_name("LoRA to Merge"), category=MERGE_CATEGORY,
            description="Adds a LoRA with its weight and block weights to a merge list; chain these into "
                        "Merge LoRAs or Bake LoRAs to merge any number.",
            inputs=[
                io.Combo.Input("lora_name", options=lora_names(), tooltip=LORA_TIP),
                io.Float.Input("weight", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=WEIGHT_TIP),
                io.String.Input("block_weights", default="", tooltip=SPEC_TIP),
                MergeList.Input("merge_list", optional=True, tooltip="the list to extend"),
            ],
            outputs=[MergeList.Output(display_name="merge_list")],
        )

    @classmethod
    def execute(cls, lora_name, weight, block_weights, merge_list=None) -> io.NodeOutput:
        item = {"lora_name": lora_name, "weight": float(weight), "block_weights": block_weights}
        return io.NodeOutput(tuple(merge_list or ()) + (item,))


class LoRALabMerge(io.ComfyNode):
    """Merge LoRAs into one: exactly (concat), at a target or dynamic rank (svd), or with TIES/DARE."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        names = lora_names()
        return io.Schema(
            node_id=node_id("Merge"), display_name=display_name("Merge LoRAs"), category=MERGE_CATEGORY,
            description="Merges LoRAs (any format, one base model) into one kohya-format LoRA. concat is exact "
                        "(rank = sum of ranks; in fp16 too where a module's inputs share weight·alpha/rank up to "
                        "a power of two, otherwise only with dtype fp32); svd gives the best approximation at the chosen rank without "
                        "building ΔW; ties / dare / magnitude are sparsifying merges on ΔW (lossy).",
            inputs=[
                io.Combo.Input("lora_name_1", options=names, tooltip=LORA_TIP),
                io.Float.Input("weight_1", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=WEIGHT_TIP),
                io.String.Input("block_weights_1", default="", tooltip=SPEC_TIP),
                io.Combo.Input("lora_name_2", options=[NONE, *names], default=NONE,
                               tooltip="a second LoRA for the same base model; None: only the first and the list"),
                io.Float.Input("weight_2", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=WEIGHT_TIP),
                io.String.Input("block_weights_2", default="", tooltip=SPEC_TIP),
                io.Combo.Input("method", options=list(METHODS), default="svd",
                               tooltip="svd (usual): the best approximation at the chosen rank; concat: exact, the "
                                       "rank is the sum of the ranks (rank inputs ignored); ties / dare / magnitude: "
                                       "sparsifying merges (lossy, see density)"),
                *_rank_inputs(32),
                advanced(io.Float.Input("density", default=0.5, min=0.01, max=1.0, step=0.01,
                                        tooltip="ties / dare / magnitude only: fraction of each ΔW's entries kept "
                                                "(0.3-0.7 is usual)")),
                advanced(io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                                      tooltip="dare only: seed of its random drops (any number; the same seed "
                                              "gives the same merge)")),
                *_output_inputs(),
                split_qkv_input(),
                MergeList.Input("merge_list", optional=True, tooltip="more LoRAs, from LoRA to Merge nodes"),
                io.Model.Input("model", optional=True,
                               tooltip="the model these LoRAs are for: needed for models of non-standard size "
                                       "and for DoRA LoRAs (their change depends on the base weight)"),
            ],
            outputs=_lora_outputs(), is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, lora_name_1: str | None = None, lora_name_2: str | None = None) -> bool | str:
        return unlisted({"lora_name_1": lora_name_1, "lora_name_2": lora_name_2}, [NONE, *lora_names()])

    @classmethod
    def fingerprint_inputs(cls, lora_name_1: str | None = None, lora_name_2: str | None = None,
                           **kwargs: Any) -> Any:
        """Size and modification time of the files picked here (each LoRA to Merge node stamps its own)."""
        return picked_stamp(lora_name_1), picked_stamp(lora_name_2)

    @classmethod
    def execute(cls, lora_name_1, weight_1, block_weights_1, lora_name_2, weight_2, block_weights_2, method,
                rank_mode, rank, threshold, density, seed, output_name, dtype, merge_list=None,
                model=None, split_qkv: str = SPLIT_QKV[0]) -> io.NodeOutput:
        items = [{"lora_name": lora_name_1, "weight": weight_1, "block_weights": block_weights_1}]
        if lora_name_2 != NONE:
            items.append({"lora_name": lora_name_2, "weight": weight_2, "block_weights": block_weights_2})
        items += list(merge_list or ())
        layout = model_layout(model) if model is not None else None
        inputs = _inputs_from(items, layout, split_qkv)
        base = effective_weights(model, layout) if model is not None else None
        title = _title(output_name, "merged")
        result = merge(inputs, method, None if method == "concat" else _rule(rank_mode, rank, threshold),
                       density=density, seed=seed, base=base, dtype=DTYPES[dtype], title=title,
                       progress=progress_callback())
        return _outputs(result, output_name)


class LoRALabResize(_PicksOneLora):
    """One LoRA at a smaller or dynamic rank: the best approximation per module."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Resize"), display_name=display_name("Resize LoRA"), category=MERGE_CATEGORY,
            description="Resizes a LoRA to a fixed or dynamic rank: per module the best approximation "
                        "(truncated SVD computed from the factors), with the kept energy reported.",
            inputs=[io.Combo.Input("lora_name", options=lora_names(), tooltip=LORA_TIP), *_rank_inputs(16),
                    *_output_inputs(), split_qkv_input(),
                    io.Model.Input("model", optional=True,
                                   tooltip="the model the LoRA is for (non-standard sizes, DoRA)")],
            outputs=_lora_outputs(), is_output_node=True,
        )

    @classmethod
    def execute(cls, lora_name, rank_mode, rank, threshold, output_name, dtype, model=None,
                split_qkv: str = SPLIT_QKV[0]) -> io.NodeOutput:
        layout = model_layout(model) if model is not None else None
        (inp,) = _inputs_from([{"lora_name": lora_name, "weight": 1.0, "block_weights": ""}], layout, split_qkv)
        base = effective_weights(model, layout) if model is not None else None
        title = _title(output_name, None)
        result = resize(inp, _rule(rank_mode, rank, threshold), base=base, dtype=DTYPES[dtype], title=title,
                        progress=progress_callback())
        return _outputs(result, output_name)


class LoRALabExtract(io.ComfyNode):
    """A LoRA from a fine-tuned MODEL and its base MODEL."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Extract"), display_name=display_name("Extract LoRA"), category=MERGE_CATEGORY,
            description="Extracts a LoRA from the difference between a fine-tuned model and its base: per weight "
                        "the best low-rank approximation (randomized SVD with power iterations; full SVD for "
                        "small layers).",
            inputs=[
                io.Model.Input("tuned_model", tooltip="the fine-tuned model (its patches count as its weights)"),
                io.Model.Input("base_model", tooltip="the model it was fine-tuned from (same architecture)"),
                *_rank_inputs(32),
                advanced(io.Float.Input("min_diff", default=0.0001, min=0.0, max=1.0, step=0.00001,
                                        tooltip="skip weights whose difference is at most this fraction of the "
                                                "weight (default 0.0001; 0 keeps every changed weight)")),
                advanced(io.Boolean.Input("bias_and_norms", default=False,
                                          tooltip="also store bias and norm differences as full diffs (ComfyUI "
                                                  "reads them, kohya does not); off is usual")),
                *_output_inputs(),
                io.Clip.Input("tuned_clip", optional=True, tooltip="connect both CLIPs to extract the text encoders"),
                io.Clip.Input("base_clip", optional=True, tooltip="the base model's CLIP (with tuned_clip)"),
            ],
            outputs=_lora_outputs(), is_output_node=True,
        )

    @classmethod
    def execute(cls, tuned_model, base_model, rank_mode, rank, threshold, min_diff, bias_and_norms, output_name,
                dtype, tuned_clip=None, base_clip=None) -> io.NodeOutput:
        layout = required_layout(base_model, "extracts LoRAs from")
        both = tuned_clip is not None and base_clip is not None
        tuned = effective_weights(tuned_model, layout, tuned_clip if both else None, "tuned model")
        base = effective_weights(base_model, layout, base_clip if both else None, "base model")
        title = _title(output_name, "extracted")
        result = extract(tuned, base, _rule(rank_mode, rank, threshold), text_encoders=both, min_diff=min_diff,
                         bias_and_norms=bias_and_norms, dtype=DTYPES[dtype] or torch.float16, title=title,
                         progress=progress_callback())
        return _outputs(result, output_name)


class LoRALabSave(io.ComfyNode):
    """Save a LORA_MODEL from any source as a kohya-format file with true metadata."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Save"), display_name=display_name("Save LoRA"), category=MERGE_CATEGORY,
            description="Saves a LORA_MODEL (from core's trainer, a merge, any source) into loras/ in kohya "
                        "format with ss_* and modelspec metadata that describe it truthfully.",
            inputs=[
                io.LoraModel.Input("lora", tooltip="a LORA_MODEL: from core's trainer, a merge, a training run"),
                io.String.Input("output_name", default="loralab_lora",
                                tooltip="file name in loras (sub-folders allowed; a new name is picked if it exists)"),
                io.String.Input("title", default="", tooltip="title in the metadata (default: the file name)"),
                advanced(io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                        tooltip="dtype of the written tensors; auto keeps the LoRA's (fp16 is usual)")),
                io.Model.Input("model", optional=True, tooltip="the model the LoRA is for (needed for models of "
                                                               "non-standard size)"),
            ],
            outputs=[io.String.Output(display_name="file_name"), io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lora, output_name, title, dtype, model=None) -> io.NodeOutput:
        layout = model_layout(model) if model is not None else None
        name = output_name.strip() or "loralab_lora"
        title = title.strip() or _title(name, "loralab_lora")
        result = convert(Lora.from_state_dict(lora, layout=layout, label="LORA_MODEL"), title=title,
                         dtype=DTYPES[dtype])
        saved = _save(result, name)
        report = _report(result, saved)
        return io.NodeOutput(saved, report, ui={"text": [report]})


class LoRALabBake(io.ComfyNode):
    """A MODEL whose weights include LoRAs (save it with any checkpoint save node)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Bake"), display_name=display_name("Bake LoRAs into Model"), category=MERGE_CATEGORY,
            description="Applies LoRAs to the model's weights once (block weights and DoRA included) and outputs "
                        "a MODEL whose weights include them, for the host's checkpoint save nodes.",
            inputs=[
                io.Model.Input("model", tooltip="the model to bake into (SD1.x, SD2, SDXL, SD3 or Flux)"),
                io.Combo.Input("lora_name", options=[NONE, *lora_names()], default=NONE,
                               tooltip="a LoRA to bake; None: only the LoRAs of merge_list"),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="the LoRA's strength, as on a loader (1 as trained)"),
                io.String.Input("block_weights", default="", tooltip=SPEC_TIP),
                split_qkv_input(),
                MergeList.Input("merge_list", optional=True, tooltip="more LoRAs, from LoRA to Merge nodes"),
            ],
            outputs=[io.Model.Output(display_name="model"), io.String.Output(display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None) -> bool | str:
        return unlisted({"lora_name": lora_name}, [NONE, *lora_names()])

    @classmethod
    def fingerprint_inputs(cls, lora_name: str | None = None, **kwargs: Any) -> Any:
        """Size and modification time of the file picked here (each LoRA to Merge node stamps its own)."""
        return picked_stamp(lora_name)

    @classmethod
    def execute(cls, model, lora_name, strength, block_weights, merge_list=None,
                split_qkv: str = SPLIT_QKV[0]) -> io.NodeOutput:
        items = list(merge_list or ())
        if lora_name != NONE:
            items.insert(0, {"lora_name": lora_name, "weight": strength, "block_weights": block_weights})
        layout = required_layout(model, "bakes LoRAs into")
        inputs = _inputs_from(items, layout, split_qkv)
        weights = effective_weights(model, layout)
        state = model.model_state_dict()
        patches = {key: ("set", (value.to(state[key].dtype),))
                   for key, value in baked_weights(weights, inputs, progress=progress_callback())}
        out = model.clone()
        out.add_patches(patches, 1.0)
        skipped = sum(1 for inp in inputs for _ in inp.lora.unmapped())
        report = f"{len(patches)} weights baked from {len(inputs)} LoRAs" + \
            (f"; {skipped} modules not mapped onto this model" if skipped else "")
        return io.NodeOutput(out, report, ui={"text": [report]})


NODES = [LoRALabMergeInput, LoRALabMerge, LoRALabResize, LoRALabExtract, LoRALabSave, LoRALabBake]
