// The widgets' DOM builders, run against a fake DOM whose markup sinks throw: every string from
// a file or the server ends up as text (textContent, text nodes, title), never as markup,
// attribute handlers or URLs; only inert tags are created.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import { el } from "../../js/lib/dom.js";
import { buildSliders, setOptions, showValues, sliderValue } from "../../js/lib/editor_view.js";
import { detailsView, infoView } from "../../js/lib/format.js";
import { pickerSlot, renderInfo, renderReport } from "../../js/lib/panel.js";
import { parseSpec } from "../../js/lib/spec.js";
import { FakeDocument } from "./fake_dom.mjs";
import { DETAILS, SAMPLE } from "./samples.mjs";
import { XSS } from "./xss_corpus.mjs";

const INERT_TAGS = new Set(["div", "span", "button", "pre", "select", "option", "input", "canvas", "#text"]);
const noop = () => {};

function assertInert(root) {
  for (const node of root.walk()) {
    assert.ok(INERT_TAGS.has(node.tagName), `created <${node.tagName}>`);
    for (const [name] of node.attributes) assert.ok(!/^on/i.test(name), `attribute ${name}`);
  }
}

function visibleText(root) {
  return [...root.walk()].flatMap((n) => [n._text ?? "", n.title]).join("\n");
}

const hostile = {
  ...SAMPLE,
  name: XSS[0],
  format: { id: XSS[1], name: XSS[2] },
  arch: { id: "sdxl", name: XSS[3], variant: XSS[4], metadata_claim: XSS[5] },
  training: { trainer: XSS[6], resolution: XSS[7], steps: 5 },
  trigger_words: XSS,
  triggers: XSS.map((word) => ({ word, kind: "trigger_phrase", source: word, likely: true })),
  warnings: XSS.map((x) => ({ code: x, message: x, count: 3, items: [x, x, x] })),
};

test("the metadata panel shows hostile metadata as text only, expanded and compact", () => {
  for (const expanded of [false, true]) {
    const doc = new FakeDocument();
    const root = renderInfo(doc, { label: XSS[1], status: "ok", view: infoView(hostile), expanded }, { toggle: noop, copy: noop });
    assertInert(root);
    const text = visibleText(root);
    for (const payload of XSS.slice(0, 10)) assert.ok(text.includes(payload), `missing as text: ${payload}`);
    assert.ok(text.includes("safe⟨U+202E⟩gnp.exe⟨U+202C⟩"));
    assert.ok(doc.log.length > 20 && doc.log.every(([how]) => how === "textContent" || how === "createTextNode"));
  }
});

test("chips copy exactly the stored word; the toggle expands", () => {
  const doc = new FakeDocument();
  const copied = [];
  let toggled = 0;
  const root = renderInfo(doc, { label: null, status: "ok", view: infoView(hostile), expanded: false },
    { toggle: () => toggled++, copy: (word) => copied.push(word) });
  const chips = [...root.walk()].filter((n) => n.className.split(" ").includes("loralab-chip"));
  assert.equal(chips.length, XSS.length);
  chips.forEach((c) => c.dispatch("click"));
  assert.deepEqual(copied, XSS);
  [...root.walk()].find((n) => n.className === "loralab-toggle").dispatch("click");
  assert.equal(toggled, 1);
});

test("loading, empty and error states, with a hostile error message", () => {
  for (const state of [{ status: "loading" }, { status: "empty" }, { status: "error", error: XSS[1] }]) {
    const doc = new FakeDocument();
    const root = renderInfo(doc, { label: "#1", ...state }, { toggle: noop, copy: noop });
    assertInert(root);
    if (state.error) assert.ok(visibleText(root).includes(`info unavailable: ${XSS[1]}`));
  }
});

test("the report is one preformatted text node, invisible characters revealed, size bounded", () => {
  for (const payload of XSS) {
    const doc = new FakeDocument();
    const pre = renderReport(doc, `report\n${payload}\n`);
    assertInert(pre);
    assert.equal(pre.tagName, "pre");
    assert.ok(pre.textContent.length <= 20000);
  }
  assert.equal(renderReport(new FakeDocument(), "a\n<b>\u202E\tc").textContent, "a\n<b>⟨U+202E⟩\tc");
});

test("el refuses attributes outside its allow-list", () => {
  const doc = new FakeDocument();
  for (const name of ["onclick", "href", "src", "style", "srcdoc"]) {
    assert.throws(() => el(doc, "div", { attrs: { [name]: "x" } }), /not allowed/);
  }
  assert.equal(el(doc, "span", { text: XSS[0] }).textContent, XSS[0]);
});

