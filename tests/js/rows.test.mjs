// The LoRA rows: their JSON as the server reads it, edits, and the conversion of the five-slot
// Stack and Stack Report of older workflows; the row view builds text only.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import {
  legacyRows, makeRow, moveRow, parseRows, removeRow, serializeRows, summary, typedStrength, updateRow,
} from "../../js/lib/rows.js";
import { missingLabel, pickerOptions, renderRows } from "../../js/lib/rows_view.js";
import { FakeDocument } from "./fake_dom.mjs";

const FIVE_SLOTS = JSON.parse(readFileSync(new URL("../e2e/fixtures/lora_stack_five_slots.json", import.meta.url), "utf8"));
const nodeOf = (type) => FIVE_SLOTS.nodes.find((n) => n.type === type);
const row = (lora, strength_model, strength_clip, block_weights, on = true) =>
  ({ on, lora, strength_model, strength_clip, block_weights });

test("rows round-trip through their JSON, fields in order, defaults filled in", () => {
  const rows = [row("a.safetensors", 0.8, 0.5, "OUT=0"), row("b/c.safetensors", -1, 1, "", false)];
  const text = serializeRows(rows);
  assert.equal(text, '[{"on":true,"lora":"a.safetensors","strength_model":0.8,"strength_clip":0.5,"block_weights":"OUT=0"},'
    + '{"on":false,"lora":"b/c.safetensors","strength_model":-1,"strength_clip":1,"block_weights":""}]');
  assert.deepEqual(parseRows(text), { rows, error: null });
  assert.deepEqual(parseRows('[{"lora": "a.safetensors"}]').rows, [row("a.safetensors", 1, 1, "")]);
  assert.deepEqual(parseRows(""), { rows: [], error: null });
  assert.deepEqual(parseRows("[]"), { rows: [], error: null });
  assert.deepEqual(makeRow(), row("", 1, 1, ""));
});

