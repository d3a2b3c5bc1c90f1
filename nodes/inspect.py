"""Inspect LoRA: the report, its JSON, the trigger words and a block-strength chart of a file in
``loras`` (the header-only summary the frontend shows is :mod:`.routes`).

"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..loralab.ops.inspect import inspect_lora
from .common import CATEGORY, display_name, node_id, unlisted
from .host.compat import HOST
from .host.folders import lora_names, lora_path, picked_stamp
from .host.models import model_layout
from .host.progress import progress_callback

def _image(img) -> torch.Tensor:
    """A Pillow RGB image as a ComfyUI IMAGE: [1, H, W, 3] float in 0..1."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


class LoRALabInspect(io.ComfyNode):
    """Everything about one LoRA file: format, base model, algorithm, rank/alpha per module, blocks
    and how strongly they change, training metadata, trigger words, hashes and health."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Inspect"),
            display_name=display_name("Inspect LoRA"),
            category=f"{CATEGORY}/Inspect",
            description="Reads a LoRA and reports what it is for, what it changes (per absolute block), how it "
                        "was trained, its trigger words, hashes and anything broken in it.",
            inputs=[
                io.Combo.Input("lora_name", options=lora_names(), tooltip="a LoRA in the loras folder"),
                io.Model.Input("model", optional=True,
                               tooltip="the base model: adds relative strength |dW|/|W| per block and maps the "
                                       "LoRA onto this model's exact layout"),
            ],
            outputs=[
                io.String.Output("report", display_name="report"),
                io.String.Output("json", display_name="json"),
                io.String.Output("trigger_words", display_name="trigger words"),
                io.Image.Output("block_chart", display_name="block chart"),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None) -> bool | str:
        """This ComfyUI checks only V1-style combos against their options: the node checks its own."""
        return unlisted({"lora_name": lora_name}, lora_names())

    @classmethod
    def fingerprint_inputs(cls, lora_name: str | None = None, **kwargs: Any) -> Any:
        """Size and modification time of the file: an edited file is inspected again, an unchanged one not."""
        return picked_stamp(lora_name)

    @classmethod
    def execute(cls, lora_name: str, model=None) -> io.NodeOutput:
        path = lora_path(lora_name)
        layout = model_layout(model) if model is not None else None
        base = model.model.state_dict() if model is not None else None
        report = inspect_lora(path, blocks=True, hashes=True, base=base, layout=layout, host=HOST.key_rules,
                              progress=progress_callback())
        data = report.to_dict()
        data["path"] = lora_name
        text = report.to_text()
        words = ", ".join(report.summary.trigger_words)
        return io.NodeOutput(text, json.dumps(data, ensure_ascii=False, allow_nan=False), words,
                             _image(report.chart()), ui=ui.PreviewText(text))


NODES = [LoRALabInspect]
