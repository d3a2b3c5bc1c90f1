// format.js turns /loralab/lora_info JSON (loralab/inspect.py schema 1) into plain display
// strings, tolerates missing or mistyped fields, and passes hostile metadata through as inert text.
import assert from "node:assert/strict";
import test from "node:test";

import { errorText, formatBytes, formatDistribution, formatTraining, formatTriggers, infoView } from "../../js/lib/format.js";
import { SAMPLE, dist } from "./samples.mjs";
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
