// The rows of the LoRA Stack and the Stack Report, as the ``loras`` input holds them: a JSON list of
// {on, lora, strength_model, strength_clip, block_weights}; and the conversion of the five fixed
// slots those nodes had before (their saved widget values) into rows.

export const FIELDS = ["on", "lora", "strength_model", "strength_clip", "block_weights"];
export const STRENGTH_LIMIT = 100;
/** What a slot of the five-slot nodes held when it was empty. */
const EMPTY_SLOT = new Set(["", "None"]);

/** The widget values the five-slot nodes saved: per slot, the row field each value fills, in order;
 * then how many values of the node's other widgets follow (a, b, seed; the Report's thresholds). */
export const LEGACY_LAYOUTS = {
  LoRALabStack: { slots: 5, fields: ["lora", "strength_model", "strength_clip", "block_weights"], rest: 3 },
  LoRALabStackReport: { slots: 5, fields: ["lora", "strength_model", "block_weights"], rest: 6 },
};

/** A row with every field, from a partial one (a new row: on, strengths 1, no block weights). */
export function makeRow(fields = {}) {
  return { on: true, lora: "", strength_model: 1, strength_clip: 1, block_weights: "", ...fields };
}

const isStrength = (v) => typeof v === "number" && Number.isFinite(v) && Math.abs(v) <= STRENGTH_LIMIT;

/** The rows of a ``loras`` value: {rows, error}; error (a sentence) where the text is not a list of
 * rows the server would take, and then no rows. Empty text is no row. */
export function parseRows(text) {
  const t = String(text ?? "");
  if (!t.trim()) return { rows: [], error: null };
  let data;
  try {
    data = JSON.parse(t);
  } catch (e) {
    return { rows: [], error: `the rows are not valid JSON (${String(e?.message ?? e).slice(0, 120)})` };
  }
  if (!Array.isArray(data)) return { rows: [], error: "the rows are not a JSON list" };
  const rows = [];
  for (const [i, item] of data.entries()) {
    const where = `row ${i + 1}`;
    if (item === null || typeof item !== "object" || Array.isArray(item)) return { rows: [], error: `${where} is not an object` };
    const unknown = Object.keys(item).filter((k) => !FIELDS.includes(k));
    if (unknown.length) return { rows: [], error: `${where} has fields LoRA Lab does not know: ${unknown.join(", ").slice(0, 120)}` };
    const row = makeRow(item);
    if (typeof row.on !== "boolean" || typeof row.lora !== "string" || typeof row.block_weights !== "string"
        || !isStrength(row.strength_model) || !isStrength(row.strength_clip)) {
      return { rows: [], error: `${where} has a field of the wrong kind` };
    }
    rows.push(row);
  }
  return { rows, error: null };
}

/** The ``loras`` value of rows: compact JSON, the fields in their order. */
export function serializeRows(rows) {
  return JSON.stringify(rows.map((r) => Object.fromEntries(FIELDS.map((f) => [f, makeRow(r)[f]]))));
}

/** ``rows`` with row ``i`` moved by ``delta`` places (unchanged at either end). */
export function moveRow(rows, i, delta) {
  const j = i + delta;
  if (i < 0 || i >= rows.length || j < 0 || j >= rows.length) return rows;
  const out = rows.slice();
  [out[i], out[j]] = [out[j], out[i]];
  return out;
}

/** ``rows`` without row ``i``. */
export function removeRow(rows, i) {
  return rows.filter((_, k) => k !== i);
}

/** ``rows`` with fields of row ``i`` replaced. */
export function updateRow(rows, i, fields) {
  return rows.map((r, k) => (k === i ? { ...r, ...fields } : r));
}

/** "2 of 3 on" (or "no LoRA yet"). */
export function summary(rows) {
  if (!rows.length) return "no LoRA yet";
  return `${rows.filter((r) => r.on).length} of ${rows.length} on`;
}

/** A strength typed into a row ("0.8", ",5", "-1"): the number, or null where it is not one
 * within ±STRENGTH_LIMIT. */
export function typedStrength(text) {
  const t = String(text ?? "").trim().replace(",", ".");
  if (!/^[+-]?(\d+\.?\d*|\.\d+)$/.test(t)) return null;
  const v = Number(t);
  return isStrength(v) ? v + 0 : null;
}

/** The five-slot node's saved widget values as rows: {rows, rest} (rest: the values of the node's
 * other widgets, in order), or null where ``values`` are not that layout. Empty slots ("None") are
 * left out; the Report's slots had one strength, which both strengths take. */
export function legacyRows(nodeType, values) {
  const layout = LEGACY_LAYOUTS[nodeType];
  if (!layout || !Array.isArray(values)) return null;
  const width = layout.fields.length;
  if (values.length !== layout.slots * width + layout.rest) return null;
  const rows = [];
  for (let s = 0; s < layout.slots; s++) {
    const slot = Object.fromEntries(layout.fields.map((f, k) => [f, values[s * width + k]]));
    if (typeof slot.lora !== "string" || typeof slot.block_weights !== "string" || !isStrength(slot.strength_model)
        || (slot.strength_clip !== undefined && !isStrength(slot.strength_clip))) return null;
    if (EMPTY_SLOT.has(slot.lora)) continue;
    rows.push(makeRow({ ...slot, strength_clip: slot.strength_clip ?? slot.strength_model }));
  }
  return { rows, rest: values.slice(layout.slots * width) };
}
