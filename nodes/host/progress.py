"""ComfyUI's progress bar and Cancel button for long engine loops."""
from __future__ import annotations

from typing import Callable

import comfy.model_management
import comfy.utils


def progress_callback(total_hint: int = 1, node_id: str | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for the engine: moves the node's progress bar and raises
    ComfyUI's interrupt when the user pressed Cancel (so loops stop between items)."""
    bar = comfy.utils.ProgressBar(total_hint, node_id=node_id)

    def update(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, max(total, 1))
    return update
