// Block-weight specs in the editor: the grammar of loralab/block_weights.py (THE parser; read
// its docstring), so that text typed into the spec widget moves the sliders, and the sliders
// write a spec the Python parser reads back to the same weights. The facts the grammar rests on
// (block ids, families, vector forms, presets resolved per block) come from the server's
// catalog (GET /loralab/blocks?arch=, loralab/block_catalog.py), never from tables here.
// tests/test_spec_corpus.py writes a corpus of specs with the Python results; tests/js checks
// that this module agrees with it, error messages included.
//
// A parsed spec is {kind, values}: ``values`` maps every standard block id and OTHER to a number
// or a token. Tokens X, A, B are parameters (resolveValue); R and U are random draws the server
// makes with the node's seed, so the editor shows their range, not a value.

export const OTHER = "OTHER";
export const RANDOM_RANGES = { R: [0, 1], U: [-0.5, 1.5] };
const TOKENS = ["R", "U", "X", "A", "B"];

const FLOAT = /^[+-]?(?:(?:\d(?:_?\d)*)?\.\d(?:_?\d)*|\d(?:_?\d)*\.?)(?:[eE][+-]?\d(?:_?\d)*)?$/;
const NON_FINITE = /^[+-]?(?:inf|infinity|nan)$/i;
// Python's whitespace (str.isspace, and \s in its regular expressions), which differs from JS's
const WS = "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const EDGE_WS = new RegExp(`^${WS}+|${WS}+$`, "g");
const ITEM = new RegExp(`^${WS}*([A-Za-z]+)(\\d+)?(?:${WS}*-${WS}*([A-Za-z]*)(\\d+))?${WS}*$`);
const NOT_PRINTABLE = /[\p{C}\p{Z}]/u;

/** A spec the grammar rejects; ``message`` is the Python parser's wording. */
export class SpecError extends Error {
  constructor(message) {
    super(message);
    this.name = "SpecError";
  }
}

/** Python's repr() of a string, as the Python parser quotes bad parts in its messages. */
export function pyRepr(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    if (ch === "\\") out += "\\\\";
    else if (ch === quote) out += "\\" + quote;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch !== " " && NOT_PRINTABLE.test(ch)) {
      const cp = ch.codePointAt(0);
      if (cp < 0x100) out += "\\x" + cp.toString(16).padStart(2, "0");
      else if (cp < 0x10000) out += "\\u" + cp.toString(16).padStart(4, "0");
      else out += "\\U" + cp.toString(16).padStart(8, "0");
    } else out += ch;
  }
  return out + quote;
}

