"""The LoRA Stack's rows in the real frontend: rows added with "+ Add LoRA", one turned off, LoRAs
picked; a run reports only the rows that are on; the saved workflow loads with its rows; the node
stays compact; a workflow saved with the five-slot Stack and Stack Report loads as rows, the
Report's proposal wired into the Stack. Screenshots: tests/e2e/out/."""
from __future__ import annotations

import json
import os
import random
import urllib.request

import pytest
from widget_page import shot

HERE = os.path.dirname(os.path.abspath(__file__))
FIVE_SLOTS = os.path.join(HERE, "fixtures", "lora_stack_five_slots.json")
#: LoRAs the server's loras folder holds (tests/host/workflow_kit.LORAS, written by conftest.Server)
STYLE, CHARACTER, DETAIL = "my_style_xl.safetensors", "my_character_xl.safetensors", "my_detail_xl.safetensors"
#: the height budget of a new LoRA Stack, title included, at zoom 1 (what rgthree's Power Lora
#: Loader is compared with): one row, and three rows
ONE_ROW_BUDGET, THREE_ROWS_BUDGET = 320, 420

ROWS = """
window.__rows = {
  root(id) { return __ll.el(id, 'loralab_rows'); },
  // whether the node's rows are on the page, with a size (the frontend attaches them when it draws)
  ready(id) {
    const e = __ll.widget(id, 'loralab_rows')?.element;
    return !!e && document.contains(e) && e.getBoundingClientRect().height > 0;
  },
  value(id) { return JSON.parse(__ll.widget(id, 'loras').value); },
  row(id, i) { return this.root(id).querySelectorAll('.loralab-lora-row')[i]; },
  add(id) { this.root(id).querySelector('.loralab-row-add').click(); },
  pick(id, i, name) {
    const s = this.row(id, i).querySelector('.loralab-row-lora');
    s.value = name;
    s.dispatchEvent(new Event('change'));
  },
  toggle(id, i) { this.row(id, i).querySelector('.loralab-row-on').click(); },
  strength(id, i, k, text) {
    const b = this.row(id, i).querySelectorAll('.loralab-row-number')[k];
    b.value = text;
    b.dispatchEvent(new Event('change'));
  },
  spec(id, i, text) {
    const b = this.row(id, i).querySelector('.loralab-row-spec');
    b.value = text;
    b.dispatchEvent(new Event('input'));
  },
  shown(id) {
    return [...this.root(id).querySelectorAll('.loralab-lora-row')].map((r) => ({
      on: r.querySelector('.loralab-row-on').checked,
      lora: r.querySelector('.loralab-row-lora').value,
      numbers: [...r.querySelectorAll('.loralab-row-number')].map((b) => b.value),
      spec: r.querySelector('.loralab-row-spec').value }));
  },
  // the node as drawn, title included, in graph units: the Vue node's element in Nodes 2.0, the
  // canvas box (size + title) in classic mode
  height(id) {
    const vue = document.querySelector(`[data-node-id="${id}"]`);
    if (vue) return vue.getBoundingClientRect().height / __ll.app.canvas.ds.scale;
    return __ll.node(id).size[1] + LiteGraph.NODE_TITLE_HEIGHT;
  },
  // whether the JSON of the rows shows anywhere on the page (it must not: the rows show it)
  jsonShown() {
    return [...document.querySelectorAll('input, textarea')].some((e) => String(e.value).startsWith('[{"on"')
      && e.getBoundingClientRect().height > 0);
  },
  inputs(id) { return __ll.node(id).inputs.map((i) => i.name); },
  outputs(id) { return __ll.node(id).outputs.map((o) => o.name); },
  linksInto(id, name) {  // [origin node id as text, origin slot]: newer frontends hand out "10"
    const n = __ll.node(id), input = n.inputs.find((i) => i.name === name);
    const link = input?.link == null ? null : (n.graph.links.get?.(input.link) ?? n.graph.links[input.link]);
    return link ? [String(link.origin_id), link.origin_slot] : null;
  },
};
true
"""


