"""ComfyUI in-process for the command line (no server): its folder put on ``sys.path``, its
arguments set before anything reads them, its ``extra_model_paths.yaml`` read as its own start-up
reads it, and this pack imported the way ComfyUI imports a custom node.

``loralab train`` loads this file by its path, before ComfyUI can be imported, so it imports
nothing of the pack and nothing of ComfyUI at module level.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

#: the name the pack is imported under (ComfyUI imports it under its folder's name; any name works)
PACK_MODULE = "loralab_pack"


def boot(comfyui_path: str, pack_root: str, *, cpu: bool) -> ModuleType:
    """Import ComfyUI from ``comfyui_path`` (on the CPU when ``cpu``) and the pack from
    ``pack_root``; returns the pack's ``nodes.host.standalone`` module."""
    comfyui_path = os.path.abspath(comfyui_path)
    if comfyui_path not in sys.path:
        sys.path.insert(0, comfyui_path)
    from comfy.cli_args import args
    args.cpu = cpu
    args.disable_auto_launch = True
    import utils.extra_config  # before `nodes`, or `utils` resolves to comfy/utils.py
    extra = os.path.join(comfyui_path, "extra_model_paths.yaml")
    if os.path.isfile(extra):
        utils.extra_config.load_extra_path_config(extra)
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_MODULE, os.path.join(pack_root, "__init__.py"),
                                                      submodule_search_locations=[pack_root])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACK_MODULE}.nodes.host.standalone")
