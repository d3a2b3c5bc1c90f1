// Turns the /loralab/lora_info JSON (loralab/ops/inspect.py, schema 1: Summary.panel_dict, and
// with details=1 Summary.to_dict) into plain display strings. Every field may be missing or of the
// wrong type: a missing fact shows as absent, never as an exception. Output strings are plain text
// (invisible characters revealed, long strings cut) for textContent; nothing here is markup.

import { displayText, hasInvisible, str, truncate } from "./text.js";

const MAX_WORD = 80;
const MAX_LINE = 160;
const MAX_ITEMS = 3;
const MAX_TAG = 40;
/** What the details fold lists at most: metadata fields, tags per folder, folders, unmapped modules. */
export const DETAILS_LIMITS = { fields: 200, tags: 40, folders: 10, modules: 10, value: 200 };

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
  // the name of a release usually holds its label already ("Flux.1 Kontext", variant "Kontext")
  if (arch.variant && !text.includes(displayText(arch.variant, 40))) text += ` (${displayText(arch.variant, 40)})`;
  const claim = arch.metadata_claim;
  const also = list(arch.also_fits).filter(isObject).map((a) => displayText(a.name || a.id, 40)).filter(Boolean);
  const note = [
    also.length ? `keys also fit ${also.slice(0, MAX_ITEMS).join(", ")}${also.length > MAX_ITEMS ? ", …" : ""}` : "",
    claim && claim !== arch.id ? `metadata says ${displayText(claim, 40)}` : "",
  ].filter(Boolean).join("; ");
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

/** A learning rate as people write it: 1e-4, 5e-5, 0.05, to 4 significant digits. */
export function formatRate(v) {
  if (!finite(v)) return "";
  const n = Number(v.toPrecision(4));
  return n !== 0 && Math.abs(n) < 0.01 ? n.toExponential() : String(n);
}

/** The learning rate, with the U-Net's and the text encoder's where they differ from it:
 * "1e-4 (text encoder 5e-5)". */
export function formatLearningRate(training) {
  if (!isObject(training)) return "";
  const lr = finite(training.learning_rate) ? training.learning_rate : null;
  const parts = [["unet", training.unet_lr], ["text encoder", training.text_encoder_lr]]
    .filter(([, v]) => finite(v) && v !== lr).map(([label, v]) => `${label} ${formatRate(v)}`);
  if (lr === null) return parts.join(", ");
  return formatRate(lr) + (parts.length ? ` (${parts.join(", ")})` : "");
}

/** The optimizer with its arguments and the schedule: "AdamW8bit (weight_decay=0.1) · cosine". */
export function formatOptimizer(training) {
  if (!isObject(training) || !training.optimizer) return "";
  const name = displayText(String(training.optimizer).split(".").pop(), 60);
  const args = training.optimizer_args ? ` (${displayText(training.optimizer_args, 80)})` : "";
  const schedule = training.lr_scheduler ? ` · ${displayText(training.lr_scheduler, 40)}` : "";
  return name + args + schedule;
}

/** The training network: "networks.lora", "lycoris.kohya (loha)", "peft (dora)". */
export function formatNetwork(training) {
  if (!isObject(training) || !training.network_module) return "";
  const algo = training.network_algo ? ` (${displayText(training.network_algo, 40)})` : "";
  return displayText(training.network_module, 60) + algo;
}

/** The checkpoint it was trained on: a local path shortened to its file name (a Hugging Face
 * repo id stays whole), with the base model version: "sd_xl_base_1.0.safetensors (sdxl_base_v1-0)". */
export function formatBaseCheckpoint(training) {
  if (!isObject(training)) return "";
  const raw = str(training.base_model);
  const local = /\\/.test(raw) || raw.startsWith("/") || /^[A-Za-z]:/.test(raw);
  const name = displayText(local ? raw.split(/[\\/]/).filter(Boolean).pop() ?? raw : raw, 80);
  const version = training.base_model_version ? displayText(training.base_model_version, 60) : "";
  if (!name) return version;
  return version && version !== name ? `${name} (${version})` : name;
}

/** Training images: distinct images, then per epoch with repeats where that differs, then
 * regularisation images: "25 (250 per epoch with repeats)". */
export function formatImages(training) {
  if (!isObject(training)) return "";
  const images = finite(training.images) ? training.images : null;
  const perEpoch = finite(training.train_images) ? training.train_images : null;
  let text = images !== null ? String(images) : "";
  if (perEpoch !== null && perEpoch !== images) text += text ? ` (${perEpoch} per epoch with repeats)` : `${perEpoch} per epoch`;
  if (text && finite(training.reg_images) && training.reg_images > 0) text += ` + ${training.reg_images} regularisation`;
  return text;
}

