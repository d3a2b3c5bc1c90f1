"""LoRA Lab's widgets in the real frontend: metadata from a LoRA whose metadata is an XSS corpus
shows as text and runs nothing; the block editor round-trips a spec through THE Python parser;
the Inspect report and the loss chart appear after a run. Screenshots: tests/e2e/out/."""
from __future__ import annotations

import json
import os
import urllib.request

import pytest
from widget_page import HELPERS, shot, wait_panel
from xss_lora import MARKUP_FILE, PAYLOADS, XSS_FILE

def test_metadata_panel_shows_the_payloads_as_text(ui, out_dir):
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    compact = ui.eval(f"__ll.el({node}, 'loralab_info').querySelector('.loralab-compact').textContent")
    assert "SDXL" in compact and "rank 2" in compact
    chips = ui.eval(f"[...__ll.el({node}, 'loralab_info').querySelectorAll('.loralab-chip')].map((c) => c.textContent)")
    for key in ("script", "img", "js_url", "entities"):
        assert PAYLOADS[key] in chips, key
    assert "safe⟨U+202E⟩gnp.exe⟨U+202C⟩" in chips and "oh⟨U+200B⟩wx" in chips
    ui.eval(f"__ll.el({node}, 'loralab_info').querySelector('.loralab-toggle').click()")
    ui.wait_for(f"__ll.el({node}, 'loralab_info').querySelector('.loralab-details')")
    details = ui.eval(f"__ll.el({node}, 'loralab_info').querySelector('.loralab-details').textContent")
    assert XSS_FILE in details and "1280 steps" in details and "kohya" in details
    assert ui.eval(f"__ll.el({node}, 'loralab_info').querySelector('.loralab-warning') !== null")
    shot(ui, "metadata_panel", [node], "loralab_info")


def test_a_file_name_with_markup_is_not_offered(ui):
    """ComfyUI's combo menu renders option names as markup: such a LoRA is left out of every list."""
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    options = ui.eval(f"__ll.widget({node}, 'lora_name').options.values")
    assert XSS_FILE in options and MARKUP_FILE not in options


def test_trigger_chip_copies_and_shift_click_adds_to_the_prompt(ui):
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    encode = ui.eval("__ll.add('CLIPTextEncode', 520, 60)")
    ui.eval(f"__ll.node({node}).connect(1, __ll.node({encode}), 0)")
    ui.eval(f"__ll.widget({encode}, 'text').value = 'a photo'")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    chip = f"[...__ll.el({node}, 'loralab_info').querySelectorAll('.loralab-chip')].find((c) => c.textContent === {json.dumps(PAYLOADS['img'])})"
    ui.eval(f"{chip}.dispatchEvent(new MouseEvent('click', {{bubbles: true, shiftKey: true}}))")
    assert ui.eval(f"__ll.widget({encode}, 'text').value") == "a photo, " + PAYLOADS["img"]
    ui.eval(f"{chip}.click()")
    ui.wait_for(f"{chip}.classList.contains('loralab-copied') || {chip}.classList.contains('loralab-copy-failed')")


def test_failed_fetch_shows_a_short_error_and_the_node_keeps_working(ui, out_dir):
    merge = ui.eval("__ll.add('LoRALabMerge', 60, 60)")
    ui.eval(f"__ll.pick({merge}, 'lora_name_1', {json.dumps(XSS_FILE)})")
    ui.eval(f"__ll.pick({merge}, 'lora_name_2', 'broken.safetensors')")
    wait_panel(ui, merge, "loralab-error")
    wait_panel(ui, merge, "loralab-ok")
    labels = ui.eval(f"[...__ll.el({merge}, 'loralab_info').querySelectorAll('.loralab-slot')].map((s) => s.textContent)")
    assert labels == ["#1", "#2"]  # one per lora_name_<i> picker
    error = ui.eval(f"__ll.el({merge}, 'loralab_info').querySelector('.loralab-error .loralab-compact').textContent")
    assert error.startswith("info unavailable: ") and len(error) <= 200
    shot(ui, "merge_with_error", [merge], "loralab_info")
    ui.eval(f"__ll.pick({merge}, 'lora_name_2', {json.dumps(XSS_FILE)})")
    ui.wait_for(f"__ll.el({merge}, 'loralab_info').querySelectorAll('.loralab-ok').length === 2")


