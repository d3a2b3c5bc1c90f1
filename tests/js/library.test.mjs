// The LoRA picker's filter logic (js/lib/library.js): the route a filter asks, the rows and status a
// listing shows (hostile strings as plain text, bounded), and the graph's base model found up the
// MODEL links.
import assert from "node:assert/strict";
import test from "node:test";

import { archOptions, filterActive, graphArch, libraryRoute, reportedArch, resultRow, resultView, statusText } from "../../js/lib/library.js";
import { XSS } from "./xss_corpus.mjs";

const ENTRY = {
  name: "chars/ohwx.safetensors", arch: "sdxl", arch_name: "SDXL", rank: "16 ×722", fits: ["sdxl"],
  verdict: "LoRA for SDXL: 722 of 722 modules map onto it; rank 16", triggers: ["ohwx woman"],
  flags: [], duplicates: [], imported: null,
};

test("the route carries the filter, encoded", () => {
  assert.equal(libraryRoute(), "/loralab/library?limit=40");
  assert.equal(libraryRoute({ arch: "sdxl", query: "  ohwx woman " }), "/loralab/library?arch=sdxl&q=ohwx%20woman&limit=40");
  assert.equal(libraryRoute({ query: "a&b=<c>#", rescan: true }), "/loralab/library?q=a%26b%3D%3Cc%3E%23&limit=40&rescan=1");
  assert.equal(filterActive({ arch: "", query: "  " }), false);
  assert.ok(filterActive({ arch: "flux" }) && filterActive({ query: "x" }));
});

test("a row names the file exactly and describes it", () => {
  const row = resultRow({ ...ENTRY, imported: { source: "Civitai", name: "Ohwx", triggers: ["ohwx", "ohwx woman"] } },
    "chars/ohwx.safetensors");
  assert.equal(row.name, "chars/ohwx.safetensors");
  assert.equal(row.label, "chars/ohwx.safetensors");
  assert.equal(row.detail, "SDXL · rank 16 ×722 · ohwx woman, ohwx");
  assert.ok(row.current && !row.flagged);
  assert.ok(row.title.includes("Civitai: Ohwx") && row.title.includes("trigger words: ohwx woman, ohwx"));
  const flagged = resultRow({ ...ENTRY, flags: [{ code: "duplicate", message: "same tensor data" }], duplicates: ["b.safetensors"] });
  assert.ok(flagged.flagged && flagged.label === "chars/ohwx.safetensors" && !flagged.current);
  assert.ok(flagged.title.includes("⚠ same tensor data") && flagged.title.includes("same data as: b.safetensors"));
  assert.equal(resultRow({ name: "x.safetensors", error: "bad header" }).title, "x.safetensors\nunreadable: bad header");
});

test("hostile entries stay text, with invisible characters revealed and lengths bounded", () => {
  for (const payload of XSS) {
    const row = resultRow({ name: payload, arch_name: payload, rank: payload, verdict: payload, triggers: [payload, 5, null],
      flags: [{ message: payload }, "x"], duplicates: [payload], imported: { name: payload, source: payload, triggers: payload } });
    assert.equal(row.name, payload);  // the picker value, exact: it is only ever compared and set, never shown raw
    for (const text of [row.label, row.detail, row.title]) assert.equal(typeof text, "string");
    assert.ok(row.label.length <= 104);
  }
  const sneaky = resultRow({ name: "safe\u202Egnp.exe", triggers: ["oh\u200Bwx"] });
  assert.equal(sneaky.label, "safe⟨U+202E⟩gnp.exe");
  assert.ok(sneaky.detail.includes("oh⟨U+200B⟩wx"));
  const many = resultRow({ name: "m", triggers: Array.from({ length: 50 }, (_, i) => `w${i}`) });
  assert.ok(many.detail.endsWith("w5, …"));
});

