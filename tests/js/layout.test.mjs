// js/lib/layout.js: workflow values stay where every frontend reads them, whatever LoRA Lab widgets
// (which store no value) sit among a node's inputs.
import assert from "node:assert/strict";
import test from "node:test";

import { compactValues } from "../../js/lib/layout.js";

/** widgets_values as frontends up to 1.49 write them: the value of widgets[i] at index i. */
function writtenByIndex(widgets) {
  const out = [];
  widgets.forEach((w, i) => {
    if (w.stores) out[i] = w.value;
  });
  return out;
}

test("holes left at widgets that store nothing are closed, in widget order", () => {
  const widgets = [{ stores: false }, { stores: true, value: "lora" }, { stores: true, value: 16 }, { stores: false },
    { stores: true, value: null }, { stores: false }];
  const values = writtenByIndex(widgets);
  assert.equal(values.length, 5);
  assert.deepEqual(compactValues(values, widgets.map((w) => w.stores)), ["lora", 16, null]);
  // as JSON: no null in place of the chart or the toggle
  assert.equal(JSON.stringify(compactValues(values, widgets.map((w) => w.stores))), '["lora",16,null]');
});

test("packed values (newer frontends, or nothing placed among the inputs) are left as they are", () => {
  const packed = ["lora", 16, null];
  assert.equal(compactValues(packed, [false, true, true, false, true]), packed);
  const trailing = writtenByIndex([{ stores: true, value: 1 }, { stores: true, value: 2 }, { stores: false }]);
  assert.equal(compactValues(trailing, [true, true, false]), trailing);
  assert.equal(compactValues(undefined, [true]), undefined);
});

test("a value that is undefined is a value, not a hole", () => {
  const values = [undefined, "x"];
  assert.equal(compactValues(values, [true, true]), values);
});