def test_block_editor_round_trips_a_spec_through_the_python_parser(ui, out_dir):
    from loralab.blocks.spec import parse_block_weights

    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 21")
    assert ui.eval(f"__ll.el({node}, 'loralab_blocks').querySelector('select[title^=architecture]').value") == "sdxl"

    ui.eval(f"__ll.type({node}, 'block_weights', 'IN04-IN08=0.5, OUT=0')")
    sliders = ui.eval(f"__ll.sliders({node})")
    assert (sliders["IN05"]["value"], sliders["OUT03"]["value"], sliders["BASE"]["value"]) == (0.5, 0, 1)

    ui.eval(f"__ll.slide({node}, 'M00', 0.25)")
    spec = ui.eval(f"__ll.widget({node}, 'block_weights').value")
    assert spec == "BASE=1, IN00-IN03=1, IN04-IN08=0.5, M00=0.25, OTHER=1, default=0"
    sliders = ui.eval(f"__ll.sliders({node})")
    parsed = parse_block_weights(spec, "sdxl")
    assert {b: parsed.weight(b) for b in sliders} == {b: s["value"] for b, s in sliders.items()}
    shot(ui, "block_editor", [node], "loralab_blocks")

    prompt = ui.eval("__ll.app.graphToPrompt().then((p) => p.output)")
    assert prompt[str(node)]["inputs"]["block_weights"] == spec
    assert not [k for k in prompt[str(node)]["inputs"] if k.startswith("loralab")]
    values = ui.eval(f"__ll.app.graph.serialize().nodes.find((n) => n.id === {node}).widgets_values")
    own = ui.eval(f"__ll.node({node}).widgets.filter((w) => !w.name.startsWith('loralab')).length")
    assert spec in values and len([v for v in values if v is not None]) == own  # the editor saves nothing of its own

    ui.eval(f"__ll.choose({node}, 'preset', 'OUTALL')")
    assert ui.eval(f"__ll.widget({node}, 'block_weights').value") == "OUTALL"
    sliders = ui.eval(f"__ll.sliders({node})")
    outall = parse_block_weights("OUTALL", "sdxl")
    assert {b: outall.weight(b) for b in sliders} == {b: s["value"] for b, s in sliders.items()}

    ui.eval(f"__ll.type({node}, 'block_weights', 'IN09=1')")
    status = ui.eval(f"__ll.el({node}, 'loralab_blocks').querySelector('.loralab-status').textContent")
    assert status == "IN09 does not exist in SDXL (00..08)"
    assert all(s["disabled"] for s in ui.eval(f"__ll.sliders({node})").values())

    ui.eval(f"__ll.type({node}, 'block_weights', 'D0-5=1, S=0.3, default=0')")
    ui.eval(f"__ll.pick({node}, 'lora_name', 'flux_kohya.safetensors')")
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 62")
    sliders = ui.eval(f"__ll.sliders({node})")
    assert (sliders["D05"]["value"], sliders["D06"]["value"], sliders["S37"]["value"]) == (1, 0, 0.3)
    shot(ui, "block_editor_flux", [node], "loralab_blocks")


