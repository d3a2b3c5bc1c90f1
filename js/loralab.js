// LoRA Lab's frontend extension: the metadata panel on nodes that pick a LoRA (with the coverage
// doctor's line where the node applies LoRAs to a model, and on the Loader the library's filter:
// search by trigger word, LoRAs that fit the graph's model), the block-weight editor on nodes with a
// block-weight spec, the LoRA rows of the Stack and the Stack Report, the live loss chart on
// training nodes (at their top), the text report of nodes that return one, and advanced inputs
// folded on the classic canvas. Every string from a file or the server reaches the page through
// textContent (js/lib/dom.js); there is no HTML built from data anywhere.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { attachBlockEditor } from "./block_editor.js";
import { reportedArch } from "./lib/library.js";
import { attachLibraryFilter, requestRescan } from "./library_picker.js";
import { attachLossChart } from "./loss_chart.js";
import { attachInfoPanel } from "./metadata_panel.js";
import { attachAdvancedFold, capTextBoxes, keepValuesPacked, moveWidget } from "./node_layout.js";
import { reportText, showReport } from "./report_view.js";
import { trainProgress } from "./server_data.js";
import { attachStackRows, rowNames } from "./stack_rows.js";
import { injectStyles } from "./style.js";

const PREFIX = "LoRALab";
/** Nodes that show the loss chart from the start, as their first widget; any other LoRA Lab node
 * gets it (last) with its first ``loralab.train.progress`` event. */
const TRAINING = new Set(["LoRALabTrain", "LoRALabTrainSteps"]);
/** Nodes that write a file into the loras folder: once a run that executed one ends, every panel
 * revalidates its LoRA (a file may have been overwritten under a name some node shows). */
const WRITERS = new Set(["LoRALabMerge", "LoRALabResize", "LoRALabConvert", "LoRALabExtract", "LoRALabSave", "LoRALabTrain", "LoRALabTrainSteps", "LoRALabTrainSave"]);

/** The node's inputs that only block-weight specs with their token read (``loralab_spec_token``
 * in /object_info: the loader's and the stack's a, b, seed). */
function specTokenInputs(nodeData) {
  const sections = [nodeData?.input?.required, nodeData?.input?.optional];
  return sections.flatMap((s) => Object.entries(s ?? {})).filter(([, spec]) => spec?.[1]?.loralab_spec_token).map(([name]) => name);
}

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

/** Every node of the root graph and of its subgraphs. */
function allNodes() {
  const out = [];
  const walk = (graph, seen) => {
    if (!graph || seen.has(graph)) return;
    seen.add(graph);
    for (const node of graph.nodes ?? graph._nodes ?? []) {
      out.push(node);
      walk(node.subgraph, seen);
    }
  };
  walk(app.rootGraph ?? app.graph, new Set());
  return out;
}

/** Every panel checks its pickers and its model again, every editor its arch, every row list its value. */
function sync() {
  for (const node of allNodes()) {
    node.loralab?.panel?.sync();
    node.loralab?.panel?.checkModel();
    node.loralab?.editor?.refresh();
    node.loralab?.rows?.refresh();
    node.loralab?.library?.sync();
  }
}

/** Every panel's doctor checks the model its node is fed (a loader's file picked, a link moved). */
function checkModels() {
  for (const node of allNodes()) node.loralab?.panel?.checkModel();
}

/** Nodes converted from five slots to rows while the graph loaded: their slots, once every node is
 * configured (the nodes that fed their old inputs are asked before any node is changed). */
function migrateSlots() {
  const converted = allNodes().filter((n) => n.loralab?.rows?.converted());
  const origins = converted.map((n) => n.loralab.rows.legacyOrigins());
  converted.forEach((n, i) => n.loralab.rows.migrateSlots(origins[i]));
}

