"""LoRA Lab engine: LoRA files and tensors, with no dependency on ComfyUI.

Start with :class:`loralab.lora.Lora` (open a file, see its format, architecture and the model
key of every adapter) and :mod:`loralab.adapters` (the math of each algorithm).
"""
__version__ = "0.1.0"
