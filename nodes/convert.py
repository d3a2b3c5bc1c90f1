"""Convert LoRA: one LoRA, or every LoRA of its folder, rewritten into kohya keys that ComfyUI
loads (thin node over loralab.ops.convert)."""
from __future__ import annotations

import os
import posixpath
from typing import Any

from comfy_api.latest import io, ui

from ..loralab.errors import LoRALabError, SpecError
from ..loralab.files.paths import check_relative_name, resolve_in_folder, sanitize_output_name
from ..loralab.ops.convert import convert_file
from .common import CATEGORY, SPLIT_QKV, advanced, display_name, node_id, split_qkv_input, unlisted
from .host.folders import lora_names, picked_lora, picked_stamp
from .host.folders import output_folder as loras_folder
from .host.models import model_layout
from .host.progress import progress_callback
from .merge import DTYPES

SCOPES = ("this LoRA", "every LoRA in its folder")


def _sources(lora_name: str, scope: str) -> list[str]:
    """The listed LoRA names to convert: the one picked, or every one in its folder (not sub-folders)."""
    if scope == SCOPES[0]:
        return [lora_name]
    folder = posixpath.dirname(lora_name.replace(os.sep, "/"))
    return [n for n in lora_names() if posixpath.dirname(n.replace(os.sep, "/")) == folder]


def _output_folder(name: str) -> str:
    """The checked sub-folder of loras the outputs go to."""
    name = name.strip().strip("/")
    if not name:
        raise SpecError("output_folder is empty: name a sub-folder of loras (e.g. converted)", key="output_folder")
    check_relative_name(name)  # traversal, absolute paths and reserved names stop here
    return name


class LoRALabConvert(io.ComfyNode):
    """A LoRA of any producer as kohya keys ComfyUI loads; one file or a whole folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Convert"), display_name=display_name("Convert LoRA"), category=f"{CATEGORY}/Merge",
            description="Rewrites LoRAs of any format (diffusers/PEFT, ai-toolkit, XLabs, LyCORIS, musubi...) into "
                        "kohya keys with per-module alpha and true metadata, exactly, so that a file ComfyUI drops "
                        "becomes one it loads. Converts the picked LoRA or every LoRA in its folder into a sub-folder "
                        "of loras; files that exist there are left as they are.",
            inputs=[
                io.Combo.Input("lora_name", options=lora_names(),
                               tooltip="the LoRA to convert (or, with scope 'every LoRA in its folder', one LoRA of "
                                       "the folder to convert)"),
                io.Combo.Input("scope", options=list(SCOPES), default=SCOPES[0],
                               tooltip="this LoRA: only the picked file; every LoRA in its folder: each LoRA ComfyUI "
                                       "lists in the same folder (not its sub-folders)"),
                io.String.Input("output_folder", default="converted",
                                tooltip="sub-folder of loras the converted files go to, under their own names "
                                        "(converted is usual)"),
                io.String.Input("suffix", default="",
                                tooltip="added to each converted file's name (e.g. _comfy); empty keeps the name"),
                advanced(io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                                        tooltip="dtype of the written tensors; auto keeps each LoRA's (fp16 is usual)")),
                split_qkv_input(),
                io.Model.Input("model", optional=True,
                               tooltip="the model the LoRAs are for (needed for models of non-standard size)"),
            ],
            outputs=[io.String.Output(display_name="file_names",
                                      tooltip="the converted files, one per line, as the loras list names them"),
                     io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None) -> bool | str:
        return unlisted({"lora_name": lora_name}, lora_names())

    @classmethod
    def fingerprint_inputs(cls, lora_name: str = "", scope: str = SCOPES[0], **kwargs: Any) -> Any:
        """Size and modification time of every file it would convert."""
        return tuple((n, picked_stamp(n)) for n in _sources(lora_name, scope))

    @classmethod
    def execute(cls, lora_name: str, scope: str, output_folder: str, suffix: str, dtype: str = "auto",
                split_qkv: str = SPLIT_QKV[0], model=None) -> io.NodeOutput:
        layout = model_layout(model) if model is not None else None
        target = _output_folder(output_folder)
        root = loras_folder("loras")
        names = _sources(lora_name, scope)
        progress = progress_callback()
        written, lines = [], []
        for i, name in enumerate(names):
            stem = posixpath.splitext(posixpath.basename(name.replace(os.sep, "/")))[0]
            relative = sanitize_output_name(f"{target}/{stem}{suffix}", default=stem or "lora")
            path = resolve_in_folder(root, relative, must_exist=False)  # a linked folder leading out is refused
            if os.path.lexists(path):
                lines.append(f"{name}: left as it is, loras/{relative} exists")
            else:
                try:
                    result = convert_file(picked_lora(name), layout, split_qkv_as_trained=split_qkv == "as trained",
                                          dtype=DTYPES[dtype])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    result.save(path)
                    written.append(relative)
                    lines.append(f"{name} -> loras/{relative}: {len(result.modules)} modules")
                except LoRALabError as e:
                    if scope == SCOPES[0]:
                        raise  # the one file asked for: the node stops with the reason
                    lines.append(f"{name}: not converted: {e}")
            progress(i + 1, len(names))
        report = "\n".join([f"converted {len(written)} of {len(names)} LoRA(s)", *lines])
        return io.NodeOutput("\n".join(written), report, ui=ui.PreviewText(report))


NODES = [LoRALabConvert]
