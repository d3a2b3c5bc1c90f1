"""Compare Grid in the real frontend: every input the node shows has a tooltip, and the node runs
on a tiny model (stand-in) and shows its labelled grid as the node's image output. Screenshots:
tests/e2e/out/."""
from __future__ import annotations

import json
import os

import pytest
from widget_page import OUT

GRID = "LoRALabCompare"
TINY = "LoRALabE2ETinyModel"

TOOLTIPS = """
((id) => {
  const n = __ll.node(id), data = n.constructor.nodeData ?? {};
  const specs = { ...(data.input?.required ?? {}), ...(data.input?.optional ?? {}) };
  const slots = [...(n.inputs ?? []).map((i) => i.name), ...(n.widgets ?? []).map((w) => w.name)]
    .filter((name) => !name.startsWith("loralab_"));
  return { names: [...new Set(slots)], tips: Object.fromEntries(Object.entries(specs).map(([k, v]) => [k, v?.[1]?.tooltip ?? ""])) };
})(%s)
"""

SHOWN = """
((id) => {
  const outputs = __ll.app.nodeOutputs?.[String(id)] ?? __ll.app.nodeOutputs?.[id];
  const images = outputs?.images ?? [];
  const vue = document.querySelector(`[data-node-id="${id}"]`);
  const img = vue ? [...vue.querySelectorAll("img")].find((i) => i.complete && i.naturalWidth > 0)
                  : (__ll.node(id).imgs ?? []).find((i) => i.complete && i.naturalWidth > 0);
  return { count: images.length, width: img?.naturalWidth ?? 0, height: img?.naturalHeight ?? 0 };
})(%s)
"""


FIT = """
((ids) => {
  const c = __ll.app.canvas, r = c.canvas.getBoundingClientRect();
  const bottoms = ids.map((id) => {
    const vue = document.querySelector(`[data-node-id="${id}"]`);
    if (vue) return (vue.getBoundingClientRect().bottom - r.top) / c.ds.scale - c.ds.offset[1];
    const n = __ll.node(id);
    return n.pos[1] + n.size[1];
  });
  c.ds.scale = Math.min(1, c.ds.scale, (r.height - 60) / (Math.max(...bottoms) + 60));
  c.ds.offset = [60, 40];
  __ll.app.graph.setDirtyCanvas(true, true);
  return c.ds.scale;
})(%s)
"""


def _shot_zoomed_out(page, name: str, ids: list) -> None:
    """A screenshot with the canvas zoomed out until the nodes (a tall grid node and its image) fit
    the window (Nodes 2.0 nodes are measured on the page, after each zoom)."""
    for _ in range(3):
        page.eval(FIT % json.dumps(ids))
        page.pause(0.5)
    page.screenshot(os.path.join(OUT, page.target.name, name + ".png"))


def _slot(page, node: int, name: str) -> int:
    return page.eval(f"__ll.node({node}).inputs.findIndex((i) => i.name === {json.dumps(name)})")


def test_every_input_of_the_grid_has_a_tooltip(ui):
    node = ui.eval(f"__ll.add('{GRID}', 60, 60)")
    found = ui.eval(TOOLTIPS % node)
    assert {"model", "clip", "vae", "latent_image", "run", "x_axis", "x_values", "y_axis", "y_values",
            "lora_name", "seed", "steps"} <= set(found["names"]), found["names"]
    short = [name for name in found["names"] if len(found["tips"].get(name, "").strip()) < 12]
    assert short == [], f"inputs without a tooltip: {short}"


def test_the_grid_runs_on_a_tiny_model_and_shows_on_the_node(ui, server, out_dir):
    if TINY not in ui.eval("Object.keys(LiteGraph.registered_node_types)"):
        pytest.skip(f"no {TINY} stand-in (make_tiny_models.py from ../shared/tools/comfy-host is missing)")
    tiny = ui.eval(f"__ll.add('{TINY}', 40, 60)")
    latent = ui.eval("__ll.add('EmptyLatentImage', 40, 260)")
    grid = ui.eval(f"__ll.add('{GRID}', 400, 40)")
    for out, target, name in ((0, grid, "model"), (1, grid, "clip"), (2, grid, "vae")):
        ui.eval(f"__ll.node({tiny}).connect({out}, __ll.node({target}), {_slot(ui, grid, name)})")
    ui.eval(f"__ll.node({latent}).connect(0, __ll.node({grid}), {_slot(ui, grid, 'latent_image')})")
    for widget, value in (("width", 64), ("height", 64)):
        ui.eval(f"__ll.widget({latent}, '{widget}').value = {value}")
    for widget, value in (("x_axis", "seed"), ("x_values", "1, 2, 3"), ("y_axis", "prompt"),
                          ("y_values", "a red circle | a blue square"), ("steps", 2)):
        ui.eval(f"__ll.widget({grid}, {json.dumps(widget)}).value = {json.dumps(value)}")
    ui.eval("__ll.app.queuePrompt(0, 1)")
    shown = ui.wait_for(f"(() => {{ const s = {SHOWN % grid}; return s.width > 0 && s; }})()", timeout=120)
    assert shown["count"] == 1
    # three 64-pixel columns under their labels, two rows beside theirs
    assert shown["width"] > 3 * 64 + 40 and shown["height"] > 2 * 64 + 16, shown
    _shot_zoomed_out(ui, "compare_grid", [tiny, latent, grid])