/** The most frequent caption tags with their counts, or why ss_tag_frequency could not be read:
 * "ohwx woman (25), 1girl (23), …; 2 entries unreadable". */
export function formatTopTags(tags) {
  if (!isObject(tags)) return "";
  const top = list(tags.top).filter(isObject)
    .map((t) => `${displayText(t.tag, MAX_TAG)} (${finite(t.count) ? t.count : "?"})`);
  const more = finite(tags.distinct) && tags.distinct > top.length ? ", …" : "";
  const notes = [];
  if (tags.problem) notes.push(`unreadable: ${displayText(tags.problem, MAX_LINE)}`);
  if (finite(tags.skipped) && tags.skipped > 0) notes.push(`${tags.skipped} ${tags.skipped === 1 ? "entry" : "entries"} unreadable`);
  return truncate([top.join(", ") + (top.length ? more : ""), ...notes].filter(Boolean).join("; "), MAX_LINE * 3);
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
  const t = info.training;
  const trainer = isObject(t) && t.trainer ? displayText(t.trainer, 60) : "";
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
    ["trained on", formatBaseCheckpoint(t)],
    ["images", formatImages(t)],
    ["learning rate", formatLearningRate(t)],
    ["optimizer", formatOptimizer(t)],
    ["network", formatNetwork(t)],
    ["trainer", trainer],
    ["top tags", formatTopTags(info.tags)],
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

function fieldValue(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value) ?? "";
  } catch {
    return "";
  }
}

/** The details fold's content from the whole summary (``details=1``): sections {title, lines,
 * more (how many lines were left out)}: the caption tags per training folder, the modules per block
 * and those that map nowhere, and every metadata field (undecodable ones flagged), each cut to
 * DETAILS_LIMITS. */
export function detailsView(full) {
  if (!isObject(full)) return { ok: false, error: "no details returned" };
  const L = DETAILS_LIMITS;
  const sections = [];
  const folders = list(full.tag_frequency).filter(isObject);
  if (folders.length) {
    const lines = folders.slice(0, L.folders).map((f) => {
      const tags = list(f.tags).filter(isObject);
      const head = displayText(f.folder, 60) + (finite(f.images) ? ` (${f.images} images)` : "");
      const shown = tags.slice(0, L.tags).map((t) => `${displayText(t.tag, MAX_TAG)} ${finite(t.count) ? t.count : "?"}`);
      const rest = tags.length > L.tags ? `, … and ${tags.length - L.tags} more` : "";
      return truncate(`${head}: ${shown.join(", ")}${rest}`, MAX_LINE * 4);
    });
    sections.push({ title: "caption tags per folder", lines, more: Math.max(0, folders.length - L.folders) });
  }
  const modules = list(full.modules).filter(isObject);
  if (modules.length) {
    const perBlock = new Map();
    for (const m of modules) {
      const key = typeof m.block === "string" && m.block ? m.block : m.target ? "other" : "maps nowhere";
      perBlock.set(key, (perBlock.get(key) ?? 0) + 1);
    }
    const order = list(full.coverage?.blocks);
    const rank = (b) => (order.includes(b) ? order.indexOf(b) : order.length);
    const blocks = [...perBlock].sort(([a], [b]) => rank(a) - rank(b))
      .map(([b, n]) => `${displayText(b, 20)} ${n}`).join(", ");
    const unmapped = list(full.unmapped).filter(isObject);
    const lines = [truncate(`${modules.length} modules per block: ${blocks}`, MAX_LINE * 4),
      ...unmapped.slice(0, L.modules).map((u) => `${displayText(u.module, 80)}: ${displayText(u.reason, MAX_LINE)}`)];
    sections.push({ title: "modules", lines, more: Math.max(0, unmapped.length - L.modules) });
  }
  const md = isObject(full.metadata) ? full.metadata : {};
  const fields = [];
  for (const [group, prefix] of [["kohya", ""], ["modelspec", "modelspec."], ["aitoolkit", ""], ["diffusers", "lora_adapter_metadata."], ["other", ""]]) {
    if (isObject(md[group])) for (const [k, v] of Object.entries(md[group])) fields.push([prefix + k, v]);
  }
  const errors = isObject(md.errors) ? md.errors : {};
  if (fields.length) {
    const lines = fields.slice(0, L.fields).map(([k, v]) =>
      `${displayText(k, 60)}: ${displayText(fieldValue(v), L.value)}${errors[k] ? ` ⚠ ${displayText(errors[k], 100)}` : ""}`);
    sections.push({ title: "metadata", lines, more: Math.max(0, fields.length - L.fields) });
  }
  return { ok: true, sections };
}

/** The single-line text of a failed request (the panel shows its start, the rest on hover). */
export function errorText(message) {
  return displayText(message || "request failed", 1000);
}
