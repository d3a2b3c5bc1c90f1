// The block-weight editor on nodes with a ``block_weights`` (or ``block_weights_<i>``) text
// widget: sliders per absolute block of the selected LoRA's arch, a preset picker, synced both
// ways with the text widget. The workflow keeps only the text, so it stays plain and shareable.
// The node's token inputs (``a``, ``b``, ``seed`` of the loader and the stack) show only while a
// spec on it uses their tokens (A, B, R or U) or a link feeds them.

import { el } from "./lib/dom.js";
import { buildSliders, describeBlock, invertValues, markTouched, presetsForArch, setOptions, showValues } from "./lib/editor_view.js";
import { SpecError, parseSpec, serialiseSpec, specFits, specInputs } from "./lib/spec.js";
import { displayText } from "./lib/text.js";
import { fitHeight, setHidden } from "./node_layout.js";
import { blockCatalog } from "./server_data.js";
import { addContentWidget, onWidgetChange } from "./widget.js";

export const SPEC = /^block_weights(_\d+)?$/;

/** Show the token inputs named in ``names`` that a spec among ``specs`` (text widgets) uses or a
 * link feeds, hide the others, and fit the node when that changed. */
export function showTokenInputs(node, specs, names) {
  const used = new Set(specs.flatMap((w) => specInputs(w.value)));
  const linked = (w) => (node.inputs ?? []).some((i) => i.widget?.name === w.name && i.link != null);
  let changed = false;
  for (const name of names) {
    const w = node.widgets.find((x) => x.name === name);
    if (w) changed = setHidden(node, w, !used.has(name) && !linked(w)) || changed;
  }
  if (changed) fitHeight(node);
}

/** Add the editor to a node with spec widgets; ``panel`` (the metadata panel, or null) gives
 * the arch of the LoRA picked next to each spec; ``tokenInputs`` names the node's inputs that only
 * specs with their token read (shown while one does). Returns {refresh(), showTokens()} or null. */
