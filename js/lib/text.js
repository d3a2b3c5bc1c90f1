// Text helpers for strings that come from LoRA files or the server. Nothing here builds HTML:
// the widgets put these strings into the page with textContent only. What this module adds is
// honesty about what the string holds: invisible characters (bidi overrides, zero-width
// characters, controls) are shown as visible escapes, and very long strings are cut.

/** Characters that render as nothing or reorder text: controls, format characters (zero-width,
 * bidi embeddings/overrides/isolates, BOM, soft hyphen), line/paragraph separators, and lone
 * surrogates. */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;
const INVISIBLE_TEST = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;
const KEEP_LAYOUT = new Set(["\n", "\t"]);

/** Any value as a string (null and undefined as ""). */
export function str(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : String(value);
}

function codePoint(ch) {
  return "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
}

/** Whether a string holds characters that would be invisible or reorder its text. */
export function hasInvisible(value) {
  return INVISIBLE_TEST.test(str(value));
}

/** The string with every invisible character written as a visible ⟨U+XXXX⟩ escape
 * (newlines and tabs kept when ``multiline``). */
export function reveal(value, { multiline = false } = {}) {
  return str(value).replace(INVISIBLE, (ch) => (multiline && KEEP_LAYOUT.has(ch) ? ch : `⟨${codePoint(ch)}⟩`));
}

/** At most ``max`` characters (code points), with "…" where it was cut. */
export function truncate(value, max) {
  const chars = Array.from(str(value));
  return chars.length <= max ? chars.join("") : chars.slice(0, Math.max(0, max - 1)).join("") + "…";
}

/** A single-line display form: invisible characters revealed, then cut to ``max``. */
export function displayText(value, max = 120) {
  return truncate(reveal(value), max);
}