test("rows the server would refuse are reported, not shown as something else", () => {
  for (const [text, error] of [
    ["[{", /^the rows are not valid JSON \(/],
    ['{"lora": "a"}', /^the rows are not a JSON list$/],
    ['["a.safetensors"]', /^row 1 is not an object$/],
    ['[{"lora": "a"}, {"lora": "b", "weight": 1}]', /^row 2 has fields LoRA Lab does not know: weight$/],
    ['[{"lora": "a", "strength_model": "1"}]', /^row 1 has a field of the wrong kind$/],
    ['[{"lora": "a", "strength_clip": 1000}]', /^row 1 has a field of the wrong kind$/],
    ['[{"lora": "a", "on": "yes"}]', /^row 1 has a field of the wrong kind$/],
  ]) {
    const parsed = parseRows(text);
    assert.deepEqual(parsed.rows, [], text);
    assert.match(parsed.error, error, text);
  }
});

test("move, remove, update, summary and typed strengths", () => {
  const rows = ["a", "b", "c"].map((n) => row(n, 1, 1, ""));
  assert.deepEqual(moveRow(rows, 2, -1).map((r) => r.lora), ["a", "c", "b"]);
  assert.deepEqual(moveRow(rows, 0, 1).map((r) => r.lora), ["b", "a", "c"]);
  assert.equal(moveRow(rows, 0, -1), rows);
  assert.equal(moveRow(rows, 2, 1), rows);
  assert.deepEqual(removeRow(rows, 1).map((r) => r.lora), ["a", "c"]);
  assert.deepEqual(updateRow(rows, 1, { on: false })[1], row("b", 1, 1, "", false));
  assert.equal(rows[1].on, true);  // edits make new lists
  assert.equal(summary(updateRow(rows, 1, { on: false })), "2 of 3 on");
  assert.equal(summary([]), "no LoRA yet");
  assert.equal(typedStrength(" 0.8 "), 0.8);
  assert.equal(typedStrength(",5"), 0.5);
  assert.equal(typedStrength("-1"), -1);
  for (const bad of ["", "x", "1e3", "101", "-100.5", "NaN", "0x1"]) assert.equal(typedStrength(bad), null, bad);
});

test("a five-slot Stack's saved values become rows; None slots are left out; a, b, seed follow", () => {
  const got = legacyRows("LoRALabStack", nodeOf("LoRALabStack").widgets_values);
  assert.deepEqual(got, {
    rows: [row("my_style_xl.safetensors", 0.8, 0.7, ""), row("my_character_xl.safetensors", 1, 0.9, "SDXL-INALL"),
      row("my_detail_xl.safetensors", 0.5, 0.5, "")],
    rest: [0.5, 0.25, 7],
  });
});

test("a five-slot Stack Report's slots become rows whose two strengths are its one weight", () => {
  const got = legacyRows("LoRALabStackReport", nodeOf("LoRALabStackReport").widgets_values);
  assert.deepEqual(got.rows, [row("my_style_xl.safetensors", 0.8, 0.8, ""),
    row("my_character_xl.safetensors", 1, 1, "SDXL-INALL"), row("my_detail_xl.safetensors", 0.5, 0.5, "")]);
  assert.deepEqual(got.rest, [0.1, 0.5, 0.25, 0.2, 512, 3]);
});

test("values of the rows layout, or of anything else, are not taken for five slots", () => {
  const rows = serializeRows([row("a.safetensors", 1, 1, "")]);
  assert.equal(legacyRows("LoRALabStack", [rows, 1, 1, 0]), null);
  assert.equal(legacyRows("LoRALabStackReport", [rows, 0.1, 0.5, 0.25, 0, 4096, 0]), null);
  assert.equal(legacyRows("LoRALabLoader", nodeOf("LoRALabStack").widgets_values), null);
  const shifted = [...nodeOf("LoRALabStack").widgets_values];
  shifted.splice(1, 1);
  shifted.push(0);
  assert.equal(legacyRows("LoRALabStack", shifted), null);  // same length, not the layout
  assert.equal(legacyRows("LoRALabStack", undefined), null);
  const empty = legacyRows("LoRALabStack", [..."x".repeat(5)].flatMap(() => ["None", 1, 1, ""]).concat([1, 1, 0]));
  assert.deepEqual(empty, { rows: [], rest: [1, 1, 0] });
});

test("the picker keeps a name the list lacks, and prompts for a new row's LoRA", () => {
  assert.deepEqual(pickerOptions(["a", "b"], "a").map((o) => o.value), ["a", "b"]);
  assert.deepEqual(pickerOptions(["a"], "gone").map((o) => o.label), [missingLabel("gone"), "a"]);
  assert.deepEqual(pickerOptions(["a"], "")[0], { value: "", label: "choose a LoRA…" });
});

const HOSTILE = '<img src=x onerror="window.__xss=1">.safetensors';

function view(rows, { clip = true, names = ["a.safetensors", HOSTILE], error = null } = {}) {
  const doc = new FakeDocument();
  const calls = [];
  const on = Object.fromEntries(["update", "move", "remove", "add", "clear"].map((k) => [k, (...a) => calls.push([k, ...a])]));
  const root = renderRows(doc, { rows, error, names, clip }, on);
  const all = [...root.walk()];
  return { doc, root, calls, all, by: (cls) => all.filter((n) => n.className.split(" ").includes(cls)) };
}

test("the view: names as text, one line of controls per row, callbacks with the row's index", () => {
  const { doc, root, calls, by } = view([row(HOSTILE, 0.8, 0.5, "OUT=0"), row("gone.safetensors", 1, 1, "", false)]);
  assert.ok(doc.log.every(([, , text]) => typeof text === "string"));
  assert.ok(root.textContent.includes(HOSTILE) && root.textContent.includes(missingLabel("gone.safetensors")));
  const rows = by("loralab-lora-row");
  assert.deepEqual(rows.map((r) => r.getAttribute("data-kind")), ["on", "off"]);
  assert.deepEqual(by("loralab-row-lora").map((s) => s.value), [HOSTILE, "gone.safetensors"]);
  assert.deepEqual(by("loralab-row-number").map((b) => b.value), ["0.8", "0.5", "1", "1"]);
  assert.deepEqual(by("loralab-row-spec").map((b) => b.value), ["OUT=0", ""]);
  assert.deepEqual(by("loralab-row-up").map((b) => b.disabled), [true, false]);
  assert.deepEqual(by("loralab-row-down").map((b) => b.disabled), [false, true]);

  const toggle = by("loralab-row-on")[1];
  toggle.checked = true;
  toggle.dispatch("change");
  const [model] = by("loralab-row-number");
  model.value = "1,5";
  model.dispatch("change");
  model.value = "lots";
  model.dispatch("change");
  const spec = by("loralab-row-spec")[1];
  spec.value = "IN=0";
  spec.dispatch("input");
  const picker = by("loralab-row-lora")[1];
  picker.value = "a.safetensors";
  picker.dispatch("change");
  by("loralab-row-down")[0].dispatch("click");
  by("loralab-row-remove")[1].dispatch("click");
  by("loralab-row-add")[0].dispatch("click");
  assert.deepEqual(calls, [["update", 1, { on: true }], ["update", 0, { strength_model: 1.5 }],
    ["update", 1, { block_weights: "IN=0" }], ["update", 1, { lora: "a.safetensors" }, true], ["move", 0, 1],
    ["remove", 1], ["add"]]);
  assert.equal(model.value, "0.8");  // what was typed was no number: the box shows the row again
  model.value = " 1,25";
  model.dispatch("change");
  assert.equal(model.value, "1.25");  // a number shows as the row holds it
  assert.equal(by("loralab-row-summary")[0].textContent, "1 of 2 on");
});

test("the Report's rows have one weight, which sets both strengths", () => {
  const { calls, by } = view([row("a.safetensors", 0.8, 0.8, "")], { clip: false });
  assert.deepEqual(by("loralab-row-label").map((l) => l.textContent), ["weight"]);
  const [weight] = by("loralab-row-number");
  weight.value = "0.3";
  weight.dispatch("change");
  assert.deepEqual(calls, [["update", 0, { strength_model: 0.3, strength_clip: 0.3 }]]);
});

test("unreadable rows are shown as such, with a way to start over", () => {
  const { root, calls, by } = view([], { error: "the rows are not valid JSON (x)" });
  assert.ok(root.textContent.startsWith("the rows are not valid JSON (x): the node keeps the text as it is"));
  assert.equal(by("loralab-row-add").length, 0);
  by("loralab-row-clear")[0].dispatch("click");
  assert.deepEqual(calls, [["clear"]]);
});
