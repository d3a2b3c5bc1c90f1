"""The library: LoRA Lab's index of the LoRA files in some folders (ComfyUI's ``loras`` folders,
or any on the command line): header facts, hashes, trigger words, base model and what imported
exports of LoRA Manager or Civitai say about them; duplicates and wrong embedded hashes flagged.

:mod:`.index` (the SQLite index and its scan), :mod:`.worker` (scanning and hashing in the
background), :mod:`.imports` (reading exports), :mod:`.compat` (which models a LoRA fits, and the
picker's search).
"""
from .index import Entry, Library, ScanResult
from .worker import Worker

__all__ = ["Entry", "Library", "ScanResult", "Worker"]
