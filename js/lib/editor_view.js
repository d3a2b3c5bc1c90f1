// DOM of the block-weight editor: one vertical slider per absolute block, grouped by family,
// from the server's catalog. Built only through dom.el; the document and callbacks are passed
// in. The spec text stays the source of truth: this view shows values and reports slider moves.

import { el } from "./dom.js";
import { RANDOM_RANGES, formatValue, isRandom, resolveValue } from "./spec.js";

export const SLIDER_MIN = -0.5;
export const SLIDER_MAX = 1.5;
export const SLIDER_STEP = 0.05;

/** A slider position as a weight, on the slider's grid (no 0.30000000000000004). */
export function sliderValue(raw) {
  const v = Math.round(Number(raw) / SLIDER_STEP) * SLIDER_STEP;
  return Number(v.toFixed(2));
}

/** Replace a select's options with [{value, label}] and select ``selected``. */
export function setOptions(doc, select, options, selected) {
  select.replaceChildren(...options.map((o) => el(doc, "option", { text: o.label, attrs: { value: o.value } })));
  select.value = selected ?? (options[0]?.value ?? "");
}

/** The sliders of one catalog: {root, cells: Map(block -> {input, label, block})}.
 * ``onSlide(block, weight)`` fires while a slider moves; ``onHover(text)`` describes a block. */
export function buildSliders(doc, catalog, onSlide, onHover) {
  const cells = new Map();
  const groups = catalog.families.map((family) => {
    const row = el(doc, "div", { className: "loralab-sliders" }, family.blocks.map(([block, number]) => {
      const input = el(doc, "input", {
        className: "loralab-slider",
        attrs: { type: "range", min: SLIDER_MIN, max: SLIDER_MAX, step: SLIDER_STEP, "data-block": block, "aria-label": block },
      });
      const label = el(doc, "span", { className: "loralab-cell-label", text: number === null ? "" : String(number) });
      const cell = el(doc, "div", { className: "loralab-cell" }, [input, label]);
      input.addEventListener("input", () => onSlide(block, sliderValue(input.value)));
      input.addEventListener("pointerenter", () => onHover(block));
      cells.set(block, { input, label, cell, block });
      return cell;
    }));
    return el(doc, "div", { className: "loralab-group" }, [
      el(doc, "span", { className: "loralab-group-name", text: family.name === "OTHER" ? "other" : family.name }),
      row,
    ]);
  });
  return { root: el(doc, "div", { className: "loralab-groups" }, groups), cells };
}

/** What one block's value means, as a line of text. */
export function describeBlock(block, value, params) {
  if (isRandom(value)) {
    const [lo, hi] = RANDOM_RANGES[value];
    return `${block} = ${value}: random in [${lo}, ${hi}), drawn with the node's seed`;
  }
  const n = resolveValue(value, params);
  return typeof value === "number" ? `${block} = ${formatValue(value)}` : `${block} = ${value} (${formatValue(n)})`;
}

/** Move the sliders to ``values`` (block -> number or token). Token and off-scale blocks are
 * marked; their exact value stays in the spec text. */
export function showValues(cells, values, params) {
  for (const [block, c] of cells) {
    const value = values[block];
    const random = isRandom(value);
    const n = random ? (RANDOM_RANGES[value][0] + RANDOM_RANGES[value][1]) / 2 : resolveValue(value, params);
    c.input.value = String(Math.min(SLIDER_MAX, Math.max(SLIDER_MIN, n)));
    const off = !random && (n < SLIDER_MIN || n > SLIDER_MAX);
    const kind = random || typeof value === "string" ? "token" : off ? "off" : n === 1 ? "one" : n === 0 ? "zero" : "set";
    c.cell.setAttribute("data-kind", kind);
    c.cell.title = describeBlock(block, value, params);
  }
}