@pytest.fixture
def rows_ui(ui):  # noqa: F811  (the fixture imported above)
    ui.eval(ROWS)
    return ui


def row(lora, strength_model=1.0, strength_clip=1.0, block_weights="", on=True):
    return {"on": on, "lora": lora, "strength_model": strength_model, "strength_clip": strength_clip,
            "block_weights": block_weights}


def _stack(page) -> int:
    """A new LoRA Stack, once its rows are on the page."""
    stack = page.eval("__ll.add('LoRALabStack', 360, 60)")
    page.wait_for(f"__rows.ready({stack})", timeout=20)
    return stack


def _three_rows(page) -> int:
    stack = _stack(page)
    for _ in range(3):
        page.eval(f"__rows.add({stack})")
    for i, name in enumerate((STYLE, CHARACTER, DETAIL)):
        page.eval(f"__rows.pick({stack}, {i}, {json.dumps(name)})")
    page.eval(f"__rows.toggle({stack}, 1)")
    page.eval(f"__rows.strength({stack}, 2, 0, '0,5')")
    page.eval(f"__rows.strength({stack}, 2, 1, '-0.25')")
    page.eval(f"__rows.spec({stack}, 0, 'OUT=0')")
    return stack


EXPECTED = [row(STYLE, block_weights="OUT=0"), row(CHARACTER, on=False), row(DETAIL, 0.5, -0.25)]


def test_rows_added_turned_off_and_run_report_only_the_rows_that_are_on(rows_ui, server, out_dir):
    ui = rows_ui
    if not ui.eval("!!LiteGraph.registered_node_types.LoRALabE2ETinySDXL"):
        pytest.skip("no tiny model stand-in: ../shared/tools/comfy-host/make_tiny_models.py is missing")
    fresh = _stack(ui)
    assert ui.eval(f"__rows.value({fresh})") == []  # a new Stack has no row
    ui.eval("__ll.reset()")
    stack = _three_rows(ui)
    assert ui.eval(f"__rows.value({stack})") == EXPECTED
    assert ui.eval(f"__rows.shown({stack})") == [
        {"on": True, "lora": STYLE, "numbers": ["1", "1"], "spec": "OUT=0"},
        {"on": False, "lora": CHARACTER, "numbers": ["1", "1"], "spec": ""},
        {"on": True, "lora": DETAIL, "numbers": ["0.5", "-0.25"], "spec": ""}]
    assert ui.eval(f"__rows.root({stack}).querySelector('.loralab-row-summary').textContent") == "2 of 3 on"
    assert not ui.eval("__rows.jsonShown()")
    model = ui.eval("__ll.add('LoRALabE2ETinySDXL', 40, 60)")
    sink = ui.eval("__ll.add('LoRALabE2EModelSink', 800, 60)")
    ui.eval(f"__ll.node({model}).connect(0, __ll.node({stack}), __ll.node({stack}).findInputSlot('model'))")
    ui.eval(f"__ll.node({stack}).connect(0, __ll.node({sink}), 0)")
    prompt = ui.eval("__ll.app.graphToPrompt().then((p) => p.output)")
    inputs = prompt[str(stack)]["inputs"]
    assert json.loads(inputs["loras"]) == EXPECTED and not [k for k in inputs if k.startswith("loralab")]
    shot(ui, "stack_rows", [stack], "loralab_rows")

    # a seed of its own: the server has run this graph for another page (mode) and would take it from its cache
    ui.eval(f"__ll.widget({stack}, 'seed').value = {random.randrange(1, 2**31)}")
    ui.eval("__ll.app.queuePrompt(0, 1)")
    report = f"__ll.el({stack}, 'loralab_report')?.querySelector('pre')?.textContent"
    try:
        info = ui.wait_for(report, timeout=120)
    except AssertionError:
        with urllib.request.urlopen(server.url + "/history", timeout=30) as r:
            runs = list(json.loads(r.read()).values())
        raise AssertionError(f"no info on the Stack; the server's last run: {json.dumps(runs[-1:])[:3000]}") from None
    assert info.startswith("[1] ") and "\n\n[3] " in info and "[2]" not in info, info[:300]
    assert f"LoRA: {STYLE}" in info and f"LoRA: {DETAIL}" in info and CHARACTER not in info
    shot(ui, "stack_rows_run", [stack])


