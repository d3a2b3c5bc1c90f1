"""The metadata panel's "more" part in the real frontend: a kohya SDXL LoRA's learning rate,
optimizer, network module, base checkpoint, image count and top tags show from the route's small
default answer, and the details (metadata, tags per folder, modules per block) are fetched only
when their fold is opened. Screenshots: tests/e2e/out/."""
from __future__ import annotations

import json
import urllib.request

from widget_page import shot, wait_panel
from xss_lora import PAYLOADS, XSS_FILE

#: a kohya SDXL LoRA the server's loras folder holds (the fixture's metadata: tests/host/workflow_kit.LORAS)
LORA = "my_style_xl.safetensors"
#: the route's default answer for it stays under this many bytes (the whole summary is ~300 KB)
PANEL_BUDGET = 4096

#: every lora_info request the page makes from now on: [{route, status}]
RECORD_REQUESTS = """
(() => {
  const api = window.comfyAPI.api.api;
  window.__llRequests = [];
  if (!api.__llOriginalFetch) api.__llOriginalFetch = api.fetchApi;
  api.fetchApi = async function (route, ...rest) {
    const res = await api.__llOriginalFetch.call(this, route, ...rest);
    if (String(route).startsWith("/loralab/lora_info")) window.__llRequests.push({ route: String(route), status: res.status });
    return res;
  };
  return true;
})()
"""
RESTORE = "(() => { const api = window.comfyAPI.api.api; if (api.__llOriginalFetch) api.fetchApi = api.__llOriginalFetch; return true; })()"


#: how many px of the panel's content its widget cuts off (0: the node grew with it)
CLIPPED = """(() => { const e = __ll.el(%d, 'loralab_info');
  return e.firstElementChild.getBoundingClientRect().height - e.getBoundingClientRect().height; })()"""


def rows(page, node: int) -> dict:
    return page.eval(f"""Object.fromEntries([...__ll.el({node}, 'loralab_info').querySelectorAll('.loralab-details > .loralab-row')]
      .filter((r) => r.children.length === 2).map((r) => [r.children[0].textContent, r.children[1].textContent]))""")


def test_the_default_answer_is_small_and_details_hold_the_rest(server):
    url = f"{server.url}/api/loralab/lora_info?name={LORA}"
    with urllib.request.urlopen(url, timeout=30) as r:
        lean = r.read()
    with urllib.request.urlopen(url + "&details=1", timeout=30) as r:
        full = json.loads(r.read())
    assert len(lean) < PANEL_BUDGET, len(lean)
    panel = json.loads(lean)
    assert "modules" not in panel and "metadata" not in panel and len(full["modules"]) == 986
    assert panel["coverage"]["blocks"] == full["coverage"]["blocks"] and panel["training"]["optimizer"] == "AdamW8bit"


def test_more_shows_the_training_facts_and_details_are_fetched_when_opened(ui, out_dir):
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(RECORD_REQUESTS)
    try:
        ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(LORA)})")
        wait_panel(ui, node)
        panel = f"__ll.el({node}, 'loralab_info')"
        ui.eval(f"{panel}.querySelector('.loralab-toggle').click()")
        ui.wait_for(f"{panel}.querySelector('.loralab-details')")
        shown = rows(ui, node)
        assert shown["learning rate"] == "1e-4 (text encoder 5e-5)", shown
        assert shown["optimizer"] == "AdamW8bit · cosine"
        assert shown["network"] == "networks.lora"
        assert shown["trained on"] == "sd_xl_base_1.0.safetensors (sdxl_base_v1-0)"
        assert shown["images"] == "25 (250 per epoch with repeats)"
        assert shown["top tags"].startswith("ohwx woman (25), 1girl (23), solo (22), long hair (17)")
        assert shown["trained"] == "1280 steps · 10 epochs · 1024x1024"
        requests = ui.eval("window.__llRequests")
        assert requests and not [r for r in requests if "details=1" in r["route"]], requests
        shot(ui, "metadata_panel_more", [node], "loralab_info")

        ui.eval(f"{panel}.querySelector('.loralab-more-toggle').click()")
        ui.wait_for(f"{panel}.querySelector('.loralab-more .loralab-section')", timeout=30)
        details = ui.eval(f"{panel}.querySelector('.loralab-more').textContent")
        assert "caption tags per folder" in details and "10_ohwx woman (25 images): ohwx woman 25, 1girl 23" in details
        assert "986 modules per block: BASE" in details and "ss_network_dim: 32" in details
        assert ui.eval(f"{panel}.querySelector('.loralab-more-toggle').textContent") == "hide details"
        fetched = [r for r in ui.eval("window.__llRequests") if "details=1" in r["route"]]
        assert [r["status"] for r in fetched] == [200], fetched
        ui.pause(0.8)  # resize observer, a frame, the frontend's own layout pass
        assert abs(ui.eval(CLIPPED % node)) <= 8, "the node did not grow with the details"
        ui.eval("__ll.app.canvas.ds.offset = [0, -300]; __ll.app.graph.setDirtyCanvas(true, true)")
        shot(ui, "metadata_panel_details", [node], "loralab_info")

        # closed and opened again: the page's copy, revalidated (304)
        ui.eval(f"{panel}.querySelector('.loralab-more-toggle').click()")
        ui.wait_for(f"!{panel}.querySelector('.loralab-more')")
        ui.eval(f"{panel}.querySelector('.loralab-more-toggle').click()")
        ui.wait_for(f"{panel}.querySelector('.loralab-more .loralab-section')", timeout=30)
        fetched = [r for r in ui.eval("window.__llRequests") if "details=1" in r["route"]]
        assert [r["status"] for r in fetched] == [200, 304], fetched
    finally:
        ui.eval(RESTORE)


def test_hostile_metadata_in_more_and_details_is_text(ui):
    """The payload LoRA: its optimizer, schedule, network algorithm, checkpoint, tags and every
    metadata field show as text in "more" and the details (the ui fixture checks nothing ran)."""
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    ui.eval(f"__ll.pick({node}, 'lora_name', {json.dumps(XSS_FILE)})")
    wait_panel(ui, node)
    panel = f"__ll.el({node}, 'loralab_info')"
    ui.eval(f"{panel}.querySelector('.loralab-toggle').click()")
    ui.wait_for(f"{panel}.querySelector('.loralab-details')")
    shown = rows(ui, node)
    assert shown["optimizer"] == f"AdamW ({PAYLOADS['svg']}) · {PAYLOADS['script'][:39]}…"  # the schedule cut
    assert shown["network"] == f"networks.lora ({PAYLOADS['img'][:39]}…)"
    assert shown["trained on"] == "L" * 79 + "… (sdxl_base_v1-0)"
    assert PAYLOADS["js_url"] in shown["top tags"] and "safe⟨U+202E⟩gnp.exe⟨U+202C⟩ (10)" in shown["top tags"]
    ui.eval(f"{panel}.querySelector('.loralab-more-toggle').click()")
    ui.wait_for(f"{panel}.querySelector('.loralab-more .loralab-section')", timeout=30)
    details = ui.eval(f"{panel}.querySelector('.loralab-more').textContent")
    for key in ("script", "img", "js_url", "entities"):
        assert PAYLOADS[key] in details, key
