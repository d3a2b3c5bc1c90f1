"""The example workflows in workflows/ explain themselves: each has a Note and a thumbnail of the
same name, as ComfyUI's template browser pairs them (tests/host/test_workflows.py runs them)."""
import os

import pytest
from PIL import Image

from host.workflow_kit import FRONTEND_ONLY, WORKFLOWS, load_workflow, workflow_files


def test_there_are_workflows():
    assert len(workflow_files()) >= 13


@pytest.mark.parametrize("name", workflow_files())
def test_workflow_has_a_note_and_a_thumbnail(name):
    workflow = load_workflow(name)
    assert workflow.get("version") == 0.4 and workflow["last_node_id"] >= max(n["id"] for n in workflow["nodes"])
    notes = [n for n in workflow["nodes"] if n["type"] in FRONTEND_ONLY]
    assert notes and all(len(n["widgets_values"][0]) > 200 for n in notes), f"{name}: no Note that explains it"
    thumb = os.path.join(WORKFLOWS, name[:-len(".json")] + ".jpg")
    assert os.path.isfile(thumb), f"{name}: no thumbnail {os.path.basename(thumb)}"
    with Image.open(thumb) as img:
        assert img.format == "JPEG" and min(img.size) >= 128
    assert os.path.getsize(thumb) < 64 * 1024