def test_inspect_report_appears_on_the_node(ui, out_dir):
    node = ui.eval("__ll.add('LoRALabInspect', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    ui.eval("__ll.app.queuePrompt(0, 1)")
    ui.wait_for(f"__ll.el({node}, 'loralab_report')?.querySelector('pre')", timeout=90)
    report = ui.eval(f"__ll.el({node}, 'loralab_report').querySelector('pre').textContent")
    assert PAYLOADS["script"] in report and "SDXL" in report
    ui.eval(f"__ll.pick({node}, 'lora_name', 'flux_kohya.safetensors')")
    ui.eval("__ll.app.queuePrompt(0, 1)")
    ui.wait_for(f"__ll.el({node}, 'loralab_report').querySelector('pre').textContent.includes('\\nfile: flux_kohya')",
                timeout=90)
    shot(ui, "inspect_report", [node], "loralab_report")


def test_loss_chart_draws_training_progress(ui, out_dir):
    node = ui.eval("__ll.add('LoRALabTrainE2EProbe', 60, 60)")
    assert ui.eval(f"__ll.widget({node}, 'loralab_loss') === undefined")  # the chart comes with the first event
    # set, not assumed: frontend 1.49 keeps widget values by node id and name across graph.clear(),
    # so a node 1 with a "steps" widget from an earlier test (the compare grid's 20) would lend its value
    ui.eval(f"__ll.widget({node}, 'steps').value = 120")
    ui.eval("__ll.app.queuePrompt(0, 1)")
    ui.wait_for(f"__ll.el({node}, 'loralab_loss')?.querySelector('.loralab-status').textContent.startsWith('step 120 / 120')",
                timeout=90)
    ui.pause(0.3)
    painted = ui.eval(f"""(() => {{
      const c = __ll.el({node}, 'loralab_loss').querySelector('canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n; }})()""")
    assert painted > 500
    shot(ui, "loss_chart", [node], "loralab_loss")


def test_a_saved_workflow_reloads_with_panel_and_sliders(ui):
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    ui.eval(f"__ll.type({node}, 'block_weights', 'OUT=0, default=0.5')")
    workflow = ui.eval("JSON.stringify(__ll.app.graph.serialize())")
    ui.eval("__ll.reset()")
    ui.eval(f"__ll.app.loadGraphData(JSON.parse({json.dumps(workflow)}))")
    ui.wait_for(f"__ll.node({node}) && Object.keys(__ll.sliders({node})).length === 21")
    wait_panel(ui, node)
    assert ui.eval(f"__ll.widget({node}, 'block_weights').value") == "OUT=0, default=0.5"
    sliders = ui.eval(f"__ll.sliders({node})")
    assert (sliders["OUT04"]["value"], sliders["IN04"]["value"], sliders["BASE"]["value"]) == (0, 0.5, 0.5)


GEOMETRY = """
((id, name) => {
  const n = __ll.node(id), e = __ll.el(id, name);
  const vue = document.querySelector(`[data-node-id="${id}"]`);
  const c = __ll.app.canvas, r = c.canvas.getBoundingClientRect(), scale = c.ds.scale;
  const box = vue ? vue.getBoundingClientRect() : {
    left: r.left + (n.pos[0] + c.ds.offset[0]) * scale, width: n.size[0] * scale,
    bottom: r.top + (n.pos[1] + n.size[1] + c.ds.offset[1]) * scale };
  const w = e.getBoundingClientRect(), content = e.firstElementChild.getBoundingClientRect();
  return { height: n.size[1], nodeWidth: box.width, width: w.width, gap: box.bottom - w.bottom,
           clipped: content.height - w.height, vue: !!vue };
})(%d, %s)
"""


def geometry(page, node: int, name: str) -> dict:
    page.pause(0.8)  # resize observer, a frame, the frontend's own layout pass
    return page.eval(GEOMETRY % (node, json.dumps(name)))


def test_node_height_follows_its_content_both_ways(ui):
    """62 Flux sliders replaced by SDXL's 21: the node shrinks with its editor (no blank band), and
    grows again without cutting the editor off."""
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    states = []
    for lora, count in (("flux_kohya.safetensors", 62), ("my_style_xl.safetensors", 21), ("flux_kohya.safetensors", 62)):
        ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(lora)})")
        ui.wait_for(f"Object.keys(__ll.sliders({node})).length === {count}")
        wait_panel(ui, node)
        g = geometry(ui, node, "loralab_blocks")
        assert abs(g["clipped"]) <= 8, f"{lora}: the editor's box and its content differ by {-g['clipped']} px: {g}"
        # Nodes 2.0 draws the node's "advanced inputs" toggle (ComfyUI 0.33's advanced inputs) below the editor
        budget = 64 if g["vue"] else 48
        assert 0 <= g["gap"] <= budget, f"{lora}: {g['gap']} px between the editor and the node's bottom: {g}"
        states.append(g)
    flux, sdxl, again = states
    assert sdxl["height"] < flux["height"] - 30 and again["height"] > sdxl["height"] + 30, states


PANEL_SETTING = "Comfy.RightSidePanel.IsOpen"