def test_move_and_remove_rows(rows_ui):
    ui = rows_ui
    stack = _three_rows(ui)
    ui.eval(f"__rows.row({stack}, 2).querySelector('.loralab-row-up').click()")
    assert [r["lora"] for r in ui.eval(f"__rows.value({stack})")] == [STYLE, DETAIL, CHARACTER]
    ui.eval(f"__rows.row({stack}, 0).querySelector('.loralab-row-remove').click()")
    assert ui.eval(f"__rows.value({stack})") == [EXPECTED[2], EXPECTED[1]]
    assert [r["lora"] for r in ui.eval(f"__rows.shown({stack})")] == [DETAIL, CHARACTER]


def test_a_saved_workflow_loads_with_its_rows(rows_ui):
    ui = rows_ui
    stack = _three_rows(ui)
    workflow = ui.eval("JSON.stringify(__ll.app.graph.serialize())")
    saved = next(n for n in json.loads(workflow)["nodes"] if n["id"] == stack)
    assert json.loads(saved["widgets_values"][0]) == EXPECTED
    assert saved["widgets_values"][1:] == ui.eval(f"['a', 'b', 'seed'].map((n) => __ll.widget({stack}, n).value)")
    ui.eval("__ll.reset()")
    assert ui.eval(f"!__ll.node({stack})")
    ui.eval(f"__ll.app.loadGraphData(JSON.parse({json.dumps(workflow)}))")
    ui.wait_for(f"__ll.node({stack}) && __rows.ready({stack}) && __rows.root({stack}).querySelectorAll('.loralab-lora-row').length === 3")
    assert ui.eval(f"__rows.value({stack})") == EXPECTED
    assert ui.eval(f"__rows.shown({stack})") == [
        {"on": True, "lora": STYLE, "numbers": ["1", "1"], "spec": "OUT=0"},
        {"on": False, "lora": CHARACTER, "numbers": ["1", "1"], "spec": ""},
        {"on": True, "lora": DETAIL, "numbers": ["0.5", "-0.25"], "spec": ""}]
    again = json.loads(ui.eval("JSON.stringify(__ll.app.graph.serialize())"))
    assert next(n for n in again["nodes"] if n["id"] == stack)["widgets_values"] == saved["widgets_values"]
    assert not ui.eval("__rows.jsonShown()")


def test_a_new_stack_stays_compact(rows_ui):
    """The node's height with one row and with three, title included, at zoom 1 (ONE_ROW_BUDGET,
    THREE_ROWS_BUDGET px); removing rows shrinks it again."""
    ui = rows_ui
    stack = _stack(ui)
    ui.eval(f"__rows.add({stack})")
    ui.eval(f"__rows.pick({stack}, 0, {json.dumps(STYLE)})")
    ui.pause(0.8)  # resize observer, a frame, the frontend's own layout pass
    one = ui.eval(f"__rows.height({stack})")
    for _ in range(2):
        ui.eval(f"__rows.add({stack})")
    ui.pause(0.8)
    three = ui.eval(f"__rows.height({stack})")
    shot(ui, "stack_rows_three", [stack])
    for _ in range(2):
        ui.eval(f"__rows.row({stack}, 1).querySelector('.loralab-row-remove').click()")
    ui.pause(0.8)
    back = ui.eval(f"__rows.height({stack})")
    mode = ui.target.mode
    print(f"\nLoRA Stack height ({ui.target.name}): 1 row {one:.0f} px, 3 rows {three:.0f} px")
    assert one <= ONE_ROW_BUDGET, f"{mode}: {one} px with one row"
    assert three <= THREE_ROWS_BUDGET, f"{mode}: {three} px with three rows"
    assert three > one + 40 and abs(back - one) <= 4, (one, three, back)