test("the block editor's sliders: one per block, values and tokens shown, moves reported on the grid", () => {
  const corpus = JSON.parse(readFileSync(new URL("./spec_corpus.json", import.meta.url), "utf8"));
  const catalog = corpus.catalogs.sdxl;
  const doc = new FakeDocument();
  const moves = [];
  const { root, cells } = buildSliders(doc, catalog, (b, v) => moves.push([b, v]), noop);
  assertInert(root);
  assert.deepEqual([...cells.keys()], [...catalog.blocks, "OTHER"]);
  showValues(cells, parseSpec("IN04-IN08=0.5, OUT=0, M00=A, BASE=R, OUT08=3", catalog).values, { a: 0.2 });
  assert.equal(cells.get("IN05").input.value, "0.5");
  assert.equal(cells.get("M00").input.value, "0.2");
  assert.equal(cells.get("M00").cell.getAttribute("data-kind"), "token");
  assert.equal(cells.get("BASE").cell.getAttribute("data-kind"), "token");
  assert.equal(cells.get("OUT08").cell.getAttribute("data-kind"), "off");
  assert.equal(cells.get("OUT08").input.value, "1.5");
  assert.equal(cells.get("OUT03").cell.getAttribute("data-kind"), "zero");
  assert.match(cells.get("BASE").cell.title, /random in \[0, 1\)/);
  cells.get("IN01").input.value = "0.30000000000000004";
  cells.get("IN01").input.dispatch("input");
  assert.deepEqual(moves, [["IN01", 0.3]]);
  assert.equal(sliderValue("-0.149"), -0.15);
  const select = el(doc, "select");
  setOptions(doc, select, [{ value: XSS[1], label: XSS[0] }], XSS[1]);
  assertInert(select);
  assert.equal(select.value, XSS[1]);
});

test("a deleted file shows as missing, its hostile name only in the title", () => {
  const doc = new FakeDocument();
  const root = renderInfo(doc, { label: null, status: "missing", error: XSS[1] }, { toggle: noop, copy: noop });
  assertInert(root);
  assert.ok(root.className.includes("loralab-missing"));
  const texts = [...root.walk()].map((n) => n._text ?? "").join("");
  assert.equal(texts, "missing: no longer in the loras folder");
  assert.ok(visibleText(root).includes(XSS[1]));  // the name, as a title
});

test("the details fold: closed, loading, failed and open with hostile details, all as text", () => {
  const hostileDetails = {
    ...DETAILS,
    tag_frequency: XSS.map((x) => ({ folder: x, images: 1, tags: [{ tag: x, count: 1 }] })),
    metadata: { kohya: Object.fromEntries(XSS.map((x, i) => [`ss_${i}`, x])), errors: { ss_0: XSS[2] } },
  };
  const view = infoView(hostile);
  const render = (details, actions = {}) => renderInfo(new FakeDocument(), { label: null, status: "ok", view, expanded: true, details },
    { toggle: noop, copy: noop, ...actions });
  const classes = (root) => [...root.walk()].map((n) => n.className);
  let opened = 0;
  const closed = render({ open: false }, { details: () => opened++ });
  assert.ok(!classes(closed).includes("loralab-more"));
  const button = [...closed.walk()].find((n) => n.className === "loralab-more-toggle");
  assert.equal(button.textContent, "details");
  button.dispatch("click");
  assert.equal(opened, 1);
  assert.ok(visibleText(render({ open: true, status: "loading" })).includes("reading details…"));
  const failed = render({ open: true, status: "error", error: XSS[1] });
  assertInert(failed);
  assert.ok(visibleText(failed).includes(`details unavailable: ${XSS[1]}`.slice(0, 100)));
  const open = render({ open: true, status: "ok", view: detailsView(hostileDetails) });
  assertInert(open);
  const text = visibleText(open);
  for (const payload of XSS.slice(0, 10)) assert.ok(text.includes(payload), `missing as text: ${payload}`);
  assert.ok(text.includes("caption tags per folder") && text.includes("metadata") && text.includes("modules per block"));
  assert.equal([...open.walk()].find((n) => n.className === "loralab-more-toggle").textContent, "hide details");
});

test("the more rows render under the compact line, collapsed away", () => {
  const doc = new FakeDocument();
  const rows = (expanded) => [...renderInfo(doc, { label: null, status: "ok", view: infoView(SAMPLE), expanded }, { toggle: noop, copy: noop })
    .walk()].filter((n) => n.className === "loralab-label").map((n) => n.textContent);
  assert.deepEqual(rows(false), []);
  const labels = rows(true);
  for (const label of ["trained on", "images", "learning rate", "optimizer", "network", "top tags"]) assert.ok(labels.includes(label), label);
});

test("pickerSlot pairs each LoRA picker with its spec and names it", () => {
  assert.deepEqual(pickerSlot("lora_name"), { suffix: "", label: null });
  assert.deepEqual(pickerSlot("lora_name_3"), { suffix: "_3", label: "#3" });
  assert.deepEqual(pickerSlot("lora_high"), { suffix: "", label: "high noise" });
  assert.deepEqual(pickerSlot("lora_low"), { suffix: "_low", label: "low noise" });
  for (const name of ["lora_names", "block_weights", "lora_name_x", "", null, undefined, 3]) {
    assert.equal(pickerSlot(name), null, String(name));
  }
});