/** Python's str.strip(). */
export function pyStrip(s) {
  return s.replace(EDGE_WS, "");
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

/** One value of a spec: a finite number, or a token (R, U, X, A, B). */
export function parseValue(text) {
  const t = pyStrip(text);
  const up = t.toUpperCase();
  if (TOKENS.includes(up)) return up;
  if (NON_FINITE.test(t)) throw new SpecError(`${pyRepr(t)} is not a finite number`);
  if (!FLOAT.test(t)) throw new SpecError(`${pyRepr(t)} is not a number or one of R, U, X, A, B`);
  const v = Number(t.replace(/_/g, ""));
  if (!Number.isFinite(v)) throw new SpecError(`${pyRepr(t)} is not a finite number`);
  return v;
}

/** Whether a value is a random token (R or U). */
export function isRandom(value) {
  return typeof value === "string" && value in RANDOM_RANGES;
}

/** The number a value stands for (X, A, B from ``params``; null for R and U). */
export function resolveValue(value, params = {}) {
  if (typeof value === "number") return value;
  if (value === "X") return params.x ?? 1;
  if (value === "A") return params.a ?? 1;
  if (value === "B") return params.b ?? 1;
  return null;
}

function allBlocks(catalog) {
  return [...catalog.blocks, OTHER];
}

function filled(catalog, value) {
  return Object.fromEntries(allBlocks(catalog).map((b) => [b, value]));
}

function familyMap(catalog) {
  return new Map(catalog.families.map((f) => [f.name, f.blocks]));
}

function expand(lhs, catalog, families) {
  const name = catalog.name;
  const whole = pyStrip(lhs).toUpperCase();
  if (families.has(whole)) return families.get(whole).map(([b]) => b);
  const m = ITEM.exec(lhs);
  if (!m) throw new SpecError(`${pyRepr(pyStrip(lhs))} is not a block, range or family name`);
  const fam = m[1].toUpperCase();
  const start = m[2];
  const fam2 = (m[3] ?? "").toUpperCase();
  const end = m[4];
  if (start === undefined && end === undefined) {
    if (families.has(fam)) return families.get(fam).map(([b]) => b);
    const known = [...families.keys()].sort().join(", ");
    throw new SpecError(`${name} has no block or family ${pyRepr(pyStrip(lhs))} (known: ${known})`);
  }
  const numbered = new Map((families.get(fam) ?? []).filter(([, n]) => n !== null).map(([b, n]) => [n, b]));
  if (numbered.size === 0) throw new SpecError(`${name} has no numbered blocks ${pyRepr(fam)}`);
  if (fam2 && fam2 !== fam) throw new SpecError(`a range stays within one family (${fam} vs ${fam2})`);
  const lo = start !== undefined ? parseInt(start, 10) : null;
  const hi = end !== undefined ? parseInt(end, 10) : lo;
  if (lo === null) throw new SpecError("a range needs a start");
  if (hi < lo) throw new SpecError(`range ${lo}..${hi} is empty`);
  const missing = [lo, hi].filter((i) => !numbered.has(i));
  if (missing.length) {
    const nums = [...numbered.keys()];
    throw new SpecError(`${fam}${pad2(missing[0])} does not exist in ${name} ` +
      `(${pad2(Math.min(...nums))}..${pad2(Math.max(...nums))})`);
  }
  const out = [];
  for (let i = lo; i <= hi; i++) if (numbered.has(i)) out.push(numbered.get(i));
  return out;
}

/** Parse a spec (empty, preset name, vector, single value or readable BLOCK=VALUE items) for
 * the catalog's arch. Returns {kind, values}; throws SpecError as the Python parser does. */
export function parseSpec(spec, catalog) {
  const text = pyStrip(spec ?? "");
  if (!text) return { kind: "empty", values: filled(catalog, 1) };
  const key = text.toUpperCase();
  const preset = catalog.presets.find((p) => p.name === key);
  if (preset) return { kind: "preset", values: Object.fromEntries(allBlocks(catalog).map((b) => [b, preset.weights[b]])) };
  if (catalog.unavailable_presets.includes(key)) {
    throw new SpecError(`preset ${pyRepr(text)} has no form for ${catalog.name}`);
  }
  if (!text.includes("=") && text.includes(",")) {
    const parts = text.split(",");
    const ids = catalog.vector_forms[String(parts.length)];
    if (!ids) {
      const want = Object.keys(catalog.vector_forms).map(Number).sort((a, b) => a - b).join(" or ") || "no";
      throw new SpecError(`${parts.length} values given; ${catalog.name} takes ${want}`);
    }
    const values = filled(catalog, 1);
    parts.forEach((v, i) => { values[ids[i]] = parseValue(v); });
    return { kind: "vector", values };
  }
  const families = familyMap(catalog);
  if (!text.includes("=") && !text.includes(",") && !families.has(key)) {
    let v;
    try {
      v = parseValue(text);
    } catch {
      throw new SpecError(`${pyRepr(text)} is not a preset, a number, a vector or BLOCK=VALUE items`);
    }
    return { kind: "value", values: filled(catalog, v) };
  }
  let fallback = 1;
  const set = new Map();
  for (const item of text.split(/[,;\n]/).filter((i) => pyStrip(i))) {
    const eq = item.indexOf("=");
    if (eq < 0) throw new SpecError(`${pyRepr(pyStrip(item))} has no '=' (write BLOCK=VALUE, e.g. OUT03=0.5)`);
    const lhs = item.slice(0, eq);
    const value = parseValue(item.slice(eq + 1));
    if (pyStrip(lhs).toLowerCase() === "default") {
      fallback = value;
      continue;
    }
    for (const block of expand(lhs, catalog, families)) set.set(block, value);
  }
  return { kind: "readable", values: Object.fromEntries(allBlocks(catalog).map((b) => [b, set.has(b) ? set.get(b) : fallback])) };
}

/** A value as spec text. */
export function formatValue(value) {
  if (typeof value !== "number") return String(value);
  return Object.is(value, -0) ? "0" : String(value);
}

function sameValue(a, b) {
  return formatValue(a) === formatValue(b);
}

function chooseDefault(values, order) {
  const counts = new Map();
  for (const b of order) {
    const v = values[b];
    if (isRandom(v)) continue;
    const k = formatValue(v);
    counts.set(k, { value: v, n: (counts.get(k)?.n ?? 0) + 1 });
  }
  let best = { value: 1, n: -1 };
  for (const [k, c] of counts) {
    if (c.n > best.n || (c.n === best.n && k === "1")) best = c;
  }
  return best.n < 0 ? 1 : best.value;
}

/** The canonical readable spec for a weight per block (every standard block and OTHER):
 * ``default=`` the most common value (left out when it is 1), whole families as ``OUT=0``, runs
 * as ``IN04-IN08=0.5``, random tokens block by block. Empty when every block is 1. */
export function serialiseSpec(values, catalog) {
  const order = allBlocks(catalog);
  const fallback = chooseDefault(values, order);
  const items = [];
  for (const fam of catalog.families) {
    const members = fam.blocks.map(([b]) => b);
    const first = values[members[0]];
    const uniform = members.every((b) => !isRandom(values[b]) && sameValue(values[b], first));
    if (uniform) {
      if (!sameValue(first, fallback)) items.push(`${members.length > 1 ? fam.name : members[0]}=${formatValue(first)}`);
      continue;
    }
    let i = 0;
    while (i < members.length) {
      const v = values[members[i]];
      if (isRandom(v)) {
        items.push(`${members[i]}=${v}`);
        i += 1;
        continue;
      }
      let j = i;
      while (j + 1 < members.length && !isRandom(values[members[j + 1]]) && sameValue(values[members[j + 1]], v)) j += 1;
      if (!sameValue(v, fallback)) {
        items.push(`${j > i ? `${members[i]}-${members[j]}` : members[i]}=${formatValue(v)}`);
      }
      i = j + 1;
    }
  }
  if (!sameValue(fallback, 1)) items.push(`default=${formatValue(fallback)}`);
  return items.join(", ");
}

/** Whether ``spec`` parses for the catalog's arch (an editor that does not yet know the LoRA's
 * arch shows the first arch the spec fits). */
export function specFits(spec, catalog) {
  try {
    parseSpec(spec, catalog);
    return true;
  } catch (e) {
    if (e instanceof SpecError) return false;
    throw e;
  }
}

/** The node input each token reads: A and B their own, R and U the seed of their draws. */
export const TOKEN_INPUTS = { A: "a", B: "b", R: "seed", U: "seed" };
const INPUT_ORDER = ["a", "b", "seed"];

/** The node inputs (``a``, ``b``, ``seed``, in that order) a spec reads besides its text: those of
 * the tokens among its values. Read from the text alone, so a vector still being typed counts
 * before it has all its values, and an invalid spec still shows what it names. */
export function specInputs(spec) {
  const found = new Set();
  for (const item of String(spec ?? "").split(/[,;\n]/)) {
    const input = TOKEN_INPUTS[pyStrip(item.slice(item.indexOf("=") + 1)).toUpperCase()];
    if (input) found.add(input);
  }
  return INPUT_ORDER.filter((name) => found.has(name));
}
