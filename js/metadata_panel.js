// The metadata panel: for every LoRA picker of a node (``lora_name``, ``lora_name_<i>``, or a Wan 2.2
// pair's ``lora_high`` and ``lora_low``), the
// header summary from /loralab/lora_info, compact with an expander ("more": training facts, top
// tags, warnings) and inside it a details fold whose content (metadata, tags per folder, modules
// per block) is fetched only when it is opened; trigger words as chips that copy to the clipboard
// (shift-click: add to a prompt this node feeds). On nodes that apply LoRAs to a MODEL and a CLIP,
// the coverage doctor's line (/loralab/coverage) says before a run how much of each LoRA lands on
// the model the graph feeds in, and if not all, why and what to do.

import { coverageQuery, doctorView } from "./lib/doctor.js";
import { detailsView, errorText, infoView } from "./lib/format.js";
import { isConnected, modelSource } from "./lib/graph.js";
import { pickerSlot, renderInfo } from "./lib/panel.js";
import { coverage, loraDetails, loraInfo } from "./server_data.js";
import { addContentWidget, onWidgetChange } from "./widget.js";

/** how long the graph must stay unchanged before the doctor is asked (a workflow loading, a drag) */
const SETTLE_MS = 150;
/** picker values that name no file: nothing chosen, or the pair's "(partner of lora_high)" */
const EMPTY = new Set(["", "None", "none", "(partner of lora_high)"]);

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

/** Add the panel to a node that has LoRA pickers. Returns {refresh(), sync(), checkModel(),
 * info(suffix), onInfo(fn), prepend(element)} or null when the node has no picker. ``suffix`` is ""
 * or "_<i>"; ``prepend`` puts an element above the entries for good (the library filter). */
export function attachInfoPanel(node) {
  const pickers = (node.widgets ?? []).filter((w) => pickerSlot(w.name) && w.type === "combo");
  if (pickers.length === 0) return null;
  const root = document.createElement("div");
  root.className = "loralab-panel";
  const list = document.createElement("div");
  list.className = "loralab-entries";
  root.appendChild(list);
  // room for an entry expanded with its details open (their fold scrolls past 240 px)
  addContentWidget(node, "loralab_info", root, { fallbackHeight: 44 * pickers.length, maxHeight: 960 });
  const listeners = [];
  const entries = pickers.map((w) => ({
    widget: w,
    suffix: pickerSlot(w.name).suffix,
    info: null,
    token: 0,
    detailsToken: 0,
    doctorQuery: null,
    doctorToken: 0,
    doctorTimer: null,
    doctorForce: false,
    state: {
      label: pickers.length > 1 ? pickerSlot(w.name).label : null,
      status: "empty",
      expanded: false,
      details: { open: false },
    },
  }));

  const inputs = new Set((node.inputs ?? []).map((i) => i?.name));
  const doctorOn = inputs.has("model") && inputs.has("clip");

  const render = () => {
    list.replaceChildren(...entries.map((e) => renderInfo(document, e.state, {
      toggle: () => {
        e.state.expanded = !e.state.expanded;
        render();
      },
      details: () => {
        if (e.state.details.open) {
          e.detailsToken += 1;
          e.state = { ...e.state, details: { open: false } };
          render();
        } else {
          loadDetails(e);
        }
      },
      copy: (word, chip, event) => useWord(node, word, chip, event),
    })));
  };

  // The details of the file the entry shows, asked for when the fold opens and again when the file
  // changed while it is open (a 304 keeps the page's copy).
  const loadDetails = async (e) => {
    const name = e.shown;
    const token = ++e.detailsToken;
    const { details } = e.state;
    if (!(details.open && details.status === "ok" && e.detailsOf === name)) {
      e.state = { ...e.state, details: { open: true, status: "loading" } };
      render();
    }
    let next;
    try {
      const view = detailsView(await loraDetails(name));
      next = view.ok ? { open: true, status: "ok", view } : { open: true, status: "error", error: view.error };
    } catch (err) {
      next = { open: true, status: "error", error: errorText(err?.message) };
    }
    if (token !== e.detailsToken) return;
    e.detailsOf = name;
    e.state = { ...e.state, details: next };
    render();
  };

  const settle = (e, info, state) => {
    e.info = info;
    const open = e.state.details.open && state.status === "ok";
    e.state = { ...e.state, ...state, details: open ? e.state.details : { open: false } };
    if (!open) e.detailsToken += 1;
    render();
    if (open) loadDetails(e);
    for (const fn of listeners) fn(e.suffix, info);
  };

  // The doctor's line of an entry, for the LoRA it picks, the model file the graph feeds in and
  // whether a CLIP is connected; asked again only when one of them changed, or ``force``d (the files
  // may have changed: the route's ETag makes that cheap). Asked once the graph has settled: loading
  // a workflow links and sets the nodes one by one, and the states in between are no one's choice.
  const checkDoctor = (e, force = false) => {
    if (!doctorOn) return;
    e.doctorForce ||= force;
    clearTimeout(e.doctorTimer);
    e.doctorTimer = setTimeout(() => {
      const forced = e.doctorForce;
      e.doctorForce = false;
      askDoctor(e, forced);
    }, SETTLE_MS);
  };

  const askDoctor = async (e, force) => {
    const query = coverageQuery(e.widget.value, modelSource(node), isConnected(node, "clip"));
    if (query === e.doctorQuery && !force) return;
    const token = ++e.doctorToken;
    if (query !== e.doctorQuery && e.state.doctor) {
      e.state = { ...e.state, doctor: null };  // never the last LoRA's or model's verdict under this one
      render();
    }
    e.doctorQuery = query;
    if (query === null) return;
    let doctor;
    try {
      doctor = doctorView(await coverage(query));
    } catch (err) {
      // a file gone is said by the LoRA's own line (or the loader's); other refusals are said here
      const reason = errorText(err?.message);
      const unavailable = { level: "unknown", text: `coverage unavailable: ${reason}`, title: reason };
      doctor = err?.status === 404 ? null : unavailable;
    }
    if (token !== e.doctorToken) return;
    e.state = { ...e.state, doctor };
    render();
  };

  // The name each entry shows (or is fetching); a graph reset that sets a picker's value without
  // its callback is caught by ``sync`` (on configure and after the graph is loaded).
  const load = async (e) => {
    const name = e.widget.value;
    const token = ++e.token;
    e.name = name;
    checkDoctor(e, true);
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
    /** Ask the doctor again where the model the graph feeds in, or the CLIP, changed. */
    checkModel: () => entries.forEach((e) => checkDoctor(e)),
    info: (suffix) => entries.find((e) => e.suffix === suffix)?.info ?? null,
    onInfo: (fn) => listeners.push(fn),
    prepend: (element) => root.insertBefore(element, list),
  };
}