export function attachBlockEditor(node, panel, tokenInputs = []) {
  const specs = (node.widgets ?? []).filter((w) => SPEC.test(w.name));
  if (specs.length === 0) return null;
  const widgetNamed = (name) => node.widgets.find((w) => w.name === name);
  const rows = specs.map((w) => ({ widget: w, suffix: w.name.slice("block_weights".length) }));
  const showTokens = () => showTokenInputs(node, specs, tokenInputs);

  const archSelect = el(document, "select", { className: "loralab-select", title: "architecture (follows the LoRA)" });
  const presetSelect = el(document, "select", { className: "loralab-select", title: "preset" });
  const rowSelect = el(document, "select", { className: "loralab-select", title: "which LoRA's block weights" });
  const invertButton = el(document, "button", {
    className: "loralab-button loralab-invert", text: "invert",
    title: "invert every weight: w → 1 − w (tokens stay)", attrs: { type: "button" },
  });
  const status = el(document, "div", { className: "loralab-status" });
  const sliderHost = el(document, "div");
  const root = el(document, "div", { className: "loralab-blocks" }, [
    el(document, "div", { className: "loralab-head" }, [
      el(document, "span", { className: "loralab-title", text: "block weights" }),
      rows.length > 1 ? rowSelect : null,
      archSelect,
      presetSelect,
      invertButton,
    ]),
    sliderHost,
    status,
  ]);
  addContentWidget(node, "loralab_blocks", root, { fallbackHeight: 160 });

  let row = rows[0];
  let catalog = null;
  let sliders = null;
  let values = null;
  let writing = false;
  let token = 0;

  const params = () => {
    const num = (name) => {
      const w = widgetNamed(name + row.suffix) ?? widgetNamed(name);
      return typeof w?.value === "number" ? w.value : 1;
    };
    return { a: num("a"), b: num("b"), x: 1 };
  };

  const setStatus = (text, kind) => {
    status.textContent = text;
    status.setAttribute("data-kind", kind);
  };

  const showSpec = () => {
    if (!catalog || !sliders) return;
    const text = String(row.widget.value ?? "");
    try {
      const parsed = parseSpec(text, catalog);
      values = parsed.values;
      showValues(sliders.cells, values, params());
      root.setAttribute("data-kind", "ok");
      setStatus(`${catalog.name}: ${parsed.kind === "empty" ? "every block 1" : parsed.kind}`, "ok");
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      root.setAttribute("data-kind", "invalid");
      setStatus(displayText(e.message, 240), "error");
    }
    const invalid = root.getAttribute("data-kind") === "invalid";
    for (const c of sliders.cells.values()) c.input.disabled = invalid;
    const upper = text.trim().toUpperCase();
    presetSelect.value = presetsForArch(catalog.presets, catalog.arch).some((p) => p.name === upper) ? upper : "";
    invertButton.disabled = invalid;
  };

  const writeSpec = (text) => {
    writing = true;
    try {
      row.widget.value = text;
    } finally {
      writing = false;
    }
    showTokens();
    node.graph?.setDirtyCanvas(true, true);
  };

  const onSlide = (block, weight) => {
    if (!values) return;
    values = { ...values, [block]: weight };
    writeSpec(serialiseSpec(values, catalog));
    showValues(sliders.cells, values, params());
    setStatus(describeBlock(block, weight, params()), "ok");
  };

  const onHover = (block) => {
    if (values && root.getAttribute("data-kind") === "ok") setStatus(describeBlock(block, values[block], params()), "ok");
  };

  const loadArch = async (arch) => {
    const mine = ++token;
    try {
      const cat = await blockCatalog(arch);
      if (mine !== token) return;
      catalog = cat;
      sliders = buildSliders(document, catalog, onSlide, onHover);
      sliderHost.replaceChildren(sliders.root);
      root.setAttribute("data-family", catalog.family);
      setOptions(document, presetSelect, [{ value: "", label: "preset…" },
        ...presetsForArch(catalog.presets, catalog.arch).map((p) => ({ value: p.name, label: p.name }))], "");
      archSelect.value = arch;
      showTouched();
      showSpec();
    } catch (e) {
      if (mine !== token) return;
      catalog = null;
      sliderHost.replaceChildren();
      setStatus(`blocks unavailable: ${displayText(e?.message, 160)}`, "error");
    }
  };

  // Dim the blocks the row's LoRA does not touch (lora_info's coverage.blocks), when the sliders
  // are its arch's.
  const showTouched = () => {
    if (!sliders) return;
    const info = panel?.info(row.suffix);
    const touched = info?.arch?.id === catalog?.arch ? info?.coverage?.blocks : null;
    markTouched(sliders.cells, Array.isArray(touched) ? touched : null);
  };

  const archOfRow = () => {
    const info = panel?.info(row.suffix);
    const id = info?.arch?.id;
    return typeof id === "string" && id ? id : null;
  };

  // Before the LoRA's arch is known (no file picked, or not found), the first arch whose
  // grammar accepts the spec, SDXL first: a Flux preset opens the Flux sliders, not an error.
  const archForSpec = async (archs) => {
    const text = row.widget.value ?? "";
    for (const arch of ["sdxl", ...archs.filter((a) => a !== "sdxl")]) {
      try {
        if (specFits(text, await blockCatalog(arch))) return arch;
      } catch {
        break;
      }
    }
    return "sdxl";
  };

  const followLora = () => {
    const arch = archOfRow();
    if (arch && arch !== catalog?.arch) loadArch(arch);
    else showTouched();
  };

  invertButton.addEventListener("click", (e) => {
    e.stopPropagation();
    if (!values || root.getAttribute("data-kind") !== "ok") return;
    values = invertValues(values);
    writeSpec(serialiseSpec(values, catalog));
    showValues(sliders.cells, values, params());
    setStatus(`${catalog.name}: inverted (w → 1 − w)`, "ok");
  });

  archSelect.addEventListener("change", () => loadArch(archSelect.value));
  presetSelect.addEventListener("change", () => {
    if (presetSelect.value) writeSpec(presetSelect.value);
    showSpec();
  });
  rowSelect.addEventListener("change", () => {
    row = rows[Number(rowSelect.value)] ?? rows[0];
    followLora();
    showSpec();
  });
  for (const r of rows) {
    onWidgetChange(r.widget, () => {
      showTokens();
      if (r === row && !writing) showSpec();
    });
  }
  for (const name of ["a", "b"]) {
    for (const w of node.widgets.filter((x) => x.name === name || x.name.startsWith(name + "_"))) {
      onWidgetChange(w, () => values && showValues(sliders.cells, values, params()));
    }
  }
  panel?.onInfo((suffix) => {
    if (suffix === row.suffix) followLora();
  });

  (async () => {
    let list;
    try {
      list = await blockCatalog();
      setOptions(document, archSelect, list.archs.map((a) => ({ value: a.id, label: a.name })), "sdxl");
    } catch (e) {
      setStatus(`blocks unavailable: ${displayText(e?.message, 160)}`, "error");
      return;
    }
    setOptions(document, rowSelect, rows.map((r, i) => ({ value: String(i), label: `LoRA ${r.suffix.slice(1) || i + 1}` })), "0");
    const guess = archOfRow() ? null : await archForSpec(list.archs.map((a) => a.id));
    await loadArch(archOfRow() ?? guess);  // the LoRA's arch wins, even when it arrived during the guess
  })();

  showTokens();
  return {
    refresh: () => {
      showTokens();
      followLora();
      showSpec();
    },
    showTokens,
  };
}
