"""Copy the browser test's screenshots that the README shows into docs/ (run it after tests/e2e):
the widgets alone as PNG, the example workflows as opened in the real frontend as JPEG.

    python tests/e2e/publish_docs.py [TARGET]

TARGET is one of tests/e2e/out/'s folders (default: the newest ComfyUI and frontend, classic mode).
"""
from __future__ import annotations

import os
import re
import sys

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs")
OUT = os.path.join(HERE, "out")
#: screenshot in out/TARGET -> file in docs/ (the README's pictures)
SHOTS = {
    "widget_metadata_panel.png": "metadata_panel.png",
    "widget_block_editor.png": "block_editor.png",
    "widget_block_editor_flux.png": "block_editor_flux.png",
    "widget_loss_chart.png": "loss_chart.png",
    "widget_inspect_report.png": "inspect_report.png",
    "widget_stack_rows.png": "stack_rows.png",
    "widget_coverage_doctor.png": "coverage_doctor.png",
    "workflow_inspect_lora.png": "workflow_inspect_lora.jpg",
    "workflow_block_weights_flux.png": "workflow_block_weights_flux.jpg",
    "workflow_merge_loras.png": "workflow_merge_loras.jpg",
    "workflow_train_lora_sdxl.png": "workflow_train_lora_sdxl.jpg",
    "workflow_train_run_previews.png": "workflow_train_run_previews.jpg",
    "workflow_lora_stack.png": "workflow_lora_stack.jpg",
}


def _version(name: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def newest_target() -> str:
    """The out/ folder of the newest ComfyUI and frontend in classic mode."""
    targets = [t for t in os.listdir(OUT) if t.endswith("-classic") and os.path.isdir(os.path.join(OUT, t))]
    if not targets:
        raise SystemExit(f"no screenshots in {OUT}: run the browser test first (pytest tests/e2e)")
    return max(targets, key=_version)


def publish(target: str) -> list[str]:
    """Copy every screenshot of :data:`SHOTS` that ``target`` has; returns the docs/ files written."""
    written = []
    for shot, doc in SHOTS.items():
        src = os.path.join(OUT, target, shot)
        if not os.path.isfile(src):
            print(f"missing: {target}/{shot}", file=sys.stderr)
            continue
        with Image.open(src) as img:
            dest = os.path.join(DOCS, doc)
            if doc.endswith(".jpg"):
                img.convert("RGB").save(dest, "JPEG", quality=85, optimize=True)
            else:
                img.save(dest, "PNG", optimize=True)
        written.append(doc)
    return written


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else newest_target()
    for doc in publish(chosen):
        print(f"docs/{doc} <- {chosen}")
