"""LoRA Lab for ComfyUI: inspect, apply with per-block weights, merge and train LoRAs.

ComfyUI loads this folder under whatever name it was installed as; everything inside uses
relative imports. Importing is cheap: no models, files or heavy modules are touched here.
"""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
