// The block editor's slider behaviour: snap, typed values, reset, invert, dimming, presets per arch.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import {
  buildSliders, invertValues, markTouched, presetsForArch, showValues, sliderValue, typedValue,
} from "../../js/lib/editor_view.js";
import { parseSpec } from "../../js/lib/spec.js";
import { FakeDocument } from "./fake_dom.mjs";

const corpus = JSON.parse(readFileSync(new URL("./spec_corpus.json", import.meta.url), "utf8"));
const catalog = corpus.catalogs.sdxl;

test("a slider snaps to 0 and 1 within the tolerance, elsewhere stays on its grid", () => {
  assert.equal(sliderValue("0.97"), 1);
  assert.equal(sliderValue("1.04"), 1);
  assert.equal(sliderValue("-0.03"), 0);
  assert.equal(sliderValue("0.02"), 0);
  assert.equal(sliderValue("0.95"), 0.95);
  assert.equal(sliderValue("0.06"), 0.06);
  assert.equal(sliderValue("0.30000000000000004"), 0.3);
  assert.ok(!Object.is(sliderValue("-0.001"), -0));
});

test("typed values: decimals, a comma, signs; junk is refused", () => {
  assert.equal(typedValue(" 0.35 "), 0.35);
  assert.equal(typedValue(",5"), 0.5);
  assert.equal(typedValue("-1.25"), -1.25);
  assert.equal(typedValue("0.97"), 0.97);  // typed exactly: no snap
  for (const bad of ["", "abc", "1..2", "NaN", "Infinity", "0x10", "1e400", "<b>1</b>"]) assert.equal(typedValue(bad), null, bad);
});

test("invert is 1 - w for numbers and keeps tokens", () => {
  assert.deepEqual(invertValues({ BASE: 1, IN00: 0, IN01: 0.3, IN02: -0.5, M00: "A", OUT00: "R" }),
    { BASE: 0, IN00: 1, IN01: 0.7, IN02: 1.5, M00: "A", OUT00: "R" });
  const once = parseSpec("IN04-IN08=0.25, OUT=0", catalog).values;
  assert.deepEqual(invertValues(invertValues(once)), once);
});

test("value boxes show each value, take typed values; double-click resets to 1", () => {
  const doc = new FakeDocument();
  const moves = [];
  const { cells } = buildSliders(doc, catalog, (b, v) => moves.push([b, v]), () => {});
  showValues(cells, parseSpec("IN04-IN08=0.5, OUT=0, M00=A", catalog).values, { a: 0.2 });
  assert.equal(cells.get("IN05").box.value, "0.5");
  assert.equal(cells.get("OUT03").box.value, "0");
  assert.equal(cells.get("BASE").box.value, "1");
  assert.equal(cells.get("M00").box.value, "A");
  cells.get("IN05").input.dispatch("dblclick");
  cells.get("IN06").box.value = "0.33";
  cells.get("IN06").box.dispatch("change");
  cells.get("IN07").box.value = "oops";
  cells.get("IN07").box.dispatch("change");
  assert.deepEqual(moves, [["IN05", 1], ["IN06", 0.33]]);
  assert.equal(cells.get("IN07").box.value, "0.5");  // a refused value puts the shown one back
});

test("blocks the LoRA does not touch are dimmed; unknown coverage dims nothing", () => {
  const doc = new FakeDocument();
  const { cells } = buildSliders(doc, catalog, () => {}, () => {});
  markTouched(cells, ["IN04", "OUT01"]);
  const dimmed = [...cells].filter(([, c]) => c.cell.getAttribute("data-untouched") === "true").map(([b]) => b);
  assert.equal(dimmed.length, cells.size - 2);
  assert.ok(!dimmed.includes("IN04") && !dimmed.includes("OUT01") && dimmed.includes("BASE"));
  markTouched(cells, null);
  assert.ok([...cells.values()].every((c) => c.cell.getAttribute("data-untouched") === null));
});

test("presets are listed for their own arch only", () => {
  const names = (arch) => presetsForArch([
    "NONE", "ALL", "INALL", "SD-LYC-ALL", "SDXL-LYC-ALL", "SDXL-OUTALL", "FLUX-DOUBLE", "FLUX2-SINGLE", "ZIMAGE-LATE", "ALL0.5",
  ].map((name) => ({ name })), arch).map((p) => p.name);
  assert.deepEqual(names("sdxl"), ["NONE", "ALL", "INALL", "SDXL-LYC-ALL", "SDXL-OUTALL", "ALL0.5"]);
  assert.deepEqual(names("sd1"), ["NONE", "ALL", "INALL", "SD-LYC-ALL", "ALL0.5"]);
  assert.deepEqual(names("flux"), ["NONE", "ALL", "INALL", "FLUX-DOUBLE", "ALL0.5"]);
  assert.deepEqual(names("flux2_klein_4b"), ["NONE", "ALL", "INALL", "FLUX2-SINGLE", "ALL0.5"]);
  assert.deepEqual(names("z_image"), ["NONE", "ALL", "INALL", "ZIMAGE-LATE", "ALL0.5"]);
  assert.deepEqual(presetsForArch([{ name: "LTXV-LATE" }, { name: "LTX2-AUDIO-ONLY" }], "ltx2").map((p) => p.name),
    ["LTX2-AUDIO-ONLY"]);
});
