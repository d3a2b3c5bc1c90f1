"""Nodes that can take seconds move ComfyUI's progress bar and stop on Cancel: Inspect (block
strengths, module by module) and the dataset (image by image), as merge, resize, extract, bake and
training already do (tests/host/test_merge_nodes.py, test_train.py)."""
from __future__ import annotations

import os

import pytest

from loralab_testkit import materialize


@pytest.fixture
def bar_updates(monkeypatch):
    """Every (value, total) a ProgressBar is moved to; the n-th update (``cancel_at``) presses Cancel."""
    import comfy.model_management
    import comfy.utils
    calls: list[tuple[int, int]] = []
    state = {"cancel_at": None}
    real = comfy.utils.ProgressBar.update_absolute

    def update(self, value, total=None, preview=None):
        calls.append((value, total))
        if len(calls) == state["cancel_at"]:
            comfy.model_management.interrupt_current_processing(True)
        return real(self, value, total, preview)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", update)
    yield calls, state
    comfy.model_management.interrupt_current_processing(False)


def test_inspect_reports_progress_per_module_and_stops_on_cancel(host, bar_updates):
    import comfy.model_management
    calls, state = bar_updates
    name = "progress_kohya_sd15.safetensors"
    materialize("kohya_sd15_lora", os.path.join(host.folder("loras"), name), rank=2)
    node = host.nodes.NODE_CLASS_MAPPINGS["LoRALabInspect"]
    node.execute(lora_name=name)
    assert len(calls) == 264 and calls[-1] == (264, 264)  # one update per module, ending full
    calls.clear()
    state["cancel_at"] = 5
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        node.execute(lora_name=name)
    assert len(calls) == 5
