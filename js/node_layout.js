// What a LoRA Lab node shows, and its height: widgets hidden and shown (the loader's a, b and seed
// follow its block-weight spec), advanced inputs folded on the classic canvas, a widget moved up,
// text boxes kept to a few lines, the node fitted to what it shows. One way for the frontends LoRA
// Lab is tested with (1.27, 1.49, 1.58), on the classic canvas and in Nodes 2.0 (Vue nodes). A
// hidden or folded widget keeps its value: the workflow stores it and the prompt sends it.

import { compactValues } from "./lib/layout.js";

/** The height range of a LoRA Lab text box (a block-weight spec, preview prompts), in px: two lines
 * at least, and it scrolls beyond the most, so a node taller than its content shows no empty box.
 * Nodes 2.0: the same numbers in js/style.js. */
export const TEXT_MIN_HEIGHT = 40;
export const TEXT_MAX_HEIGHT = 80;

/** Whether Nodes 2.0 draws the graph. */
function vueNodes() {
  return globalThis.LiteGraph?.vueNodesMode === true;
}

/** Let a widget take no row on the canvas while the node does not show it: canvases that lay out
 * every widget, shown or not (frontend 1.27 for hidden ones; all three for folded advanced ones),
 * would leave an empty row. Widgets that size themselves (DOM widgets) are left alone. */
export function collapsible(node, widget) {
  if (widget.loralabCollapsible || widget.computeLayoutSize) return;
  widget.loralabCollapsible = true;
  const own = widget.computeSize;
  widget.computeSize = function (width) {
    if (typeof node.isWidgetVisible === "function" && !node.isWidgetVisible(widget)) return [0, -4];
    return own ? own.call(this, width) : [width, globalThis.LiteGraph?.NODE_WIDGET_HEIGHT ?? 20];
  };
}

/** Hide or show a widget on the canvas and in Nodes 2.0. Returns whether anything changed (then
 * the caller fits the node). */
export function setHidden(node, widget, hidden) {
  // its own record: frontend 1.58 reads a linked widget as hidden (its row shows the link instead)
  if (widget.loralabHidden === hidden) return false;
  widget.loralabHidden = hidden;
  collapsible(node, widget);
  widget.hidden = hidden;
  widget.options ??= {};
  widget.options.hidden = hidden;  // what Nodes 2.0 of frontend 1.49 reads
  if (vueNodes()) {
    // Nodes 2.0 of frontend 1.49 reads a widget's options when the node's widget list changes,
    // not when they do: take the widget out and put it back
    const i = node.widgets.indexOf(widget);
    node.widgets.splice(i, 1);
    node.widgets.splice(i, 0, widget);
  }
  return true;
}

/** The node's height fitted to what it shows (at least ``minWidth`` wide). In Nodes 2.0 a node
 * grows to its content by itself; a height from the canvas's count that is too small is fine. */
export function fitHeight(node, minWidth = 0) {
  node.setSize([Math.max(node.size[0], minWidth), node.computeSize()[1]]);
  node.graph?.setDirtyCanvas(true, true);
}

/** Keep the node's multiline text widgets between TEXT_MIN_HEIGHT and TEXT_MAX_HEIGHT on the
 * classic canvas. */
export function capTextBoxes(node) {
  for (const w of node.widgets ?? []) {
    if (w.inputEl?.tagName !== "TEXTAREA") continue;
    w.options ??= {};
    w.options.getMinHeight = () => TEXT_MIN_HEIGHT;
    w.options.getMaxHeight = () => TEXT_MAX_HEIGHT;
  }
}

/** Put a widget at ``index`` of the node's widgets (the order both renderers draw them in). Only
 * widgets that store no value move, and ``keepValuesPacked`` keeps the workflow's values where
 * every frontend reads them. */
export function moveWidget(node, widget, index) {
  const from = node.widgets.indexOf(widget);
  if (from < 0 || from === index) return;
  node.widgets.splice(from, 1);
  node.widgets.splice(index, 0, widget);
}

/** Serialise the node's widget values packed, whatever widgets of LoRA Lab's sit among its inputs
 * (js/lib/layout.js compactValues). */
export function keepValuesPacked(data, node) {
  if (!data || !Array.isArray(node.widgets)) return;
  const packed = compactValues(data.widgets_values, node.widgets.map((w) => w.serialize !== false));
  if (packed !== data.widgets_values) data.widgets_values = packed;
}

/** Fold the node's advanced inputs (``advanced`` in /object_info) on the classic canvas behind a
 * toggle of its own, after its inputs' widgets. Nodes 2.0 folds them itself (its "show advanced
 * inputs" button; the toggle is canvas-only), and both share the node's ``showAdvanced``. Returns
 * {fit()} or null for a node without advanced inputs. */
export function attachAdvancedFold(node) {
  const folded = (node.widgets ?? []).filter((w) => w.options?.advanced);
  if (folded.length === 0) return null;
  for (const w of folded) {
    w.advanced = true;
    collapsible(node, w);
  }
  const fit = () => fitHeight(node);
  const toggle = node.addWidget("button", "loralab_advanced", null, () => {
    node.showAdvanced = !node.showAdvanced;
    fit();
  }, { serialize: false, canvasOnly: true });
  toggle.serialize = false;
  Object.defineProperty(toggle, "label", {
    configurable: true,
    get: () => (node.showAdvanced ? "▴ hide advanced inputs" : `▾ show ${folded.length} advanced inputs`),
    set: () => {},
  });
  fit();
  return { fit };
}
