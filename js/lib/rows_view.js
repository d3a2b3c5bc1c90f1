// DOM of the LoRA rows (LoRA Stack, Stack Report): per row an on/off switch, the LoRA picker, its
// strengths and block-weight spec, move and remove buttons; then "+ Add LoRA". Built only through
// dom.el (every name is text); the document and the callbacks are passed in, the rows are the
// caller's.

import { el } from "./dom.js";
import { summary, typedStrength } from "./rows.js";

/** The label of a picked name the LoRA list does not hold (a file gone, renamed or filtered out). */
export function missingLabel(name) {
  return `${name} (not in the loras list)`;
}

/** The picker's options: a prompt while nothing is picked, every name, and a picked name the list
 * does not hold (kept, so the row does not change silently). */
export function pickerOptions(names, picked) {
  const options = [];
  if (!picked) options.push({ value: "", label: "choose a LoRA…" });
  if (picked && !names.includes(picked)) options.push({ value: picked, label: missingLabel(picked) });
  return [...options, ...names.map((n) => ({ value: n, label: n }))];
}

function strengthBox(doc, label, title, value, onCommit) {
  const box = el(doc, "input", { className: "loralab-row-number", title, attrs: { type: "text", "aria-label": label } });
  box.value = String(value);
  box.addEventListener("change", () => {
    const v = typedStrength(box.value);
    box.value = String(v ?? value);
    if (v !== null) onCommit(v);
  });
  return [el(doc, "span", { className: "loralab-row-label", text: label }), box];
}

function button(doc, className, text, title, onClick, disabled = false) {
  const b = el(doc, "button", { className: `loralab-button ${className}`, text, title, attrs: { type: "button" } });
  b.disabled = disabled;
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    onClick();
  });
  return b;
}

/** One row's element. ``clip``: whether the row shows strength_clip (the Stack) or one strength. */
export function renderRow(doc, row, i, count, { names, clip }, on) {
  const toggle = el(doc, "input", { className: "loralab-row-on", title: "apply this LoRA (off: skipped, kept in the workflow)",
    attrs: { type: "checkbox", "aria-label": `row ${i + 1} on` } });
  toggle.checked = row.on;
  toggle.addEventListener("change", () => on.update(i, { on: toggle.checked }));

  const picker = el(doc, "select", { className: "loralab-select loralab-row-lora", title: "the LoRA file of this row",
    attrs: { "aria-label": `row ${i + 1} LoRA` } });
  picker.replaceChildren(...pickerOptions(names, row.lora).map((o) => el(doc, "option", { text: o.label, attrs: { value: o.value } })));
  picker.value = row.lora;
  picker.addEventListener("change", () => on.update(i, { lora: picker.value }, true));

  const spec = el(doc, "input", { className: "loralab-row-spec",
    title: "block weights: empty = all 1; a preset (SDXL-INALL...), an LBW vector or items such as OUT=0, IN04-IN08=0.5",
    attrs: { type: "text", placeholder: "block weights (empty: all 1)", "aria-label": `row ${i + 1} block weights` } });
  spec.value = row.block_weights;
  spec.addEventListener("input", () => on.update(i, { block_weights: spec.value }));

  const strengths = clip
    ? [...strengthBox(doc, "model", "strength_model: multiplies this LoRA's diffusion-model patches", row.strength_model,
      (v) => on.update(i, { strength_model: v })),
    ...strengthBox(doc, "clip", "strength_clip: multiplies this LoRA's text-encoder patches", row.strength_clip,
      (v) => on.update(i, { strength_clip: v }))]
    : strengthBox(doc, "weight", "this LoRA's weight (the Stack's strength_model)", row.strength_model,
      (v) => on.update(i, { strength_model: v, strength_clip: v }));

  return el(doc, "div", { className: "loralab-lora-row", attrs: { "data-row": i, "data-kind": row.on ? "on" : "off" } }, [
    el(doc, "div", { className: "loralab-row-line" }, [
      toggle,
      el(doc, "span", { className: "loralab-slot", text: `${i + 1}` }),
      picker,
      button(doc, "loralab-row-up", "↑", "move up", () => on.move(i, -1), i === 0),
      button(doc, "loralab-row-down", "↓", "move down", () => on.move(i, 1), i === count - 1),
      button(doc, "loralab-row-remove", "×", "remove this row", () => on.remove(i)),
    ]),
    el(doc, "div", { className: "loralab-row-line" }, [...strengths, spec]),
  ]);
}

/** The whole rows widget: the rows (or why they cannot be shown) and the "+ Add LoRA" line.
 * ``on``: {update(i, fields, rerender), move(i, delta), remove(i), add(), clear()}. */
export function renderRows(doc, { rows, error, names, clip }, on) {
  if (error) {
    return el(doc, "div", { className: "loralab-rows" }, [
      el(doc, "div", { className: "loralab-status", text: `${error}: the node keeps the text as it is`, attrs: { "data-kind": "error" } }),
      el(doc, "div", { className: "loralab-row-line" }, [
        button(doc, "loralab-row-clear", "start over", "replace the unreadable rows with none", () => on.clear()),
      ]),
    ]);
  }
  return el(doc, "div", { className: "loralab-rows" }, [
    ...rows.map((row, i) => renderRow(doc, row, i, rows.length, { names, clip }, on)),
    el(doc, "div", { className: "loralab-row-line" }, [
      button(doc, "loralab-row-add", "+ Add LoRA", "add a row (a LoRA applied after the ones above)", () => on.add()),
      el(doc, "span", { className: "loralab-muted loralab-row-summary", text: summary(rows) }),
    ]),
  ]);
}
