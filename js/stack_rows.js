// The LoRA rows of the LoRA Stack and the Stack Report: the node's ``loras`` STRING widget (a JSON
// list of rows, what the workflow saves and the server reads) is hidden and shown as one row per
// LoRA with "+ Add LoRA". Workflows saved with the five fixed slots those nodes had are converted
// to rows when they load.

import { legacyRows, makeRow, moveRow, parseRows, removeRow, serializeRows, updateRow } from "./lib/rows.js";
import { renderRows } from "./lib/rows_view.js";
import { addContentWidget } from "./widget.js";

export const ROWS = "loras";
/** Nodes whose rows have a strength_clip of their own (the Report's rows have one weight). */
const WITH_CLIP = new Set(["LoRALabStack"]);
/** The Report's output that takes the place of its five proposed_block_weights_<i>, and the Stack's
 * input it is wired into. */
const PROPOSAL_OUTPUT = 3;
const PROPOSAL_INPUT = "block_weights";

/** The LoRA names a node definition offers in its rows' pickers (the ``loras`` input's ``lora_names``). */
export function rowNames(nodeData) {
  const spec = nodeData?.input?.required?.[ROWS] ?? nodeData?.input?.optional?.[ROWS];
  const names = spec?.[1]?.lora_names;
  return Array.isArray(names) ? names.filter((n) => typeof n === "string") : [];
}

function hide(widget) {
  widget.hidden = true;
  widget.options ??= {};
  widget.options.hidden = true;
}

function linkOf(graph, id) {
  return graph?.links?.get?.(id) ?? graph?.links?.[id] ?? null;
}

/** Add the rows to a node that has a ``loras`` widget. Returns {refresh(), setNames(names),
 * configure(info), converted(), legacyOrigins(), migrateSlots(origins)} or null. */
export function attachStackRows(node, nodeData) {
  const source = (node.widgets ?? []).find((w) => w.name === ROWS);
  if (!source) return null;
  hide(source);
  const type = nodeData.name;
  const root = document.createElement("div");
  addContentWidget(node, "loralab_rows", root, { fallbackHeight: 60, maxHeight: 4000 });
  let state = { rows: [], error: null, names: rowNames(nodeData), clip: WITH_CLIP.has(type) };
  let shown = null;  // the widget value the rows show
  let migrated = null;  // the values a five-slot workflow was converted to, until its graph is set up

  const render = () => root.replaceChildren(renderRows(document, state, on));

  const write = (rows, rerender) => {
    state = { ...state, rows, error: null };
    shown = serializeRows(rows);
    source.value = shown;
    if (rerender) render();
    node.graph?.setDirtyCanvas(true, true);
  };

  const on = {
    update: (i, fields, rerender = false) => write(updateRow(state.rows, i, fields), rerender || "on" in fields),
    move: (i, delta) => write(moveRow(state.rows, i, delta), true),
    remove: (i) => write(removeRow(state.rows, i), true),
    add: () => {
      write([...state.rows, makeRow()], true);
      [...root.querySelectorAll(".loralab-row-lora")].pop()?.focus();
    },
    clear: () => write([], true),
  };

  // The rows of the widget's value, unless they are already shown (typing into a row writes the
  // value; reading it back would rebuild the row under the cursor).
  const load = () => {
    const text = String(source.value ?? "");
    if (text === shown) return;
    shown = text;
    const { rows, error } = parseRows(text);
    state = { ...state, rows, error };
    render();
  };

  // The widgets after ``loras`` whose values followed the five slots (a, b, seed; the thresholds).
  const followers = () => {
    const widgets = node.widgets ?? [];
    return widgets.slice(widgets.indexOf(source) + 1).filter((w) => w.serialize !== false && w.options?.serialize !== false);
  };

  const applyMigrated = () => {
    if (!migrated) return;
    source.value = migrated.loras;
    const after = followers();
    if (after.length === migrated.rest.length) after.forEach((w, k) => { w.value = migrated.rest[k]; });
    load();
  };

  const definedInputs = () => new Set([...Object.keys(nodeData.input?.required ?? {}),
    ...Object.keys(nodeData.input?.optional ?? {})]);

  render();
  load();
  return {
    refresh: load,
    setNames: (names) => {
      state = { ...state, names };
      render();
    },
    /** On configure: a five-slot node's saved values become rows (its slots are fixed once the
     * whole graph is set up, by ``migrateSlots``). */
    configure: (info) => {
      const legacy = legacyRows(type, info?.widgets_values);
      if (legacy) migrated = { loras: serializeRows(legacy.rows), rest: legacy.rest };
      applyMigrated();
      load();
    },
    /** Whether this node was converted from five slots and its slots are still to be fixed. */
    converted: () => migrated !== null,
    /** The nodes that fed the inputs a converted node no longer has (the Report of a Stack whose
     * block_weights_<i> took its proposals); asked of every converted node before any is fixed. */
    legacyOrigins: () => {
      const defined = definedInputs();
      return new Set((node.inputs ?? []).filter((input) => !defined.has(input.name) && input.link != null)
        .map((input) => linkOf(node.graph, input.link)?.origin_id).filter((id) => id !== undefined));
    },
    /** After the graph is configured: the converted values again (a frontend may set the saved ones
     * after configure), the inputs and outputs the node no longer has removed with their links; a
     * Stack whose slots took their block weights from one Report takes the Report's proposal. */
    migrateSlots: (origins) => {
      if (!migrated) return;
      applyMigrated();
      migrated = null;
      const defined = definedInputs();
      for (let i = (node.inputs?.length ?? 0) - 1; i >= 0; i--) {
        if (!defined.has(node.inputs[i].name)) node.removeInput(i);
      }
      const outputs = nodeData.output?.length ?? node.outputs?.length ?? 0;
      for (let i = (node.outputs?.length ?? 0) - 1; i >= outputs; i--) node.removeOutput(i);
      const target = node.findInputSlot?.(PROPOSAL_INPUT) ?? -1;
      const report = origins.size === 1 ? node.graph?.getNodeById([...origins][0]) : null;
      if (target >= 0 && (report?.comfyClass ?? report?.type) === "LoRALabStackReport") {
        report.connect(PROPOSAL_OUTPUT, node, target);
      }
      node.setDirtyCanvas?.(true, true);
    },
  };
}
