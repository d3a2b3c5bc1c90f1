"""The LoRA Loader's library filter in the real frontend, against the real /loralab/library: the
base-model select keeps the LoRAs that fit (chosen by hand, or followed from the graph's model once
a node up the MODEL links reported it), the search box finds LoRAs by trigger word, a click picks
one, and the picker's own options keep every name throughout. Metadata payloads stay text."""
from __future__ import annotations

import json
import os

from widget_page import shot
from xss_lora import PAYLOADS, XSS_FILE

#: LoRAs of the server's loras folder (tests/e2e/conftest.py) the filters must find among the others
SDXL = ["my_character_xl.safetensors", "my_detail_xl.safetensors", "my_style_xl.safetensors", XSS_FILE]
OHWX_XL = ["my_detail_xl.safetensors", "my_style_xl.safetensors"]  # kohya SDXL: "ohwx woman" (its folder's class tokens)
FLUX_TRIGGER = ("p3r5on", ["my_style_flux.safetensors"])  # ai-toolkit's trigger


def expected(server, names, arch="", query=""):
    """The names (of ``names``) the engine says fit ``arch`` and hold ``query``, read from the files
    themselves (not from the route), in the picker's order."""
    from loralab.library.index import Entry, read_facts
    root = os.path.join(server.base, "models", "loras")
    kept = [n for n in names if Entry(os.path.join(root, n), root, n, 0, 0, read_facts(os.path.join(root, n)))
            .wanted(arch or None, query)]
    return sorted(kept, key=lambda n: (n.casefold(), n))

READY = """
(async () => {
  for (let i = 0; i < 600; i++) {
    const r = await fetch('/loralab/library');
    const b = await r.json();
    if (b.status?.state === 'idle' && b.known === b.offered && b.entries.every((e) => e.hashes || e.error || e.not_lora)) {
      return {offered: b.offered, known: b.known};
    }
    await new Promise((res) => setTimeout(res, 200));
  }
  return null;
})()
"""


def library(page, node):
    return f"__ll.el({node}, 'loralab_info').querySelector('.loralab-library')"


#: a result's name as shown (the flag badge left out)
NAME = "(e) => [...e.childNodes].filter((c) => c.nodeType === 3).map((c) => c.textContent).join('')"


def results(page, node):
    return page.eval(f"[...{library(page, node)}.querySelectorAll('.loralab-result-name')].map({NAME})")


def wait_results(page, node, names):
    expected = json.dumps(names, separators=(",", ":"))
    try:
        page.wait_for(f"JSON.stringify([...{library(page, node)}.querySelectorAll('.loralab-result-name')]"
                      f".map({NAME})) === {json.dumps(expected)}", timeout=30)
    except AssertionError:
        status = page.eval(f"{library(page, node)}.querySelector('.loralab-library-status').textContent")
        raise AssertionError(f"results {results(page, node)} ({status!r}), expected {names}") from None


def choose_arch(page, node, arch):
    page.eval(f"(() => {{ const s = {library(page, node)}.querySelector('select'); s.value = {json.dumps(arch)};"
              "s.dispatchEvent(new Event('change')); })()")


def search(page, node, text):
    page.eval(f"(() => {{ const i = {library(page, node)}.querySelector('input'); i.value = {json.dumps(text)};"
              "i.dispatchEvent(new Event('input')); })()")


