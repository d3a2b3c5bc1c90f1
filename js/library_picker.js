// The LoRA Loader's library filter, at the top of its metadata panel: a search box (trigger words,
// names, titles; imported ones too) and a base-model select (the LoRAs that fit the graph's model,
// or any model) over GET /loralab/library; the matches are listed below, and a click picks one.
// The picker's own list of options is never changed: every name stays valid in workflows, the
// filter is only a view. Every string reaches the page through textContent (lib/dom.js).

import { app } from "../../scripts/app.js";
import { el } from "./lib/dom.js";
import { setOptions } from "./lib/editor_view.js";
import { archOptions, filterActive, graphArch, resultView } from "./lib/library.js";
import { displayText } from "./lib/text.js";
import { blockCatalog, libraryListing } from "./server_data.js";

/** Node types whose panel gets the filter. */
const FILTERED = new Set(["LoRALabLoader"]);
const DEBOUNCE_MS = 150;
/** While the worker scans or hashes, an open filter asks again this often. */
const POLL_MS = 2000;

let rescanNext = false;

/** The next listing any filter asks for also asks the server to scan the loras folders again. */
export function requestRescan() {
  rescanNext = true;
}

/** The node that feeds ``node``'s MODEL input, or null. */
function upstreamOf(node) {
  const input = (node.inputs ?? []).find((i) => i.name === "model" && i.link !== null && i.link !== undefined);
  if (!input) return null;
  const link = node.graph?.links?.[input.link] ?? node.graph?.links?.get?.(input.link);
  return link ? node.graph.getNodeById(link.origin_id) ?? null : null;
}

/** Add the filter to the panel of a Loader node; returns {refresh(), sync()} or null. */
export function attachLibraryFilter(node, panel, nodeType) {
  const picker = (node.widgets ?? []).find((w) => w.name === "lora_name" && w.type === "combo");
  if (!panel || !picker || !FILTERED.has(nodeType)) return null;
  const search = el(document, "input", {
    className: "loralab-search",
    attrs: { type: "text", placeholder: "find by trigger word or name", "aria-label": "find a LoRA by trigger word or name" },
  });
  const archSelect = el(document, "select", { className: "loralab-select", title: "show the LoRAs that fit this base model" });
  const status = el(document, "div", { className: "loralab-status loralab-library-status" });
  const results = el(document, "div", { className: "loralab-results", attrs: { role: "listbox" } });
  const root = el(document, "div", { className: "loralab-library" }, [
    el(document, "div", { className: "loralab-head" }, [search, archSelect]),
    status,
    results,
  ]);
  panel.prepend(root);

  let archs = [];
  let chosen = null; // the user's pick of the select; null: it follows the graph's model
  let token = 0;
  let typing = null;
  let poll = null;

  const fillArchs = () => {
    const graph = graphArch(node, upstreamOf);
    setOptions(document, archSelect, archOptions(archs, graph), chosen ?? graph ?? "");
  };

  const pick = (name) => {
    if (typeof picker.setValue === "function") picker.setValue(name, { e: undefined, node, canvas: app.canvas });
    else {
      picker.value = name;
      picker.callback?.(name);
    }
    node.graph?.setDirtyCanvas(true, true);
    refresh();
  };

  const row = (r) => {
    const button = el(document, "button", {
      className: "loralab-result" + (r.current ? " loralab-current" : "") + (r.flagged ? " loralab-flagged" : ""),
      title: r.title,
      attrs: { type: "button", role: "option", "aria-pressed": r.current ? "true" : "false" },
    }, [
      el(document, "span", { className: "loralab-result-name" }, [
        r.flagged ? el(document, "span", { className: "loralab-badge", text: "⚠ " }) : null,
        r.label,
      ]),
      el(document, "span", { className: "loralab-result-detail", text: r.detail }),
    ]);
    button.addEventListener("click", (e) => {
      e.stopPropagation();
      pick(r.name);
    });
    return button;
  };

  const refresh = async () => {
    clearTimeout(poll);
    const filter = { arch: archSelect.value, query: search.value };
    const mine = ++token;
    if (!filterActive(filter)) {
      root.setAttribute("data-kind", "idle");
      status.textContent = "";
      results.replaceChildren();
      return;
    }
    const rescan = rescanNext;
    rescanNext = false;
    try {
      const body = await libraryListing({ ...filter, rescan });
      if (mine !== token) return;
      const view = resultView(body, picker.value);
      root.setAttribute("data-kind", "ok");
      status.textContent = [view.summary, view.status].filter(Boolean).join(" · ");
      results.replaceChildren(...view.rows.map(row));
      if (view.busy && document.contains(root)) poll = setTimeout(refresh, POLL_MS);
    } catch (e) {
      if (mine !== token) return;
      root.setAttribute("data-kind", "error");
      status.textContent = `library unavailable: ${displayText(e?.message, 160)}`;
      results.replaceChildren();
    }
  };

  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(refresh, DEBOUNCE_MS);
  });
  search.addEventListener("keydown", (e) => e.stopPropagation()); // typing must not reach the canvas' shortcuts
  archSelect.addEventListener("change", () => {
    chosen = archSelect.value;
    refresh();
  });
  fillArchs();
  blockCatalog("").then((catalog) => {
    archs = Array.isArray(catalog?.archs) ? catalog.archs : [];
    fillArchs();
  }).catch(() => {});
  root.setAttribute("data-kind", "idle");
  return {
    refresh,
    /** The graph's model may be known now (a node up the MODEL links ran): follow it. */
    sync: () => {
      const before = archSelect.value;
      fillArchs();
      if (archSelect.value !== before || filterActive({ arch: archSelect.value, query: search.value })) refresh();
    },
  };
}
