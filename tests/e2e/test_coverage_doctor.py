"""The coverage doctor's line on the loader's panel in the real frontend, before anything runs: a
Load Checkpoint node whose file is SDXL (the server's checkpoints hold released models' headers
over sparse zeros) feeding LoRA Loader (Block Weights) with an SD1.5 LoRA shows the cause and the
fix; the line follows a checkpoint picked by the user, a CLIP unplugged, a LoRA node in between
and the model unplugged. The example workflow shows its two lines when it opens. Screenshots:
tests/e2e/out/."""
from __future__ import annotations

import json

from host.workflow_kit import load_workflow
from widget_page import shot, wait_panel

SD15_LORA = "my_sd15_lora.safetensors"  # kohya SD1.5 at its real shapes, 264 modules (72 of the text encoder)


def _line(node: int) -> str:
    return f"(__ll.el({node}, 'loralab_info')?.querySelector('.loralab-doctor')?.textContent ?? '')"


def test_the_panel_names_the_cause_and_the_fix_before_a_run(ui, out_dir):  # noqa: F811 (the fixture)
    ckpt = ui.eval("__ll.add('CheckpointLoaderSimple', 60, 60)")
    loader = ui.eval("__ll.add('LoRALabLoader', 440, 60)")
    ui.eval(f"__ll.pick({ckpt}, 'ckpt_name', 'sd_xl_base_1.0.safetensors')")
    ui.eval(f"__ll.pick({loader}, 'lora_name', {json.dumps(SD15_LORA)})")
    wait_panel(ui, loader)
    assert ui.eval(_line(loader)) == ""  # no model connected: nothing to say yet

    ui.eval(f"__ll.node({ckpt}).connect(0, __ll.node({loader}), 0)")
    ui.eval(f"__ll.node({ckpt}).connect(1, __ll.node({loader}), 1)")
    line = ui.wait_for(f"{_line(loader)}.includes('SDXL') && {_line(loader)}", timeout=30)
    assert line == ("⚠ an SD1.x LoRA on an SDXL model (0% of 264 modules land) · fix: pick a LoRA made for SDXL, "
                    "or load an SD1.x model")
    doctor = f"__ll.el({loader}, 'loralab_info').querySelector('.loralab-doctor')"
    assert ui.eval(f"{doctor}.className") == "loralab-doctor loralab-doctor-error"
    assert ui.eval(f"{doctor}.title").startswith("nothing lands on the SDXL model: an SD1.x LoRA on an SDXL model")
    shot(ui, "coverage_doctor", [loader, ckpt], "loralab_info")

    # the user picks the SD1.5 checkpoint; the frontend's change tracker tells after the mouse is released
    ui.eval(f"__ll.pick({ckpt}, 'ckpt_name', 'v1-5-pruned-emaonly.safetensors')")
    ui.eval("window.dispatchEvent(new MouseEvent('mouseup'))")
    ui.wait_for(f"{_line(loader)} === '✓ fits the SD1.x model: 264 of 264 modules land'", timeout=30)

    ui.eval(f"__ll.node({loader}).disconnectInput(1)")  # the CLIP unplugged: its 72 modules have nowhere to go
    line = ui.wait_for(f"{_line(loader)}.startsWith('⚠ text-encoder') && {_line(loader)}", timeout=30)
    assert line == ("⚠ text-encoder keys but no CLIP connected (73% of 264 modules land) · fix: connect the CLIP "
                    "(from the checkpoint or CLIP loader) to this node's clip input")
    shot(ui, "coverage_doctor_no_clip", [loader, ckpt], "loralab_info")

    # through another LoRA node: core's Load LoRA (model only) between the checkpoint and this loader
    core = ui.eval("__ll.add('LoraLoaderModelOnly', 60, 300)")
    ui.eval(f"__ll.pick({ckpt}, 'ckpt_name', 'sd_xl_base_1.0.safetensors')")
    ui.eval(f"__ll.node({ckpt}).connect(0, __ll.node({core}), 0)")
    ui.eval(f"__ll.node({core}).connect(0, __ll.node({loader}), 0)")
    ui.wait_for(f"{_line(loader)}.startsWith('⚠ an SD1.x LoRA on an SDXL model')", timeout=30)

    ui.eval(f"__ll.node({loader}).disconnectInput(0)")
    ui.wait_for(f"{_line(loader)} === ''", timeout=30)
    assert ui.eval(f"__ll.el({loader}, 'loralab_info').querySelector('.loralab-ok') !== null")  # the LoRA's own line stays


def test_the_example_workflow_shows_both_lines_when_it_opens(ui):  # noqa: F811 (the fixture)
    workflow = load_workflow("coverage_doctor.json")
    ui.eval(f"__ll.app.loadGraphData({json.dumps(workflow)})")
    note = ui.wait_for(f"{_line(3)}.startsWith('ℹ') && {_line(3)}", timeout=30)
    assert note.startswith("ℹ diffusers-format keys: ComfyUI ") and note.endswith("'s own LoRA loader drops 560 of these "
                                                                                  "modules; LoRA Lab applies them")
    assert ui.eval("__ll.el(3, 'loralab_info').querySelector('.loralab-doctor').title").startswith("fix: none needed here")
    refused = ui.wait_for(f"{_line(4)}.startsWith('⚠') && {_line(4)}", timeout=30)
    assert refused.startswith("⚠ an SD1.x LoRA on an SDXL model (0% of 264 modules land)")
    shot(ui, "coverage_doctor_workflow", [3, 4], None)