def test_the_filter_keeps_compatible_loras_and_finds_trigger_words(ui, server, out_dir):
    assert ui.eval(READY, timeout=150), "the library did not finish indexing the loras folder"
    node = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    options = ui.eval(f"[...__ll.widget({node}, 'lora_name').options.values]")
    assert set(SDXL) | {"flux_kohya.safetensors", "my_style.safetensors"} <= set(options)
    assert ui.eval(f"{library(ui, node)}.querySelector('select').value") == ""  # no model known yet: any
    assert results(ui, node) == []  # no filter, no list

    sdxl = expected(server, options, "sdxl")
    assert set(SDXL) <= set(sdxl) and not {"flux_kohya.safetensors", "my_style.safetensors"} & set(sdxl)
    choose_arch(ui, node, "sdxl")
    wait_results(ui, node, sdxl)
    status = ui.eval(f"{library(ui, node)}.querySelector('.loralab-library-status').textContent")
    assert status.startswith(f"{len(sdxl)} of {len(options)} LoRAs")
    ohwx_xl = expected(server, options, "sdxl", "OHWX woman")
    assert set(OHWX_XL) <= set(ohwx_xl) and "my_character_xl.safetensors" not in ohwx_xl
    search(ui, node, "OHWX woman")
    wait_results(ui, node, ohwx_xl)
    shot(ui, "library_filter", [node], "loralab_info")

    choose_arch(ui, node, "")
    search(ui, node, FLUX_TRIGGER[0])
    wait_results(ui, node, FLUX_TRIGGER[1])
    choose_arch(ui, node, "sdxl")
    wait_results(ui, node, [])
    assert "no LoRA matches" in ui.eval(f"{library(ui, node)}.querySelector('.loralab-library-status').textContent")

    # a trigger word that is a payload finds the file whose metadata carries it, as text
    search(ui, node, PAYLOADS["script"][:20])
    wait_results(ui, node, [XSS_FILE])
    detail = ui.eval(f"{library(ui, node)}.querySelector('.loralab-result-detail').textContent")
    assert detail.startswith("SDXL · rank 2") and PAYLOADS["script"][:30] in detail

    # a click picks the file; the picker's options are what they were
    search(ui, node, "ohwx")
    wait_results(ui, node, expected(server, options, "sdxl", "ohwx"))
    ui.eval(f"[...{library(ui, node)}.querySelectorAll('.loralab-result')]"
            f".find((b) => ({NAME})(b.querySelector('.loralab-result-name')) === 'my_style_xl.safetensors').click()")
    ui.wait_for(f"__ll.widget({node}, 'lora_name').value === 'my_style_xl.safetensors'")
    ui.wait_for(f"__ll.el({node}, 'loralab_info').querySelector('.loralab-ok .loralab-compact')?.textContent"
                ".startsWith('SDXL')", timeout=30)
    ui.wait_for(f"({NAME})({library(ui, node)}.querySelector('.loralab-current .loralab-result-name'))"
                " === 'my_style_xl.safetensors'")
    assert ui.eval(f"[...__ll.widget({node}, 'lora_name').options.values]") == options
    prompt = ui.eval("__ll.app.graphToPrompt().then((p) => p.output)")
    assert prompt[str(node)]["inputs"]["lora_name"] == "my_style_xl.safetensors"
    assert not [k for k in prompt[str(node)]["inputs"] if k.startswith("loralab")]  # the filter saves nothing


def test_the_select_follows_the_model_a_node_up_the_graph_reported(ui, server):
    assert ui.eval(READY, timeout=150)
    first = ui.eval("__ll.add('LoRALabLoader', 60, 60)")
    second = ui.eval("__ll.add('LoRALabLoader', 560, 60)")
    ui.eval(f"__ll.node({first}).connect(0, __ll.node({second}), 0)")  # MODEL -> model
    # what the frontend receives when the first loader has run on a Flux model
    ui.eval(f"__ll.node({first}).onExecuted({{text: ['applied'], loralab_model_arch: ['flux']}})")
    ui.wait_for(f"{library(ui, second)}.querySelector('select').value === 'flux'")
    label = ui.eval(f"{library(ui, second)}.querySelector('select').selectedOptions[0].textContent")
    assert label == "Flux.1 (this graph)"
    flux = expected(server, ui.eval(f"[...__ll.widget({second}, 'lora_name').options.values]"), "flux")
    assert {"flux_kohya.safetensors", "my_style_flux.safetensors"} <= set(flux) and XSS_FILE not in flux
    wait_results(ui, second, flux)
    choose_arch(ui, second, "")  # the user's own choice wins over the graph's from now on
    ui.eval(f"__ll.node({first}).onExecuted({{text: ['applied'], loralab_model_arch: ['sdxl']}})")
    ui.pause(0.3)
    assert ui.eval(f"{library(ui, second)}.querySelector('select').value") == ""
    ui.eval(f"(() => {{ __ll.node({first}).onExecuted({{loralab_model_arch: ['<img src=x onerror=alert(1)>']}}); "
            "return true; })()")
    assert ui.eval(f"__ll.node({first}).loralab.modelArch") == "sdxl"  # an id that is no arch id is ignored
