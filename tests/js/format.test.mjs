// format.js turns /loralab/lora_info JSON (loralab/inspect.py schema 1) into plain display
// strings, tolerates missing or mistyped fields, and passes hostile metadata through as inert text.
import assert from "node:assert/strict";
import test from "node:test";

import {
  DETAILS_LIMITS, detailsView, errorText, formatBaseCheckpoint, formatBytes, formatDistribution, formatImages, formatLearningRate,
  formatNetwork, formatOptimizer, formatRate, formatTopTags, formatTraining, formatTriggers, infoView,
} from "../../js/lib/format.js";
import { DETAILS, SAMPLE, dist } from "./samples.mjs";
import { XSS } from "./xss_corpus.mjs";

test("a realistic summary: compact line, rows, varies detail, triggers with sources, warnings", () => {
  const v = infoView(SAMPLE);
  assert.equal(v.ok, true);
  assert.equal(v.compact, "SDXL · LoRA ×722, LoCon ×264 · rank varies · α 16 · 217.9 MiB");
  const rows = Object.fromEntries(v.rows.map((r) => [r.label, r.value]));
  assert.equal(rows.rank, "varies: 32 ×722, 16 ×264; unet linear: 32 ×722; unet conv: 16 ×264");
  assert.equal(rows.alpha, "16");
  assert.equal(rows.trained, "1280 steps · 8 / 10 epochs · 1024x1024");
  assert.equal(rows.format, "kohya sd-scripts");
  assert.deepEqual(v.triggers.map((t) => t.word), ["ohwx woman"]);
  assert.deepEqual(v.triggers[0].sources, ['ss_tag_frequency folder "10_ohwx woman"', 'ss_tag_frequency["10_ohwx woman"]']);
  assert.deepEqual(v.warnings, [{ message: "alpha is far above rank in 4 modules", items: ["a", "b", "c"], more: 1 }]);
});

test("metadata claiming another arch and alpha without tensors are said plainly", () => {
  const v = infoView({ ...SAMPLE, arch: { id: "sd1", name: "SD1.x", variant: "v-pred", metadata_claim: "sdxl" }, alpha: dist([[null, 10]]) });
  const rows = Object.fromEntries(v.rows.map((r) => [r.label, r.value]));
  assert.equal(rows["base model"], "SD1.x (v-pred) (metadata says sdxl)");
  assert.equal(rows.alpha, "none (= rank)");
});

test("a release's label is said once", () => {
  const name = (arch) => Object.fromEntries(infoView({ ...SAMPLE, arch }).rows.map((r) => [r.label, r.value]))["base model"];
  assert.equal(name({ id: "flux", name: "Flux.1 Kontext", variant: "Kontext", metadata_claim: "flux" }), "Flux.1 Kontext");
  assert.equal(name({ id: "flux", name: "Flux.1 dev", variant: "dev", metadata_claim: null }), "Flux.1 dev");
});

test("the architectures the keys fit as well are said beside the base model", () => {
  const row = (arch) => Object.fromEntries(infoView({ ...SAMPLE, arch }).rows.map((r) => [r.label, r.value]))["base model"];
  const also = [{ id: "chroma", name: "Chroma" }, null, { id: "hunyuan_video", name: "HunyuanVideo" }];
  assert.equal(row({ id: "flux", name: "Flux.1", variant: null, metadata_claim: null, also_fits: also }),
    "Flux.1 (keys also fit Chroma, HunyuanVideo)");
  assert.equal(row({ id: "flux", name: "Flux.1", metadata_claim: "sdxl", also_fits: [{ id: "chroma" }] }),
    "Flux.1 (keys also fit chroma; metadata says sdxl)");
  assert.equal(row({ id: "flux", name: "Flux.1", also_fits: "chroma" }), "Flux.1");
});

test("missing, null and mistyped fields never throw", () => {
  for (const info of [null, undefined, 42, "x", [], {}, { arch: "sdxl", rank: [], triggers: {}, warnings: "x", training: 5 },
    { rank: { values: [null, 3, { value: "16", count: "many" }] }, trigger_words: [null, 7, ""], algorithms: ["x"] }]) {
    const v = infoView(info);
    if (v.ok) {
      assert.equal(typeof v.compact, "string");
      for (const r of v.rows) assert.equal(typeof r.value, "string");
    } else {
      assert.equal(typeof v.error, "string");
    }
  }
  assert.equal(infoView({}).compact, "unknown");
});

