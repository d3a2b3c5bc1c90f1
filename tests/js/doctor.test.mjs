// The coverage doctor's panel line (doctor.js) from /loralab/coverage JSON (loralab/ops/coverage.py
// Coverage.to_dict), the route's query, and where a node's MODEL comes from in the graph (graph.js).
import assert from "node:assert/strict";
import test from "node:test";

import { coverageQuery, doctorView } from "../../js/lib/doctor.js";
import { isConnected, modelSource } from "../../js/lib/graph.js";
import { renderInfo } from "../../js/lib/panel.js";
import { FakeDocument } from "./fake_dom.mjs";
import { XSS } from "./xss_corpus.mjs";

const SD15_ON_SDXL = {
  lora: { label: "style.safetensors", arch: "sd1" }, model: { arch: "sdxl", name: "SDXL" }, total: 264, landed: 0,
  share: 0, percent: "0%", level: "error", headline: "nothing lands on the SDXL model: an SD1.x LoRA on an SDXL model",
  groups: [], cause: { id: "other_arch", text: "an SD1.x LoRA on an SDXL model", fix: "pick a LoRA made for SDXL, or load an SD1.x model" },
};

test("a LoRA of another architecture: the cause and the fix on one line", () => {
  const v = doctorView(SD15_ON_SDXL);
  assert.deepEqual(v, { level: "error", title: SD15_ON_SDXL.headline,
    text: "⚠ an SD1.x LoRA on an SDXL model (0% of 264 modules land) · fix: pick a LoRA made for SDXL, or load an SD1.x model" });
});

test("part lands: the share, the cause, the groups in the title", () => {
  const v = doctorView({ ...SD15_ON_SDXL, landed: 192, percent: "73%", level: "warn", headline: "192 of 264 modules (73%) land on the SD1.x model",
    groups: [{ reason: "text encoder clip_l: no CLIP connected", count: 72 }],
    cause: { id: "no_clip", text: "text-encoder keys but no CLIP connected", fix: "connect the CLIP" } });
  assert.equal(v.level, "warn");
  assert.equal(v.text, "⚠ text-encoder keys but no CLIP connected (73% of 264 modules land) · fix: connect the CLIP");
  assert.equal(v.title, "192 of 264 modules (73%) land on the SD1.x model\n72 × text encoder clip_l: no CLIP connected");
});

test("everything lands: a quiet line; a note where ComfyUI's own loader would drop it", () => {
  const ok = doctorView({ ...SD15_ON_SDXL, landed: 264, level: "ok", cause: null, model: { name: "SD1.x" } });
  assert.deepEqual([ok.level, ok.text], ["ok", "✓ fits the SD1.x model: 264 of 264 modules land"]);
  const note = doctorView({ ...SD15_ON_SDXL, landed: 264, level: "info",
    cause: { id: "host_drops", text: "diffusers-format keys: ComfyUI 0.33.0's own LoRA loader drops 320 of these modules; LoRA Lab applies them",
      fix: "none needed here; convert it to use it elsewhere" } });
  assert.equal(note.text, "ℹ diffusers-format keys: ComfyUI 0.33.0's own LoRA loader drops 320 of these modules; LoRA Lab applies them");
  assert.equal(note.title, `fix: none needed here; convert it to use it elsewhere\n${SD15_ON_SDXL.headline}`);
  const unknown = doctorView({ level: "unknown", headline: "the model file's header shows no architecture LoRA Lab knows" });
  assert.equal(unknown.level, "unknown");
  assert.ok(unknown.text.startsWith("model not recognized"));
});

test("missing, mistyped and hostile fields never throw and stay text", () => {
  for (const data of [null, undefined, 3, "x", [], {}, { level: "boom" }, { level: "warn" }, { level: "error", cause: 5, groups: "x" },
    { level: "warn", cause: { text: XSS[0], fix: XSS[1] }, model: { name: XSS[2] }, groups: XSS.map((x) => ({ reason: x, count: -1 })) }]) {
    const v = doctorView(data);
    if (v === null) continue;
    assert.equal(typeof v.text, "string");
    assert.ok(v.text.length <= 400 && v.title.length < 2000);
  }
  const v = doctorView({ level: "warn", percent: "5%", total: 10, cause: { text: XSS[10], fix: XSS[0] } });
  assert.ok(v.text.includes("safe⟨U+202E⟩gnp.exe⟨U+202C⟩") && v.text.includes(XSS[0]));
});

test("the panel shows the doctor's line as text, under the LoRA's own line", () => {
  for (const status of ["ok", "loading", "error", "empty"]) {
    const doc = new FakeDocument();
    const doctor = { level: "warn", text: XSS[0], title: XSS[1] };
    const view = { compact: "SDXL", name: "x", warnings: [], triggers: [], rows: [] };
    const root = renderInfo(doc, { label: null, status, view, doctor, error: "e" }, { toggle: () => {}, copy: () => {} });
    const line = [...root.walk()].find((n) => n.className === "loralab-doctor loralab-doctor-warn");
    if (status === "empty") {
      assert.equal(line, undefined);
      continue;
    }
    assert.equal(line.textContent, XSS[0]);
    assert.equal(line.title, XSS[1]);
    assert.ok(doc.log.every(([how]) => how === "textContent" || how === "createTextNode"));
  }
  const bogus = renderInfo(new FakeDocument(), { status: "loading", doctor: { level: "<b>", text: "x" } }, {});
  assert.equal([...bogus.walk()].filter((n) => String(n.className).startsWith("loralab-doctor")).length, 0);
});