test("the view bounds its rows and says what the worker does", () => {
  const entries = Array.from({ length: 100 }, (_, i) => ({ ...ENTRY, name: `l${i}.safetensors` }));
  const view = resultView({ entries: [...entries, null, 7, { name: 3 }], offered: 120, known: 120, status: { state: "idle" } });
  assert.equal(view.rows.length, 40);
  assert.equal(view.summary, "100 of 120 LoRAs (first 40 shown)");
  assert.equal(view.status, "");
  assert.equal(view.busy, false);
  assert.equal(resultView({ entries: entries.slice(0, 40), matched: 300, offered: 400 }).summary,
    "300 of 400 LoRAs (first 40 shown)");  // the route sends the first 40
  assert.equal(resultView({ entries: [] }).summary, "no LoRA matches");
  assert.deepEqual(resultView("nonsense"), { rows: [], summary: "no LoRA matches", status: "", busy: false });
  const hashing = { state: "hashing", hashing: { files_done: 3, files_total: 8, bytes_done: 3 * 2 ** 20, bytes_total: 2 ** 30 } };
  assert.equal(statusText({ status: hashing, offered: 8, known: 8 }), "hashing 3 of 8 files (3.0 MiB of 1.0 GiB)");
  assert.ok(resultView({ status: hashing, entries: [] }).busy);
  // a scan asked for (a dropped file offered) and not started: the filter asks again
  assert.ok(resultView({ status: { state: "idle", queued: true }, offered: 10, known: 9, entries: [] }).busy);
  assert.equal(resultView({ status: { state: "idle", queued: "yes" }, entries: [] }).busy, false);
  assert.equal(statusText({ status: { state: "scanning" } }), "reading the headers of new LoRAs…");
  assert.equal(statusText({ status: { state: "idle" }, offered: 10, known: 7 }), "3 LoRA(s) not indexed yet");
  assert.equal(statusText({ status: { state: "error", error: "<b>x\u202E</b>" } }), "library: <b>x⟨U+202E⟩</b>");
});

test("the graph's base model is the nearest one reported up the MODEL links", () => {
  const ckpt = { id: "ckpt" };
  const first = { id: "first", loralab: { modelArch: "flux" } };
  const second = { id: "second", loralab: {} };
  const up = new Map([[second, first], [first, ckpt]]);
  const upstreamOf = (n) => up.get(n) ?? null;
  assert.equal(graphArch(second, upstreamOf), "flux");
  assert.equal(graphArch({ loralab: { modelArch: "sdxl" } }, upstreamOf), "sdxl");  // its own run first
  assert.equal(graphArch(ckpt, upstreamOf), null);
  const a = { loralab: {} };
  const b = { loralab: {} };
  assert.equal(graphArch(a, (n) => (n === a ? b : a)), null);  // a cycle ends the walk
});

test("a reported arch is taken only when it looks like an arch id", () => {
  assert.equal(reportedArch({ text: ["..."], loralab_model_arch: ["sdxl"] }), "sdxl");
  assert.equal(reportedArch({ loralab_model_arch: "wan21_t2v_14b" }), "wan21_t2v_14b");
  for (const bad of [undefined, null, {}, { loralab_model_arch: [] }, { loralab_model_arch: ["<img src=x>"] },
    { loralab_model_arch: [5] }, { loralab_model_arch: ["x".repeat(41)] }]) {
    assert.equal(reportedArch(bad), null);
  }
});

test("the select offers any model, then each arch, the graph's one marked", () => {
  const archs = [{ id: "sd1", name: "SD1.x" }, { id: "sdxl", name: "SDXL" }, { bad: 1 }, null];
  assert.deepEqual(archOptions(archs, "sdxl"), [{ value: "", label: "any base model" }, { value: "sd1", label: "SD1.x" },
    { value: "sdxl", label: "SDXL (this graph)" }]);
  assert.deepEqual(archOptions(undefined), [{ value: "", label: "any base model" }]);
});
