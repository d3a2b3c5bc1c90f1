// The metadata panel: for every LoRA picker of a node (``lora_name`` or ``lora_name_<i>``), the
// header summary from /loralab/lora_info, compact with an expander; trigger words as chips
// that copy to the clipboard (shift-click: add to a prompt this node feeds).

import { errorText, infoView } from "./lib/format.js";
import { renderInfo } from "./lib/panel.js";
import { loraInfo } from "./server_data.js";
import { addContentWidget, onWidgetChange } from "./widget.js";

export const PICKER = /^lora_name(_\d+)?$/;
const EMPTY = new Set(["", "None", "none"]);

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

/** Text widgets of prompt nodes this node's outputs feed directly (e.g. CLIP -> CLIPTextEncode). */
function connectedPrompts(node) {
  const out = [];
  for (const output of node.outputs ?? []) {
    for (const linkId of output.links ?? []) {
      const link = node.graph?.links?.[linkId] ?? node.graph?.links?.get?.(linkId);
      const target = link ? node.graph.getNodeById(link.target_id) : null;
      const text = target?.widgets?.find((w) => w.name === "text" && typeof w.value === "string");
      if (text && !out.includes(text)) out.push(text);
    }
  }
  return out;
}

function flash(chip, ok) {
  chip.classList.add(ok ? "loralab-copied" : "loralab-copy-failed");
  setTimeout(() => chip.classList.remove("loralab-copied", "loralab-copy-failed"), 900);
}

async function useWord(node, word, chip, event) {
  const prompts = event?.shiftKey ? connectedPrompts(node) : [];
  if (prompts.length) {
    for (const w of prompts) {
      const sep = w.value.trim() ? ", " : "";
      w.value = w.value.replace(/[\s,]*$/, "") + sep + word;
    }
    node.graph?.setDirtyCanvas(true, true);
    flash(chip, true);
    return;
  }
  flash(chip, await copyText(word));
}

/** Add the panel to a node that has LoRA pickers. Returns {refresh(), sync(), info(suffix),
 * onInfo(fn), prepend(element)} or null when the node has no picker. ``suffix`` is "" or "_<i>";
 * ``prepend`` puts an element above the entries for good (the library filter). */
export function attachInfoPanel(node) {
  const pickers = (node.widgets ?? []).filter((w) => PICKER.test(w.name) && w.type === "combo");
  if (pickers.length === 0) return null;
  const root = document.createElement("div");
  root.className = "loralab-panel";
  const list = document.createElement("div");
  list.className = "loralab-entries";
  root.appendChild(list);
  addContentWidget(node, "loralab_info", root, { fallbackHeight: 44 * pickers.length });
  const listeners = [];
  const entries = pickers.map((w) => ({
    widget: w,
    suffix: w.name.slice("lora_name".length),
    info: null,
    token: 0,
    state: { label: pickers.length > 1 ? `#${w.name.slice("lora_name_".length)}` : null, status: "empty", expanded: false },
  }));

  const render = () => {
    list.replaceChildren(...entries.map((e) => renderInfo(document, e.state, {
      toggle: () => {
        e.state.expanded = !e.state.expanded;
        render();
      },
      copy: (word, chip, event) => useWord(node, word, chip, event),
    })));
  };

  const settle = (e, info, state) => {
    e.info = info;
    e.state = { ...e.state, ...state };
    render();
    for (const fn of listeners) fn(e.suffix, info);
  };

  // The name each entry shows (or is fetching); a graph reset that sets a picker's value without
  // its callback is caught by ``sync`` (on configure and after the graph is loaded).
  const load = async (e) => {
    const name = e.widget.value;
    const token = ++e.token;
    e.name = name;
    if (typeof name !== "string" || EMPTY.has(name)) {
      settle(e, null, { status: "empty", view: null });
      return;
    }
    if (!(e.state.status === "ok" && e.shown === name)) {  // revalidating what it shows: no flicker
      e.state = { ...e.state, status: "loading" };
      render();
    }
    try {
      const info = await loraInfo(name);
      if (token !== e.token) return;
      if (info === e.info && e.state.status === "ok") return;  // the file did not change (304)
      const view = infoView(info);
      e.shown = name;
      settle(e, view.ok ? info : null, view.ok ? { status: "ok", view } : { status: "error", error: view.error });
    } catch (err) {
      if (token !== e.token) return;
      if (err?.status === 404) settle(e, null, { status: "missing", error: name, view: null });
      else settle(e, null, { status: "error", error: errorText(err?.message) });
    }
    if (token === e.token && e.widget.value !== name) load(e);  // the picker moved on without its callback
  };

  for (const e of entries) onWidgetChange(e.widget, () => load(e), { repick: true });
  render();
  return {
    refresh: () => entries.forEach(load),
    /** Reload the entries whose picker no longer holds the name they show. */
    sync: () => entries.filter((e) => e.widget.value !== e.name).forEach(load),
    info: (suffix) => entries.find((e) => e.suffix === suffix)?.info ?? null,
    onInfo: (fn) => listeners.push(fn),
    prepend: (element) => root.insertBefore(element, list),
  };
}
