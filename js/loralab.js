// LoRA Lab's frontend extension: the metadata panel on nodes that pick a LoRA, the block-weight
// editor on nodes with a block-weight spec, the live loss chart on training nodes, and the text
// report of nodes that return one. Every string from a file or the server reaches the page
// through textContent (js/lib/dom.js); there is no HTML built from data anywhere.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { attachBlockEditor } from "./block_editor.js";
import { attachLossChart } from "./loss_chart.js";
import { attachInfoPanel } from "./metadata_panel.js";
import { reportText, showReport } from "./report_view.js";
import { injectStyles } from "./style.js";

const PREFIX = "LoRALab";
/** Nodes that show the loss chart from the start; any other LoRA Lab node gets it with its first
 * ``loralab.train.progress`` event. */
const TRAINING = new Set(["LoRALabTrain", "LoRALabTrainSteps"]);

function chain(proto, name, after) {
  const before = proto[name];
  proto[name] = function (...args) {
    const r = before?.apply(this, args);
    after.apply(this, args);
    return r;
  };
}

/** The graph node of an execution id ("12", or "5:12" inside a subgraph). */
function nodeOfExecutionId(id) {
  const parts = String(id).split(":");
  let graph = app.rootGraph ?? app.graph;
  for (const part of parts.slice(0, -1)) {
    graph = graph?.getNodeById(part)?.subgraph;
  }
  return graph?.getNodeById(parts[parts.length - 1]) ?? null;
}

function chartOf(node) {
  node.loralab.chart ??= attachLossChart(node);
  return node.loralab.chart;
}

app.registerExtension({
  name: "LoRALab.Widgets",

  setup() {
    injectStyles();
    api.addEventListener("loralab.train.progress", ({ detail }) => {
      const node = detail ? nodeOfExecutionId(detail.node) : null;
      if (node?.loralab) chartOf(node).add(detail);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.name ?? "").startsWith(PREFIX)) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      this.loralab = {};
      this.loralab.panel = attachInfoPanel(this);
      this.loralab.editor = attachBlockEditor(this, this.loralab.panel);
      if (TRAINING.has(nodeData.name)) chartOf(this);
      this.loralab.panel?.refresh();
    });
    chain(nodeType.prototype, "onConfigure", function () {
      this.loralab?.panel?.refresh();
      this.loralab?.editor?.refresh();
    });
    chain(nodeType.prototype, "onExecuted", function (output) {
      const text = reportText(output);
      if (text !== null && this.loralab) showReport(this, text);
    });
  },
});