def test_properties_panel_leaves_the_widgets_alone(ui):
    """The properties panel (frontend 1.37+) lists the node's inputs, not LoRA Lab's widgets, and
    once it has shown the node the widgets still span the node."""
    t = ui.target
    if t.vtuple() < (1, 37):
        pytest.skip(f"frontend {t.version} has no properties panel ({PANEL_SETTING} came with 1.37)")
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 21")
    before = {w: geometry(ui, node, w) for w in ("loralab_info", "loralab_blocks")}
    ui.eval(f"__ll.app.canvas.selectNode(__ll.node({node}))")
    ui.eval(f"__ll.app.extensionManager.setting.set({json.dumps(PANEL_SETTING)}, true)")
    try:
        ui.wait_for("[...document.querySelectorAll('*')].some((e) => !e.closest('.loralab-widget') "
                    "&& e.children.length === 0 && e.textContent.trim() === 'block_weights')", timeout=15)
        listed = ui.eval("[...document.querySelectorAll('*')].filter((e) => !e.closest('.loralab-widget') "
                         "&& e.children.length === 0 && /^loralab_/.test(e.textContent.trim())).map((e) => e.textContent.trim())")
        assert listed == [], f"the properties panel lists LoRA Lab's widgets as inputs: {listed}"
    finally:
        ui.eval(f"__ll.app.extensionManager.setting.set({json.dumps(PANEL_SETTING)}, false)")
        ui.eval("__ll.app.canvas.deselectAll?.()")
    for w, b in before.items():
        after = geometry(ui, node, w)
        assert abs(after["width"] - b["width"]) <= 2 and after["width"] >= 0.9 * after["nodeWidth"] - 30, (w, b, after)


def test_panel_follows_the_graph_after_a_reset(ui):
    """Loading another workflow (the graph cleared and configured again, same node ids) refetches
    each panel for the LoRA its node now picks."""
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    first = json.loads(ui.eval("JSON.stringify(__ll.app.graph.serialize())"))
    second = json.loads(json.dumps(first))
    values = next(n for n in second["nodes"] if n["id"] == node)["widgets_values"]
    values[values.index(XSS_FILE)] = "flux_kohya.safetensors"
    compact = f"__ll.el({node}, 'loralab_info')?.querySelector('.loralab-ok .loralab-compact')?.textContent ?? ''"
    for graph, arch in ((second, "Flux"), (first, "SDXL"), (second, "Flux")):
        ui.eval(f"__ll.app.loadGraphData({json.dumps(graph)})")
        ui.wait_for(f"({compact}).split(' · ')[0].startsWith({json.dumps(arch)})", timeout=20)
    ui.eval("__ll.app.graph.clear()")
    ui.eval(f"__ll.app.loadGraphData({json.dumps(first)})")
    ui.wait_for(f"({compact}).split(' · ')[0].startsWith('SDXL')", timeout=20)


def _write_lora(server, name: str, fixture: str, base_model: str) -> None:
    from loralab.files.safetensors import save_tensors
    from loralab_testkit import fixture_tensors
    path = os.path.join(server.base, "models", "loras", name)
    save_tensors(path + ".tmp", fixture_tensors(fixture, rank=2), {"ss_base_model_version": base_model})
    os.replace(path + ".tmp", path)


def press_r(page) -> None:
    """ComfyUI's refresh key, pressed with nothing focused."""
    page.eval("document.activeElement?.blur?.(); for (const type of ['keydown', 'keyup']) "
              "window.dispatchEvent(new KeyboardEvent(type, {key: 'r', code: 'KeyR', bubbles: true}))")


def test_panel_follows_a_file_overwritten_or_deleted_under_the_same_name(ui, server):
    """A retrain under the same name (another arch) shows after R and after a re-pick, on new nodes
    too, and the block editor follows it; a deleted file shows as missing."""
    import uuid
    name = f"stale_{uuid.uuid4().hex[:8]}.safetensors"
    path = os.path.join(server.base, "models", "loras", name)
    try:
        _overwrite_and_delete(ui, server, name, path)
    finally:
        if os.path.exists(path):
            os.remove(path)


