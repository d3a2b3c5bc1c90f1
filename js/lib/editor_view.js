// DOM of the block-weight editor: one vertical slider per absolute block, grouped by family,
// from the server's catalog. Built only through dom.el; the document and callbacks are passed
// in. The spec text stays the source of truth: this view shows values and reports slider moves.

import { el } from "./dom.js";
import { RANDOM_RANGES, formatValue, isRandom, resolveValue } from "./spec.js";

export const SLIDER_MIN = -0.5;
export const SLIDER_MAX = 1.5;
export const SLIDER_STEP = 0.01;
/** A slider let go this close to 0 or 1 lands on it. */
export const SNAP = 0.04;
/** The weight a double-click resets a slider to. */
export const RESET_VALUE = 1;

/** A slider position as a weight, on the slider's grid (no 0.30000000000000004), snapped to 0
 * and 1 within SNAP. */
export function sliderValue(raw) {
  const v = Number((Math.round(Number(raw) / SLIDER_STEP) * SLIDER_STEP).toFixed(2));
  for (const anchor of [0, 1]) if (Math.abs(v - anchor) <= SNAP + 1e-9) return anchor;
  return Object.is(v, -0) ? 0 : v;
}

/** A weight typed into a slider's value box ("0.3", ",5" as 0.5, "-1"), or null when it is not a
 * finite number. Not snapped: a typed value is meant exactly. */
export function typedValue(text) {
  const t = String(text ?? "").trim().replace(",", ".");
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t)) return null;
  const v = Number(t);
  return Number.isFinite(v) && Math.abs(v) <= 1e6 ? Number(v.toFixed(6)) + 0 : null;
}

/** Inspire's inverse: every numeric weight w becomes 1 - w; tokens (A, B, X, R, U) stay. */
export function invertValues(values) {
  return Object.fromEntries(Object.entries(values).map(([block, v]) =>
    [block, typeof v === "number" ? Number((1 - v).toFixed(6)) + 0 : v]));
}

/** Arch tags that prefix preset names (``SDXL-OUTALL``, ``FLUX-DOUBLE``, ``SD-LYC-ALL``). */
const PRESET_TAGS = { SD: ["sd1", "sd2"], SDXL: ["sdxl", "sdxl_refiner"], FLUX: ["flux"], FLUX2: ["flux2"], SD3: ["sd3"], WAN: ["wan"],
  ZIMAGE: ["z_image"], LTXV: ["ltxv"], LTX2: ["ltx2"] };

/** The presets of the catalog meant for ``arch``: unprefixed ones and those whose arch tag names
 * it; another arch's presets are left out even where their grammar happens to fit. */
export function presetsForArch(presets, arch) {
  return presets.filter((p) => {
    const tag = String(p.name).split("-")[0].toUpperCase();
    const archs = Object.hasOwn(PRESET_TAGS, tag) && String(p.name).includes("-") ? PRESET_TAGS[tag] : null;
    return archs === null || archs.some((a) => arch === a || String(arch).startsWith(a + "_"));
  });
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
      const box = el(doc, "input", {
        className: "loralab-cell-value",
        attrs: { type: "text", "data-value-of": block, "aria-label": `${block} weight` },
      });
      const cell = el(doc, "div", { className: "loralab-cell" }, [box, input, label]);
      input.addEventListener("input", () => onSlide(block, sliderValue(input.value)));
      input.addEventListener("dblclick", () => onSlide(block, RESET_VALUE));
      input.addEventListener("pointerenter", () => onHover(block));
      box.addEventListener("change", () => {
        const v = typedValue(box.value);
        if (v === null) box.value = box.getAttribute("data-shown") ?? "";
        else onSlide(block, v);
      });
      box.addEventListener("keydown", (e) => {
        e.stopPropagation();  // typing a value must not reach the canvas' shortcuts
        if (e.key === "Enter") box.blur?.();
      });
      cells.set(block, { input, label, cell, block, box });
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
    if (c.box) {
      const shown = typeof value === "number" ? formatValue(value) : String(value ?? "");
      c.box.value = shown;
      c.box.setAttribute("data-shown", shown);
    }
  }
}

/** Dim the blocks the LoRA does not touch (``touched``: block ids, from lora_info's
 * coverage.blocks); null: nothing known, nothing dimmed. */
export function markTouched(cells, touched) {
  const set = Array.isArray(touched) ? new Set(touched) : null;
  for (const [block, c] of cells) {
    if (set && !set.has(block)) c.cell.setAttribute("data-untouched", "true");
    else c.cell.removeAttribute("data-untouched");
  }
}