test("the route's query", () => {
  assert.equal(coverageQuery("a b.safetensors", { name: "sd_xl_base_1.0.safetensors", kind: "checkpoints" }, true),
    "lora=a+b.safetensors&model=sd_xl_base_1.0.safetensors&kind=checkpoints&clip=1");
  assert.equal(coverageQuery("x.safetensors", { name: "wan/t2v.safetensors", kind: "diffusion_models" }, false),
    "lora=x.safetensors&model=wan%2Ft2v.safetensors&kind=diffusion_models&clip=0");
  for (const [lora, source] of [["None", { name: "m", kind: "checkpoints" }], ["", { name: "m", kind: "checkpoints" }],
    ["x", null], ["x", { name: "", kind: "checkpoints" }], ["x", { name: 5, kind: "checkpoints" }], [null, { name: "m", kind: "c" }]]) {
    assert.equal(coverageQuery(lora, source, true), null);
  }
});

// --- graph.js: a small LiteGraph-shaped graph ------------------------------------------------------

class Graph {
  constructor(linksAsMap) {
    this.nodes = new Map();
    this.links = linksAsMap ? new Map() : {};
    this.next = 1;
  }

  add(type, inputs = [], widgets = {}) {
    const node = { id: this.nodes.size + 1, type, graph: this, inputs: inputs.map((name) => ({ name, link: null })),
      widgets: Object.entries(widgets).map(([name, value]) => ({ name, value })) };
    this.nodes.set(node.id, node);
    return node;
  }

  connect(from, slot, to, input) {
    const id = this.next++;
    const link = { id, origin_id: from.id, origin_slot: slot, target_id: to.id };
    if (this.links instanceof Map) this.links.set(id, link);
    else this.links[id] = link;
    to.inputs.find((i) => i.name === input).link = id;
  }

  getNodeById(id) {
    return this.nodes.get(id) ?? null;
  }
}

for (const linksAsMap of [false, true]) {
  test(`the model file is found upstream, through LoRA nodes and reroutes (links as ${linksAsMap ? "a Map" : "an object"})`, () => {
    const g = new Graph(linksAsMap);
    const ckpt = g.add("CheckpointLoaderSimple", [], { ckpt_name: "sd_xl_base_1.0.safetensors" });
    const core = g.add("LoraLoader", ["model", "clip"], { lora_name: "a.safetensors" });
    const reroute = g.add("Reroute", [""]);
    const ours = g.add("LoRALabLoader", ["model", "clip"], { lora_name: "b.safetensors" });
    assert.equal(modelSource(ours), null);
    g.connect(ckpt, 0, core, "model");
    g.connect(core, 0, reroute, "");
    g.connect(reroute, 0, ours, "model");
    assert.deepEqual(modelSource(ours), { name: "sd_xl_base_1.0.safetensors", kind: "checkpoints" });
    assert.equal(isConnected(ours, "clip"), false);
    g.connect(ckpt, 1, ours, "clip");
    assert.equal(isConnected(ours, "clip"), true);
    ckpt.widgets[0].value = "v1-5-pruned-emaonly.safetensors";
    assert.deepEqual(modelSource(ours), { name: "v1-5-pruned-emaonly.safetensors", kind: "checkpoints" });

    const unet = g.add("UNETLoader", [], { unet_name: "wan2.1_t2v_14B_fp16.safetensors", weight_dtype: "default" });
    g.connect(unet, 0, ours, "model");
    assert.deepEqual(modelSource(ours), { name: "wan2.1_t2v_14B_fp16.safetensors", kind: "diffusion_models" });
  });
}

test("where the graph does not say, no model: other loaders, a file name fed by a link, subgraphs, cycles", () => {
  const g = new Graph(false);
  const ours = g.add("LoRALabLoader", ["model", "clip"]);
  const gguf = g.add("UnetLoaderGGUF", [], { gguf_name: "x.gguf" });
  g.connect(gguf, 0, ours, "model");
  assert.equal(modelSource(ours), null);
  const fed = g.add("CheckpointLoaderSimple", ["ckpt_name"], { ckpt_name: "x.safetensors" });
  const primitive = g.add("PrimitiveNode", []);
  g.connect(primitive, 0, fed, "ckpt_name");
  g.connect(fed, 0, ours, "model");
  assert.equal(modelSource(ours), null);
  const sub = g.add("subgraph-node", []);
  sub.subgraph = {};
  g.connect(sub, 0, ours, "model");
  assert.equal(modelSource(ours), null);
  const a = g.add("LoraLoaderModelOnly", ["model"]);
  const b = g.add("LoraLoaderModelOnly", ["model"]);
  g.connect(a, 0, b, "model");
  g.connect(b, 0, a, "model");
  g.connect(a, 0, ours, "model");
  assert.equal(modelSource(ours), null);
  const dangling = g.add("LoRALabLoader", ["model"]);
  dangling.inputs[0].link = 999;
  assert.equal(modelSource(dangling), null);
  assert.equal(modelSource({}), null);
});
