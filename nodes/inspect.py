"""Inspect LoRA: the report, its JSON, the trigger words and a block-strength chart of a file in
``loras``; and ``GET /loralab/lora_info?name=...``, the header-only summary the frontend shows.

The route answers ``200`` with :meth:`loralab.ops.inspect.Summary.to_dict` (its ``path`` is the name
relative to the loras folder), ``400`` for names that escape the folder (``..``, absolute paths,
symlinks pointing outside, control characters), ``404`` for files that do not exist and ``422``
for files that are not readable LoRAs; errors are ``{"error": "..."}``. It reads the header and
the alpha scalars only, never tensor data.
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
import server
import torch
from aiohttp import web
from comfy_api.latest import io, ui

from ..loralab.errors import LoRALabError, UnsafeNameError
from ..loralab.ops.inspect import inspect_lora, summarize
from .common import CATEGORY, display_name, lora_file, lora_names, lora_path, model_layout, node_id, unlisted

ROUTE = "/loralab/lora_info"


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
    def execute(cls, lora_name: str, model=None) -> io.NodeOutput:
        path = lora_path(lora_name)
        layout = model_layout(model) if model is not None else None
        base = model.model.state_dict() if model is not None else None
        report = inspect_lora(path, blocks=True, hashes=True, base=base, layout=layout)
        data = report.to_dict()
        data["path"] = lora_name
        text = report.to_text()
        words = ", ".join(report.summary.trigger_words)
        return io.NodeOutput(text, json.dumps(data, ensure_ascii=False, allow_nan=False), words,
                             _image(report.chart()), ui=ui.PreviewText(text))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def lora_info(request: web.Request) -> web.Response:
    """``GET /loralab/lora_info?name=<name relative to loras>``: the header-only summary JSON."""
    name = request.query.get("name", "")
    try:
        path = lora_file(name)
    except UnsafeNameError as e:
        return _error(400, f"{name!r}: refused file name: {e.problem}")
    if path is None:
        return _error(404, f"{name!r}: no such LoRA in the loras folder")
    try:
        summary = await asyncio.get_running_loop().run_in_executor(None, summarize, path)
    except LoRALabError as e:
        return _error(422, f"{name!r}: {e.problem}" + (f" ({e.hint})" if e.hint else ""))
    data = summary.to_dict()
    data["path"] = name
    return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False, allow_nan=False))


server.PromptServer.instance.routes.get(ROUTE)(lora_info)

NODES = [LoRALabInspect]
