"""The browser tests' page helpers: ``__ll`` (HELPERS, put into the page by the ``ui`` fixture of
conftest.py) to add nodes, pick values and read LoRA Lab's widgets; screenshots; waiting for a
metadata panel."""
from __future__ import annotations

import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")

HELPERS = """
window.__ll = {
  app: window.comfyAPI.app.app,
  reset() {
    this.app.graph.clear();
    this.app.canvas.ds.scale = 1;
    this.app.canvas.ds.offset = [0, 0];
    this.app.graph.setDirtyCanvas(true, true);
  },
  add(type, x, y) {
    const n = LiteGraph.createNode(type);
    this.app.graph.add(n);
    n.pos = [x, y];
    return /^\\d+$/.test(String(n.id)) ? Number(n.id) : n.id;  // newer frontends hand out "1"
  },
  node(id) { return this.app.graph.getNodeById(id); },
  widget(id, name) { return this.node(id).widgets.find((w) => w.name === name); },
  pick(id, name, value) {
    const n = this.node(id);
    this.widget(id, name).setValue(value, { e: null, node: n, canvas: this.app.canvas });
  },
  // a widget's element, which must be on the page and have a size: a widget the frontend never
  // attached (or squashed to nothing) fails the test instead of passing on a detached element
  el(id, name) {
    const e = this.widget(id, name)?.element;
    if (!e) return e;
    if (!document.contains(e)) throw new Error(`${name} of node ${id} is not on the page`);
    const r = e.getBoundingClientRect();
    if (!(r.width > 0 && r.height > 0)) throw new Error(`${name} of node ${id} has no size (${r.width}x${r.height})`);
    return e;
  },
  type(id, name, text) {
    const w = this.widget(id, name);
    w.inputEl.value = text;
    w.inputEl.dispatchEvent(new Event("input"));
  },
  sliders(id) {
    return Object.fromEntries([...this.el(id, "loralab_blocks").querySelectorAll("input[type=range]")]
      .map((i) => [i.dataset.block, { value: Number(i.value), disabled: i.disabled }]));
  },
  slide(id, block, value) {
    const input = this.el(id, "loralab_blocks").querySelector(`input[data-block="${block}"]`);
    input.value = String(value);
    input.dispatchEvent(new Event("input"));
  },
  choose(id, title, value) {
    const select = this.el(id, "loralab_blocks").querySelector(`select[title^="${title}"]`);
    select.value = value;
    select.dispatchEvent(new Event("change"));
  },
  box(ids) {
    const r = this.app.canvas.canvas.getBoundingClientRect();
    const nodes = ids.map((id) => this.node(id));
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - 10, y0 = Math.min(...nodes.map((n) => n.pos[1])) - 40;
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 10;
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 10;
    return { x: r.left + x0, y: r.top + y0, width: x1 - x0, height: y1 - y0 };
  },
  widgetBox(id, name) {
    const r = this.el(id, name).getBoundingClientRect();
    return { x: r.left - 4, y: r.top - 4, width: r.width + 8, height: r.height + 8 };
  },
  foreignElements() {
    const inert = new Set(["DIV", "SPAN", "BUTTON", "PRE", "SELECT", "OPTION", "INPUT", "CANVAS"]);
    return [...document.querySelectorAll(".loralab-widget *")].filter((e) => !inert.has(e.tagName)).map((e) => e.tagName);
  },
  handlerAttributes() {
    return [...document.querySelectorAll("*")].flatMap((e) => [...e.attributes].filter((a) => /^on/i.test(a.name))
      .map((a) => `${e.tagName} ${a.name}`));
  },
};
true
"""


def shot(page, name: str, ids: list, widget: str | None = None) -> None:
    """Screenshots for review: the nodes, and (for the README) the widget alone."""
    page.pause(0.5)
    out = os.path.join(OUT, page.target.name)
    page.screenshot(os.path.join(out, name + ".png"), page.eval(f"__ll.box({json.dumps(ids)})"))
    if widget:
        page.screenshot(os.path.join(out, "widget_" + name + ".png"),
                        page.eval(f"__ll.widgetBox({ids[0]}, {json.dumps(widget)})"))


def wait_panel(page, node: int, cls: str = "loralab-ok") -> None:
    page.wait_for(f"__ll.el({node}, 'loralab_info')?.querySelector('.{cls}')", timeout=30)