def test_a_five_slot_workflow_loads_as_rows_with_the_proposal_wired(rows_ui):
    ui = rows_ui
    with open(FIVE_SLOTS, encoding="utf-8") as f:
        workflow = json.load(f)
    ui.eval(f"__ll.app.loadGraphData({json.dumps(workflow)})")
    stack, report = 3, 10
    ui.wait_for(f"__ll.node({stack}) && __rows.ready({stack}) && __rows.root({stack}).querySelectorAll('.loralab-lora-row').length === 3")
    ui.pause(0.5)
    assert ui.eval(f"__rows.value({stack})") == [row(STYLE, 0.8, 0.7), row(CHARACTER, 1.0, 0.9, "SDXL-INALL"),
                                                 row(DETAIL, 0.5, 0.5)]
    assert ui.eval(f"__rows.value({report})") == [row(STYLE, 0.8, 0.8), row(CHARACTER, 1.0, 1.0, "SDXL-INALL"),
                                                  row(DETAIL, 0.5, 0.5)]
    assert ui.eval(f"['a', 'b', 'seed'].map((n) => __ll.widget({stack}, n).value)") == [0.5, 0.25, 7]
    thresholds = "['cos_threshold', 'overlap_threshold', 'balance', 'lower', 'samples', 'seed']"
    assert ui.eval(f"{thresholds}.map((n) => __ll.widget({report}, n).value)") == [0.1, 0.5, 0.25, 0.2, 512, 3]
    assert not [n for n in ui.eval(f"__rows.inputs({stack})") if n.startswith(("lora_name", "strength_", "block_weights_"))]
    assert ui.eval(f"__rows.outputs({report})") == ["report", "json", "cosine_map", "proposed_block_weights"]
    assert ui.eval(f"__rows.linksInto({stack}, 'block_weights')") == [str(report), 3]
    assert ui.eval(f"__rows.linksInto({stack}, 'model')") == ["2", 0]
    assert ui.eval(f"__rows.height({stack})") <= THREE_ROWS_BUDGET  # the five slots were 1183 px
    prompt = ui.eval("__ll.app.graphToPrompt().then((p) => p.output)")
    inputs = prompt[str(stack)]["inputs"]
    assert [str(inputs["block_weights"][0]), inputs["block_weights"][1]] == [str(report), 3] and json.loads(inputs["loras"])[1]["lora"] == CHARACTER
    assert not [k for k in inputs if k.startswith(("lora_name", "strength_", "block_weights_"))]
    shot(ui, "stack_rows_converted", [stack, report])

    saved = ui.eval("JSON.stringify(__ll.app.graph.serialize())")  # saved again: rows, and nothing converts twice
    ui.eval("__ll.reset()")
    ui.eval(f"__ll.app.loadGraphData(JSON.parse({json.dumps(saved)}))")
    ui.wait_for(f"__ll.node({stack}) && __rows.ready({stack}) && __rows.root({stack}).querySelectorAll('.loralab-lora-row').length === 3")
    ui.pause(0.5)
    assert ui.eval(f"__rows.value({stack})")[1] == row(CHARACTER, 1.0, 0.9, "SDXL-INALL")
    assert ui.eval(f"__rows.linksInto({stack}, 'block_weights')") == [str(report), 3]
    assert ui.eval(f"['a', 'b', 'seed'].map((n) => __ll.widget({stack}, n).value)") == [0.5, 0.25, 7]