test("triggers fall back to likely entries when trigger_words is absent, deduplicated", () => {
  const chips = formatTriggers({ triggers: SAMPLE.triggers });
  assert.deepEqual(chips.map((c) => c.word), ["ohwx woman"]);
});

test("numbers and sizes", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(-1), "");
  assert.equal(formatDistribution(dist([[0.333333, 3]])).text, "0.3333");
  assert.equal(formatTraining({ steps: null, epochs: 3 }), "3 epochs");
  assert.equal(errorText(""), "request failed");
});

test("hostile metadata comes out as plain strings: verbatim when visible, revealed when not, cut when long", () => {
  const info = {
    ...SAMPLE,
    name: XSS[0],
    arch: { id: XSS[1], name: XSS[2], variant: XSS[3], metadata_claim: XSS[4] },
    format: { id: XSS[5], name: XSS[6] },
    algorithms: Object.fromEntries(XSS.map((x, i) => [x, i])),
    training: { trainer: XSS[7], resolution: XSS[8] },
    trigger_words: XSS,
    triggers: XSS.map((word) => ({ word, kind: "trigger_phrase", source: word, likely: true })),
    warnings: XSS.map((x) => ({ code: x, message: x, count: 1, items: [x] })),
  };
  const v = infoView(info);
  const strings = [v.name, v.compact, ...v.rows.flatMap((r) => [r.label, r.value]),
    ...v.triggers.flatMap((t) => [t.label, ...t.sources]), ...v.warnings.flatMap((w) => [w.message, ...w.items])];
  for (const s of strings) {
    assert.equal(typeof s, "string");
    assert.ok(s.length <= 400, `too long: ${s.length}`);
    assert.ok(!/[\u202A-\u202E\u2066-\u2069\u200B-\u200F\uFEFF\u0000-\u001F\u2028\u2029]/.test(s), `invisible character left in ${JSON.stringify(s)}`);
  }
  assert.equal(v.name, XSS[0]);
  assert.equal(v.triggers.length, XSS.length);
  const byWord = new Map(v.triggers.map((t) => [t.word, t]));
  assert.equal(byWord.get(XSS[1]).label, XSS[1]);
  assert.equal(byWord.get(XSS[1]).hidden, false);
  const rtl = byWord.get("safe\u202Egnp.exe\u202C");
  assert.equal(rtl.label, "safe⟨U+202E⟩gnp.exe⟨U+202C⟩");
  assert.equal(rtl.hidden, true);
  assert.equal(byWord.get("oh\u200Bwx\u200C\u200D\uFEFF").word, "oh\u200Bwx\u200C\u200D\uFEFF"); // copies exactly what is stored
});

test("the more rows: checkpoint, images, learning rate, optimizer, network, top tags", () => {
  const rows = Object.fromEntries(infoView(SAMPLE).rows.map((r) => [r.label, r.value]));
  assert.equal(rows["trained on"], "sd_xl_base_1.0.safetensors (sdxl_base_v1-0)");
  assert.equal(rows.images, "25 (250 per epoch with repeats)");
  assert.equal(rows["learning rate"], "1e-4 (text encoder 5e-5)");
  assert.equal(rows.optimizer, "AdamW8bit (weight_decay=0.1) · cosine");
  assert.equal(rows.network, "lycoris.kohya (locon)");
  assert.equal(rows["top tags"], "ohwx woman (25), 1girl (23), solo (22), long hair (17), looking at viewer (14), brown hair (13), "
    + "smile (11), upper body (9), …");
  assert.deepEqual(infoView({ ...SAMPLE, training: {}, tags: null }).rows.map((r) => r.label),
    ["base model", "format", "algorithm", "rank", "alpha", "file size"]);  // absent facts, absent rows
});

