// Turns the /loralab/lora_info JSON (loralab/inspect.py, Summary.to_dict, schema 1) into plain
// display strings. Every field may be missing or of the wrong type: a missing fact shows as
// absent, never as an exception. Output strings are plain text (invisible characters revealed,
// long strings cut) for textContent; nothing here is markup.

import { displayText, hasInvisible, str, truncate } from "./text.js";

const MAX_WORD = 80;
const MAX_LINE = 160;
const MAX_ITEMS = 3;

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function list(v) {
  return Array.isArray(v) ? v : [];
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** A number as people read it: integers plain, others to 4 significant digits. */
export function formatNumber(v) {
  if (!finite(v)) return "";
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

/** A byte count in B, KiB, MiB or GiB. */
export function formatBytes(n) {
  if (!finite(n) || n < 0) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function valueLabel(v, nullLabel) {
  if (v === null || v === undefined) return nullLabel;
  return finite(v) ? formatNumber(v) : displayText(v, 20);
}

/** A rank/alpha distribution ({summary, values: [{value, count}], varies, by_group}) as
 * {text, detail}: ``text`` is the value or "varies", ``detail`` the spread and per-group split. */
export function formatDistribution(dist, nullLabel = "none") {
  if (!isObject(dist)) return { text: "", detail: "" };
  const values = list(dist.values).filter(isObject);
  if (values.length === 0) return { text: "", detail: "" };
  const spread = values.map((v) => `${valueLabel(v.value, nullLabel)} ×${finite(v.count) ? v.count : "?"}`);
  const varies = dist.varies === true || values.length > 1;
  if (!varies) return { text: valueLabel(values[0].value, nullLabel), detail: "" };
  const groups = list(dist.by_group).filter(isObject)
    .map((g) => `${displayText(g.group, 40)}: ${displayText(g.summary, 60)}`);
  const shown = spread.slice(0, MAX_ITEMS).join(", ") + (spread.length > MAX_ITEMS ? ", …" : "");
  return { text: "varies", detail: truncate([shown, ...groups].join("; "), MAX_LINE * 2) };
}

function formatArch(arch) {
  if (!isObject(arch)) return { text: "unknown", note: "" };
  let text = displayText(arch.name || arch.id || "unknown", 40);
  if (arch.variant) text += ` (${displayText(arch.variant, 40)})`;
  const claim = arch.metadata_claim;
  const note = claim && claim !== arch.id ? `metadata says ${displayText(claim, 40)}` : "";
  return { text, note };
}

function formatAlgorithms(algorithms) {
  if (!isObject(algorithms)) return "";
  const entries = Object.entries(algorithms);
  if (entries.length === 1) return displayText(entries[0][0], 40);
  const shown = entries.slice(0, MAX_ITEMS).map(([name, n]) => `${displayText(name, 40)} ×${finite(n) ? n : "?"}`);
  return shown.join(", ") + (entries.length > MAX_ITEMS ? ", …" : "");
}

function countOf(done, max, unit) {
  if (!finite(done) && !finite(max)) return "";
  if (finite(done) && finite(max) && done !== max) return `${done} / ${max} ${unit}`;
  return `${finite(done) ? done : max} ${unit}`;
}

/** Trained steps, epochs and resolution from the ``training`` object, or "". */
export function formatTraining(training) {
  if (!isObject(training)) return "";
  const parts = [
    countOf(training.steps, training.max_steps, "steps"),
    countOf(training.epochs, training.max_epochs, "epochs"),
    training.resolution ? displayText(training.resolution, 40) : "",
  ];
  return parts.filter(Boolean).join(" · ");
}

function normWord(w) {
  return str(w).toLowerCase().split(/\s+/).filter(Boolean).join(" ");
}

/** Trigger words as chips: {word (exactly as in the file), label (display form), sources,
 * hidden (whether it holds invisible characters)}. Likely triggers only (``trigger_words``),
 * falling back to the likely entries of ``triggers``. */
export function formatTriggers(info) {
  const triggers = list(info?.triggers).filter(isObject);
  let words = list(info?.trigger_words).filter((w) => typeof w === "string" && w.length > 0);
  if (words.length === 0) {
    words = triggers.filter((t) => t.likely === true && typeof t.word === "string" && t.word).map((t) => t.word);
  }
  const seen = new Set();
  const chips = [];
  for (const word of words) {
    const key = normWord(word);
    if (seen.has(key)) continue;
    seen.add(key);
    const sources = triggers
      .filter((t) => normWord(t.word) === key && (t.kind !== "tag" || t.likely === true))
      .map((t) => displayText(t.source, MAX_LINE));
    chips.push({ word, label: displayText(word, MAX_WORD), sources, hidden: hasInvisible(word) });
  }
  return chips;
}

/** Warnings as {message, items (first few, display form), more (how many not listed)}. */
export function formatWarnings(warnings) {
  return list(warnings).filter(isObject).map((w) => {
    const items = list(w.items).map((i) => displayText(i, MAX_LINE));
    const count = finite(w.count) ? w.count : items.length;
    return {
      message: displayText(w.message || w.code || "warning", MAX_LINE * 2),
      items: items.slice(0, MAX_ITEMS),
      more: Math.max(0, count - Math.min(items.length, MAX_ITEMS)),
    };
  });
}

/** The whole panel's content: a compact line and labelled detail rows, all plain strings. */
export function infoView(info) {
  if (!isObject(info)) return { ok: false, error: "no information returned" };
  const arch = formatArch(info.arch);
  const rank = formatDistribution(info.rank);
  const alpha = formatDistribution(info.alpha, "none (= rank)");
  const algorithm = formatAlgorithms(info.algorithms);
  const size = formatBytes(info.file_size);
  const training = formatTraining(info.training);
  const trainer = isObject(info.training) && info.training.trainer ? displayText(info.training.trainer, 60) : "";
  const format = isObject(info.format) ? displayText(info.format.name || info.format.id || "", 60) : "";
  const compact = truncate([
    arch.text,
    algorithm,
    rank.text ? `rank ${rank.text}` : "",
    alpha.text && alpha.text !== "varies" ? `α ${alpha.text}` : "",
    size,
  ].filter(Boolean).join(" · "), MAX_LINE);
  const rows = [
    ["base model", arch.note ? `${arch.text} (${arch.note})` : arch.text],
    ["format", format],
    ["algorithm", algorithm],
    ["rank", [rank.text, rank.detail].filter(Boolean).join(": ")],
    ["alpha", [alpha.text, alpha.detail].filter(Boolean).join(": ")],
    ["file size", size],
    ["trained", training],
    ["trainer", trainer],
  ].filter(([, value]) => value).map(([label, value]) => ({ label, value }));
  return {
    ok: true,
    name: displayText(info.name, MAX_LINE),
    compact,
    rows,
    triggers: formatTriggers(info),
    warnings: formatWarnings(info.warnings),
  };
}

/** The single-line text of a failed request (the panel shows its start, the rest on hover). */
export function errorText(message) {
  return displayText(message || "request failed", 1000);
}
