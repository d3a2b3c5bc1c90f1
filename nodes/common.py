"""What every LoRA Lab node shares: its id and name in ComfyUI, input validation, and advanced inputs."""
from __future__ import annotations

import inspect

from comfy_api.latest import io

NODE_PREFIX = "LoRALab"
CATEGORY = "LoRA Lab"


def node_id(name: str) -> str:
    """The pack-prefixed node id (``Inspect`` -> ``LoRALabInspect``)."""
    return NODE_PREFIX + name


def display_name(name: str) -> str:
    """The display name shown in ComfyUI (``Inspect LoRA`` -> ``Inspect LoRA (LoRA Lab)``)."""
    return f"{name} (LoRA Lab)"


def unlisted(names: dict, allowed: list[str]) -> bool | str:
    """A node's ``validate_inputs`` answer for its file-name inputs: True when every chosen name
    is one the node offers, else what is wrong. This ComfyUI checks only V1-style combos against
    their options, so V3 nodes check the names they read themselves."""
    for input_name, value in names.items():
        if value is not None and value not in allowed:
            return f"{input_name}: {str(value)[:200]!r} is not a LoRA in the loras folder list"
    return True


#: whether this ComfyUI's V3 inputs take ``advanced`` (0.33 and newer); older ones pass the same key
#: to ``/object_info`` through the input's ``extra_dict``
ADVANCED_INPUTS = "advanced" in inspect.signature(io.Input.__init__).parameters


def advanced(inp: io.Input) -> io.Input:
    """``inp`` marked as an advanced input (``"advanced": true`` in ``/object_info`` on every host):
    Nodes 2.0 folds it behind the node's "show advanced inputs", and LoRA Lab's frontend extension
    folds it on the classic canvas (js/fold.js). Its value is stored and sent as any other widget's,
    so workflows load the same on every host."""
    if ADVANCED_INPUTS:
        inp.advanced = True
    else:
        inp.extra_dict = {**inp.extra_dict, "advanced": True}
    return inp


#: how a kohya split_qkv Flux LoRA's fused modules are scaled (see loralab.formats.split_qkv)
SPLIT_QKV = ("as loaded", "as trained")


def split_qkv_input() -> io.Input:
    """The advanced choice of strength for kohya ``split_qkv`` Flux LoRAs (other files ignore it)."""
    return advanced(io.Combo.Input(
        "split_qkv", options=list(SPLIT_QKV), default=SPLIT_QKV[0], optional=True,  # prompts written before it run
        tooltip="kohya split_qkv Flux LoRAs only (the inspect report says when a file is one): 'as loaded' gives "
                "their fused q/k/v and linear1 modules the strength ComfyUI's loader gives them (1/3 and 1/4 of "
                "the trained one); 'as trained' the strength kohya trained them at. Other LoRAs ignore it"))