function revalidateAll() {
  requestRescan();
  for (const node of allNodes()) {
    node.loralab?.panel?.refresh();
    node.loralab?.library?.refresh();
  }
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
    let wrote = false;
    const ended = () => {
      if (wrote) revalidateAll();
      wrote = false;
    };
    api.addEventListener("executing", ({ detail }) => {
      const id = detail && typeof detail === "object" ? detail.node : detail;
      if (id === null || id === undefined) return ended();
      const node = nodeOfExecutionId(id);
      if (WRITERS.has(node?.comfyClass ?? node?.type)) wrote = true;
    });
    for (const name of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(name, ended);
    }
    // the frontend's change tracker says so after every user action that changed the graph
    api.addEventListener("graphChanged", checkModels);
  },

  // ComfyUI's refresh (R, or the Refresh button): files may have changed on disk, and the rows'
  // pickers take the new list of LoRAs.
  refreshComboInNodes(defs) {
    revalidateAll();
    for (const node of allNodes()) {
      const def = defs?.[node.comfyClass ?? node.type];
      if (node.loralab?.rows && def) node.loralab.rows.setNames(rowNames(def));
    }
  },

  // Loading a workflow or clearing the graph: frontends from 1.49 on may set a picker's value after
  // the node's onConfigure (and never through its callback), so every panel checks its pickers again
  // once the graph is configured, and once more a frame later. A reloaded page (or a workflow loaded
  // again): charts of the nodes that trained in this server's life are drawn from its history.
  async afterConfigureGraph() {
    migrateSlots();
    sync();
    requestAnimationFrame(sync);
    try {
      const { nodes } = await trainProgress();
      const graph = app.rootGraph ?? app.graph;
      for (const id of nodes ?? []) {
        const node = graph?.getNodeById(/^\d+$/.test(id) ? Number(id) : id) ?? graph?.getNodeById(id);
        if (node?.loralab) chartOf(node).replay(await trainProgress(id));
      }
    } catch {
      // no history: nothing to draw
    }
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.name ?? "").startsWith(PREFIX)) return;
    const tokenInputs = specTokenInputs(nodeData);
    chain(nodeType.prototype, "onNodeCreated", function () {
      this.loralab = {};
      capTextBoxes(this);
      this.loralab.fold = attachAdvancedFold(this);
      this.loralab.rows = attachStackRows(this, nodeData);
      if (!this.loralab.rows) {  // a node with rows edits their block weights as text
        this.loralab.panel = attachInfoPanel(this);
        this.loralab.library = attachLibraryFilter(this, this.loralab.panel, nodeData.name);
        this.loralab.editor = attachBlockEditor(this, this.loralab.panel, tokenInputs);
      }
      if (TRAINING.has(nodeData.name)) moveWidget(this, chartOf(this).widget, 0);
      this.loralab.panel?.refresh();
    });
    // a link to a token input shows it, whatever the spec
    chain(nodeType.prototype, "onConnectionsChange", function () {
      this.loralab?.editor?.showTokens();
    });
    chain(nodeType.prototype, "onSerialize", function (data) {
      keepValuesPacked(data, this);
    });
    chain(nodeType.prototype, "onConfigure", function (info) {
      this.loralab?.rows?.configure(info);
      this.loralab?.fold?.fit();
      this.loralab?.panel?.refresh();
      this.loralab?.editor?.refresh();
      // a frontend that sets the widget values after onConfigure: check again a frame later
      requestAnimationFrame(() => this.loralab?.panel?.sync());
    });
    chain(nodeType.prototype, "onConnectionsChange", function () {
      this.loralab?.panel?.checkModel();
    });
    chain(nodeType.prototype, "onExecuted", function (output) {
      const arch = reportedArch(output);
      if (arch && this.loralab) {
        // the model this node patched: library filters downstream now know the graph's base model
        this.loralab.modelArch = arch;
        for (const node of allNodes()) node.loralab?.library?.sync();
      }
      const text = reportText(output);
      if (text !== null && this.loralab) showReport(this, text);
    });
  },
});