def _overwrite_and_delete(ui, server, name: str, path: str) -> None:
    _write_lora(server, name, "kohya_sdxl_lora", "sdxl_base_v1-0")
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    press_r(ui)  # the new file in the pickers' lists
    ui.wait_for(f"__ll.widget({node}, 'lora_name').options.values.includes({json.dumps(name)})", timeout=30)
    compact = f"(__ll.el({node}, 'loralab_info')?.querySelector('.loralab-ok .loralab-compact')?.textContent ?? '')"
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(name)})")
    ui.wait_for(f"{compact}.startsWith('SDXL')", timeout=30)
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 21")

    _write_lora(server, name, "kohya_flux_lora", "flux1")
    press_r(ui)
    ui.wait_for(f"{compact}.startsWith('Flux')", timeout=30)
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 62")
    assert ui.eval(f"__ll.el({node}, 'loralab_blocks').querySelector('select[title^=architecture]').value") != "sdxl"

    _write_lora(server, name, "kohya_sdxl_lora", "sdxl_base_v1-0")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(name)})")  # re-pick the same name
    ui.wait_for(f"{compact}.startsWith('SDXL')", timeout=30)
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 21")

    _write_lora(server, name, "kohya_flux_lora", "flux1")
    other = ui.eval("__ll.add('LoRALabLoader', 60, 500)")  # a new node asks again, not the page's old answer
    ui.eval(f"__ll.pick({other}, 'lora_name', {json.dumps(name)})")
    ui.wait_for(f"(__ll.el({other}, 'loralab_info')?.querySelector('.loralab-ok .loralab-compact')?.textContent ?? '').startsWith('Flux')",
                timeout=30)

    os.remove(path)
    press_r(ui)
    missing = f"__ll.el({node}, 'loralab_info').querySelector('.loralab-missing .loralab-compact')"
    ui.wait_for(missing, timeout=30)
    assert ui.eval(f"{missing}.textContent").startswith("missing")
    assert ui.eval(f"__ll.el({other}, 'loralab_info').querySelector('.loralab-missing')") is not None