test("each more field on its own", () => {
  assert.deepEqual([0.0001, 5e-5, 0.05, 1.23456e-4, 0, 1].map(formatRate), ["1e-4", "5e-5", "0.05", "1.235e-4", "0", "1"]);
  assert.equal(formatLearningRate({ learning_rate: 1e-4, unet_lr: 2e-4, text_encoder_lr: 0 }), "1e-4 (unet 2e-4, text encoder 0)");
  assert.equal(formatLearningRate({ learning_rate: null, unet_lr: 1e-4 }), "unet 1e-4");
  assert.equal(formatLearningRate({ learning_rate: "fast" }), "");
  assert.equal(formatBaseCheckpoint({ base_model: "C:\\sd\\models\\v1-5.ckpt" }), "v1-5.ckpt");
  assert.equal(formatBaseCheckpoint({ base_model: "stabilityai/stable-diffusion-xl-base-1.0" }), "stabilityai/stable-diffusion-xl-base-1.0");
  assert.equal(formatBaseCheckpoint({ base_model_version: "flux.1" }), "flux.1");
  assert.equal(formatImages({ train_images: 250 }), "250 per epoch");
  assert.equal(formatImages({ images: 40, train_images: 40, reg_images: 10 }), "40 + 10 regularisation");
  assert.equal(formatOptimizer({ optimizer: "prodigyopt.Prodigy" }), "Prodigy");
  assert.equal(formatNetwork({ network_module: "peft", network_algo: "dora" }), "peft (dora)");
  assert.equal(formatTopTags({ top: [{ tag: "a", count: 2 }], distinct: 1, skipped: 3 }), "a (2); 3 entries unreadable");
  assert.equal(formatTopTags({ top: [], problem: "ss_tag_frequency is not valid JSON (x)" }),
    "unreadable: ss_tag_frequency is not valid JSON (x)");
  for (const bad of [null, 5, "x", [], { top: "x" }, { top: [null, 7, { tag: {}, count: "n" }] }]) assert.equal(typeof formatTopTags(bad), "string");
});

test("the details: tags per folder, modules per block in block order, unmapped, metadata with undecodable fields flagged", () => {
  const v = detailsView(DETAILS);
  assert.equal(v.ok, true);
  const byTitle = Object.fromEntries(v.sections.map((s) => [s.title, s]));
  assert.deepEqual(byTitle["caption tags per folder"].lines, ["10_ohwx woman (25 images): ohwx woman 25, 1girl 23"]);
  assert.deepEqual(byTitle.modules.lines, ["4 modules per block: IN04 1, OUT01 1, BASE 1, maps nowhere 1",
    "lora_unet_gone: no such weight in SDXL"]);
  const md = byTitle.metadata.lines;
  assert.ok(md.includes("ss_network_dim: 32"));
  assert.ok(md.includes('ss_dataset_dirs: {"10_ohwx woman":{"img_count":25}}'));
  assert.ok(md.includes("ss_tag_frequency: {broken ⚠ not valid JSON (Expecting value)"));
  assert.ok(md.includes("modelspec.architecture: stable-diffusion-xl-v1-base/lora") && md.includes("lora_adapter_metadata.r: 4"));
  assert.equal(detailsView(null).ok, false);
  assert.deepEqual(detailsView({}).sections, []);
});

test("huge or hostile details are cut and come out as plain strings", () => {
  const many = Array.from({ length: 500 }, (_, i) => [`ss_k${i}`, "x".repeat(10000)]);
  const full = {
    tag_frequency: [...XSS.map((x) => ({ folder: x, images: x, tags: XSS.map((t) => ({ tag: t, count: t })) })),
      { folder: "big", tags: Array.from({ length: 1000 }, (_, i) => ({ tag: `t${i}`, count: i })) }, null, 5],
    modules: XSS.map((x) => ({ module: x, block: x, target: x })),
    unmapped: XSS.map((x) => ({ module: x, reason: x })),
    metadata: { kohya: Object.fromEntries([...many, ...XSS.map((x) => [x, x])]), modelspec: "x", errors: { [XSS[0]]: XSS[1] } },
    coverage: { blocks: "IN04" },
  };
  const v = detailsView(full);
  const byTitle = Object.fromEntries(v.sections.map((s) => [s.title, s]));
  assert.equal(byTitle.metadata.lines.length, DETAILS_LIMITS.fields);
  assert.equal(byTitle.metadata.more, 500 + XSS.length - DETAILS_LIMITS.fields);
  assert.equal(byTitle["caption tags per folder"].lines.length, DETAILS_LIMITS.folders);
  assert.equal(byTitle.modules.more, XSS.length - DETAILS_LIMITS.modules);
  for (const s of v.sections.flatMap((x) => [x.title, ...x.lines])) {
    assert.equal(typeof s, "string");
    assert.ok(s.length <= 700, `too long: ${s.length}`);
    assert.ok(!/[\u202A-\u202E\u2066-\u2069\u200B-\u200F\uFEFF\u0000-\u001F\u2028\u2029]/.test(s), `invisible character left in ${JSON.stringify(s)}`);
  }
  const cyclic = {};
  cyclic.self = cyclic;
  assert.deepEqual(detailsView({ metadata: { other: { a: cyclic, b: 10n } } }).sections[0].lines, ["a: ", "b: "]);
});
