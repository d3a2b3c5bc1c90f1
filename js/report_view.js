// Shows the text report a LoRA Lab node returns in its ``ui`` output (``{"text": [...]}``),
// e.g. the Inspect node's, on the node after it runs.

import { renderReport } from "./lib/panel.js";
import { addContentWidget } from "./widget.js";

/** Show ``text`` on the node, replacing an earlier report. */
export function showReport(node, text) {
  const content = renderReport(document, text);
  if (!node.loralab.report) {
    const holder = document.createElement("div");
    addContentWidget(node, "loralab_report", holder, { fallbackHeight: 200, maxHeight: 420 });
    node.loralab.report = { holder };
  }
  node.loralab.report.holder.replaceChildren(content);
}

/** The report text of an ``executed`` message, or null. */
export function reportText(output) {
  const text = output?.text;
  if (typeof text === "string") return text;
  if (Array.isArray(text) && text.length) return text.map((t) => String(t)).join("\n");
  return null;
}