def test_lora_info_revalidates_with_etag(server):
    """The route names the file's identity in an ETag and answers 304 while it holds."""
    import urllib.error
    import urllib.request
    from xss_lora import XSS_FILE as _  # noqa: F401  (the loras folder is the server's)
    url = server.url + "/api/loralab/lora_info?name=flux_kohya.safetensors"
    with urllib.request.urlopen(url, timeout=30) as r:
        etag = r.headers["ETag"]
        st = os.stat(os.path.join(server.base, "models", "loras", "flux_kohya.safetensors"))
        assert etag == f'"{st.st_size}-{st.st_mtime_ns}"'
    req = urllib.request.Request(url, headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 304
    req = urllib.request.Request(url, headers={"If-None-Match": '"0-0"'})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and json.loads(r.read())["arch"]["id"] == "flux"


def test_sliders_show_snap_reset_type_dim_and_invert(ui, out_dir):
    from loralab.blocks.spec import parse_block_weights

    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    ui.wait_for(f"Object.keys(__ll.sliders({node})).length === 21")
    editor = f"__ll.el({node}, 'loralab_blocks')"
    boxes = f"Object.fromEntries([...{editor}.querySelectorAll('.loralab-cell-value')].map((b) => [b.dataset.valueOf, b.value]))"

    # the blocks this LoRA touches (its lora_info) stay bright; the others are dimmed
    touched = ui.eval(f"__ll.node({node}).loralab.panel.info('').coverage.blocks")
    assert touched and "IN04" in touched
    ui.wait_for(f"{editor}.querySelector('.loralab-cell[data-untouched=true]')")
    dimmed = ui.eval(f"[...{editor}.querySelectorAll('.loralab-cell[data-untouched=true] input[type=range]')].map((i) => i.dataset.block)")
    assert sorted(dimmed) == sorted(set(ui.eval(f"__ll.sliders({node})")) - set(touched))
    assert ui.eval(f"getComputedStyle({editor}.querySelector('.loralab-cell[data-untouched=true]')).opacity") < "1"

    # every slider shows its value
    ui.eval(f"__ll.type({node}, 'block_weights', 'IN04-IN08=0.5, OUT=0')")
    shown = ui.eval(boxes)
    assert (shown["IN05"], shown["OUT03"], shown["BASE"]) == ("0.5", "0", "1")

    # a slide near 1 or 0 snaps; elsewhere it keeps its value, shown in the box
    ui.eval(f"__ll.slide({node}, 'IN05', 0.97)")
    ui.eval(f"__ll.slide({node}, 'OUT01', 0.03)")
    ui.eval(f"__ll.slide({node}, 'M00', 0.62)")
    sliders = ui.eval(f"__ll.sliders({node})")
    assert (sliders["IN05"]["value"], sliders["OUT01"]["value"], sliders["M00"]["value"]) == (1, 0, 0.62)
    assert ui.eval(boxes)["M00"] == "0.62"
    spec = ui.eval(f"__ll.widget({node}, 'block_weights').value")
    parsed = parse_block_weights(spec, "sdxl")
    assert (parsed.weight("IN05"), parsed.weight("OUT01"), parsed.weight("M00")) == (1, 0, 0.62)

    # double-click resets to 1; a typed value is taken as typed
    ui.eval(f"{editor}.querySelector('input[type=range][data-block=\"IN06\"]').dispatchEvent(new MouseEvent('dblclick', {{bubbles: true}}))")
    ui.eval(f"(() => {{ const b = {editor}.querySelector('[data-value-of=\"OUT04\"]'); b.value = '0.33'; "
            "b.dispatchEvent(new Event('change')); })()")
    sliders = ui.eval(f"__ll.sliders({node})")
    assert (sliders["IN06"]["value"], sliders["OUT04"]["value"]) == (1, 0.33)
    before = parse_block_weights(ui.eval(f"__ll.widget({node}, 'block_weights').value"), "sdxl")
    assert (before.weight("IN06"), before.weight("OUT04")) == (1, 0.33)

    # invert: w -> 1 - w for every block
    ui.eval(f"{editor}.querySelector('.loralab-invert').click()")
    after = parse_block_weights(ui.eval(f"__ll.widget({node}, 'block_weights').value"), "sdxl")
    blocks = list(ui.eval(f"__ll.sliders({node})"))
    assert {b: round(after.weight(b), 6) for b in blocks} == {b: round(1 - before.weight(b), 6) for b in blocks}
    assert ui.eval(boxes)["OUT04"] == "0.67"

    # presets: only this arch's (no SD1 or Flux ones on an SDXL LoRA)
    presets = ui.eval(f"[...{editor}.querySelectorAll('select[title^=preset] option')].map((o) => o.value)")
    assert "OUTALL" in presets and "SDXL-OUTALL" in presets
    assert not [p for p in presets if p.startswith(("SD-", "FLUX-"))]
    shot(ui, "block_editor_sliders", [node], "loralab_blocks")


def test_loss_chart_shows_rate_eta_saved_file_and_survives_a_reload(ui, server):
    """it/s and ETA while the run goes, the saved file at its end; a reloaded page draws the same
    run again from GET /loralab/train_progress."""
    node = ui.eval("__ll.add('LoRALabTrainE2EProbe', 60, 60)")
    ui.eval(f"__ll.widget({node}, 'steps').value = 400")
    status = f"(__ll.el({node}, 'loralab_loss')?.querySelector('.loralab-status').textContent ?? '')"
    ui.eval("__ll.app.queuePrompt(0, 1)")
    live = ui.wait_for(f"/ it\\/s · ETA /.test({status}) && {status}", timeout=90)
    assert live.startswith("step ") and "/ 400" in live
    final = ui.wait_for(f"{status}.includes('saved ') && {status}", timeout=90)
    assert final.startswith("step 400 / 400") and final.endswith("saved probe/probe_lora.safetensors"), final
    assert "ETA" not in final

    with urllib.request.urlopen(f"{server.url}/api/loralab/train_progress?node={node}", timeout=30) as r:
        history = json.loads(r.read())
    assert len(history["events"]) == 400 and history["saved"]["saved"] == "probe/probe_lora.safetensors"
    with urllib.request.urlopen(f"{server.url}/api/loralab/train_progress", timeout=30) as r:
        assert str(node) in json.loads(r.read())["nodes"]

    workflow = ui.eval("JSON.stringify(__ll.app.graph.serialize())")
    try:
        dialogs = len(ui.dialogs)
        ui.eval("location.reload()")
        ui.pause(1)
        # the frontend asks before leaving a modified workflow; cdp.Page accepts: that one is expected
        assert all(d.startswith("beforeunload") for d in ui.dialogs[dialogs:])
        del ui.dialogs[dialogs:]
        ui.wait_for("window.comfyAPI?.app?.app?.graph && document.getElementById('loralab-styles')", timeout=90)
        ui.eval(HELPERS)
        ui.eval(f"__ll.app.loadGraphData(JSON.parse({json.dumps(workflow)}))")
        replayed = ui.wait_for(f"{status}.includes('saved ') && {status}", timeout=30)
        assert replayed.startswith("step 400 / 400") and "probe/probe_lora.safetensors" in replayed
        ui.pause(0.3)
        painted = ui.eval(f"""(() => {{
          const c = __ll.el({node}, 'loralab_loss').querySelector('canvas');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
          return n; }})()""")
        assert painted > 500
    finally:
        ui.eval(HELPERS)
