"""What the browser tests check on every page: whether LoRA Lab's DOM widgets can exist in this
frontend and mode, and which console errors are not LoRA Lab's; and the helpers the tests drive
the page with (``__ll``)."""
from __future__ import annotations

import os
import re

import pytest

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")

#: frontends whose Nodes 2.0 mode is an experiment that renders no DOM widget (ComfyUI's own
#: multiline text included): LoRA Lab's widgets cannot exist there
NO_DOM_WIDGETS_IN_NODES2 = (1, 28)

PROBE = """
(async () => {
  const app = window.comfyAPI.app.app;
  const n = LiteGraph.createNode("LoRALabLoader");
  app.graph.add(n);
  n.pos = [40, 40];
  const state = () => {
    const el = n.widgets?.find((w) => w.name === "loralab_info")?.element;
    const r = el?.getBoundingClientRect();
    return { widget: !!el, attached: !!el && document.contains(el),
             width: r ? Math.round(r.width) : 0, height: r ? Math.round(r.height) : 0 };
  };
  let s = state();
  for (let i = 0; i < 50 && !(s.attached && s.width > 0 && s.height > 0); i++) {
    await new Promise((r) => setTimeout(r, 100));
    s = state();
  }
  app.graph.remove(n);
  return s;
})()
"""


def probe_widgets(page) -> dict:
    """Whether a LoRA Lab node's DOM widget is on the page (attached, non-zero size) in this mode."""
    if not hasattr(page, "probe"):
        page.probe = page.eval(PROBE, timeout=30)
        s = page.probe
        if not (s["attached"] and s["width"] > 0 and s["height"] > 0):
            t = page.target
            page.target.widgets_missing = (
                f"frontend {t.version} {t.mode}: LoRA Lab's DOM widgets are not on the page "
                f"(widget object {'exists' if s['widget'] else 'missing'}, attached={s['attached']}, "
                f"size {s['width']}x{s['height']})")
    return page.probe


def require_widgets(page) -> None:
    """Skip a widget test where this frontend's mode cannot show DOM widgets at all (and only there);
    anywhere else a missing widget fails the test."""
    probe_widgets(page)
    t = page.target
    if t.widgets_missing is None:
        return
    if t.mode == "nodes2" and t.vtuple() < NO_DOM_WIDGETS_IN_NODES2:
        pytest.skip(f"frontend {t.version}'s experimental Nodes 2.0 (Vue) mode renders no DOM widgets, so LoRA Lab's "
                    f"widgets cannot exist there ({t.widgets_missing})")
    pytest.fail(t.widgets_missing)


_LOCAL = r"http://127\.0\.0\.1:\d+"
_NOT_FOUND = r"^network: Failed to load resource: the server responded with a status of 404 \(Not Found\) " + _LOCAL
#: console errors that are not LoRA Lab's, each matched by its exact URL (or, for the outside world,
#: by being outside this machine): anything else fails a widget test
FOREIGN_ERRORS = (
    # frontend 1.5x's job list and queue poll /api/jobs, and it asks for /api/global_subgraphs:
    # ComfyUI 0.3.64 serves neither
    re.compile(r"^(\[Jobs API\] Error fetching jobs|Failed to fetch queue): JobsApiError: Failed to fetch jobs: 404\b"),
    re.compile(_NOT_FOUND + r"/api/(jobs|global_subgraphs)(\?[^ ]*)?$"),
    # ComfyUI's answer for user files a fresh user folder does not have yet
    re.compile(_NOT_FOUND + r"(/user\.css|/favicon\.ico|/api/userdata/user\.css|/api/userdata/comfy\.templates\.json"
               r"|/api/userdata\?dir=(workflows|subgraphs|subgraphs%2F)&[^ ]*)$"),
    # the test machine is offline: the frontend's calls to the outside world (release notes, model links)
    re.compile(r"^network: Failed to load resource: net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|CONNECTION_REFUSED) "
               r"https://(?!127\.0\.0\.1)[^ ]+$"),
    # LoRA Lab's own answer for the test's deliberately broken file (the panel shows the error)
    re.compile(r"^network: Failed to load resource: the server responded with a status of 422 \(Unprocessable Entity\) "
               + _LOCAL + r"/api/loralab/lora_info\?name=broken\.safetensors$"),
    # the stale-metadata test deletes its file on purpose: the panel shows "missing" from this 404
    re.compile(r"^network: Failed to load resource: the server responded with a status of 404 \(Not Found\) "
               + _LOCAL + r"/api/loralab/lora_info\?name=stale_[0-9a-f]+\.safetensors$"),
)


def unexpected_console_errors(page, start: int = 0) -> list[str]:
    """Console errors since ``start``, less the known foreign ones (FOREIGN_ERRORS)."""
    return [e for e in page.console_errors[start:] if not any(p.search(e) for p in FOREIGN_ERRORS)]


def dump_console(page) -> None:
    """Every console error of this page, for review, in tests/e2e/out/<frontend>-<mode>/console.txt."""
    path = os.path.join(OUT, page.target.name, "console.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(page.console_errors + ["exceptions:"] + page.exceptions))


#: ``window.__ll``: the page helpers every widget test uses (the ``ui`` fixture installs them)
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
