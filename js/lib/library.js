// The LoRA picker's filter, without the page: the /loralab/library request for a filter, the
// result rows and status line a listing shows, and the model architecture of the graph (the
// nearest node up the MODEL links that reported one after it ran). Every field of a listing may
// be missing or of the wrong type; output strings are plain text for textContent.

import { formatBytes } from "./format.js";
import { displayText, str } from "./text.js";

const MAX_ROWS = 40;
const MAX_NAME = 100;
const MAX_WORDS = 6;
/** How far up the MODEL links the walk goes (a graph is rarely deeper; a cycle ends it anyway). */
const MAX_DEPTH = 64;

function list(v) {
  return Array.isArray(v) ? v : [];
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function count(v) {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0;
}

/** The route of a filter: ``arch`` ("" for any model), search ``query`` and a rescan request; it
 * asks for the rows a view shows, no more. */
export function libraryRoute({ arch = "", query = "", rescan = false } = {}) {
  const params = [];
  if (arch) params.push(`arch=${encodeURIComponent(arch)}`);
  if (str(query).trim()) params.push(`q=${encodeURIComponent(str(query).trim())}`);
  params.push(`limit=${MAX_ROWS}`);
  if (rescan) params.push("rescan=1");
  return "/loralab/library" + (params.length ? `?${params.join("&")}` : "");
}

/** Whether a filter asks for anything (an empty one shows no results). */
export function filterActive({ arch = "", query = "" } = {}) {
  return Boolean(arch) || str(query).trim() !== "";
}

function wordsOf(entry) {
  const imported = isObject(entry.imported) ? entry.imported : {};
  const words = [...list(entry.triggers), ...list(imported.triggers)].map((w) => str(w)).filter(Boolean);
  return [...new Set(words)];
}

/** One result: {name (the picker value, exact), label, detail, title, flagged, current}. */
export function resultRow(entry, current = null) {
  const name = str(entry.name);
  const imported = isObject(entry.imported) ? entry.imported : {};
  const flags = list(entry.flags).filter(isObject);
  const words = wordsOf(entry);
  const facts = [displayText(entry.arch_name || "unknown base model", 40)];
  if (entry.rank) facts.push(`rank ${displayText(entry.rank, 30)}`);
  if (words.length) facts.push(words.slice(0, MAX_WORDS).map((w) => displayText(w, 40)).join(", ") + (words.length > MAX_WORDS ? ", …" : ""));
  const title = [
    displayText(name, 300),
    entry.error ? `unreadable: ${displayText(entry.error, 200)}` : displayText(entry.verdict, 300),
    imported.name ? `${displayText(imported.source, 40)}: ${displayText(imported.name, 120)}` : "",
    words.length ? `trigger words: ${words.map((w) => displayText(w, 80)).join(", ")}` : "",
    ...flags.map((f) => `⚠ ${displayText(f.message, 240)}`),
    list(entry.duplicates).length ? `same data as: ${list(entry.duplicates).map((d) => displayText(d, 120)).join(", ")}` : "",
  ].filter(Boolean).join("\n");
  return {
    name,
    label: displayText(name, MAX_NAME),
    detail: facts.join(" · "),
    title,
    flagged: flags.length > 0,
    current: name === current,
  };
}

/** What the worker is doing, in a few words ("" when it is idle and every LoRA is indexed). */
export function statusText(body) {
  const status = isObject(body?.status) ? body.status : {};
  const missing = count(body?.offered) - count(body?.known);
  if (status.state === "error") return `library: ${displayText(status.error, 160)}`;
  if (status.state === "scanning") return "reading the headers of new LoRAs…";
  const h = isObject(status.hashing) ? status.hashing : null;
  if (status.state === "hashing" && h && count(h.files_done) < count(h.files_total)) {
    return `hashing ${count(h.files_done)} of ${count(h.files_total)} files (${formatBytes(count(h.bytes_done))} of ${formatBytes(count(h.bytes_total))})`;
  }
  return missing > 0 ? `${missing} LoRA(s) not indexed yet` : "";
}

/** The filter's view of a listing: {rows, summary, status, busy (a pass runs or is asked for: ask again soon)};
 * ``current`` is the picked name. */
export function resultView(body, current = null) {
  const entries = list(body?.entries).filter((e) => isObject(e) && typeof e.name === "string");
  const rows = entries.slice(0, MAX_ROWS).map((e) => resultRow(e, current));
  const matched = Math.max(count(body?.matched), entries.length);
  const summary = matched === 0 ? "no LoRA matches"
    : `${matched} of ${count(body?.offered)} LoRAs${matched > rows.length ? ` (first ${rows.length} shown)` : ""}`;
  const state = body?.status?.state;
  const busy = state === "scanning" || state === "hashing" || body?.status?.queued === true;
  return { rows, summary, status: statusText(body), busy };
}

/** The base model of the graph at ``node``: the arch its own last run reported, else that of the
 * nearest node up the MODEL links that reported one (``upstreamOf(n)``: the node feeding n's
 * model input, or null); null where none did. */
export function graphArch(node, upstreamOf) {
  const seen = new Set();
  let n = node;
  for (let depth = 0; n && !seen.has(n) && depth < MAX_DEPTH; depth += 1) {
    seen.add(n);
    const arch = n.loralab?.modelArch;
    if (typeof arch === "string" && arch) return arch;
    n = upstreamOf(n);
  }
  return null;
}

/** The arch a run reported in its ``executed`` output (``loralab_model_arch``), or null. */
export function reportedArch(output) {
  const v = output?.loralab_model_arch;
  const arch = Array.isArray(v) ? v[0] : v;
  return typeof arch === "string" && /^[a-z0-9_]{1,40}$/.test(arch) ? arch : null;
}

/** The options of the base-model select: any, then each arch, the graph's one marked. */
export function archOptions(archs, graph = null) {
  const known = list(archs).filter((a) => isObject(a) && typeof a.id === "string");
  return [
    { value: "", label: "any base model" },
    ...known.map((a) => ({ value: a.id, label: displayText(a.name || a.id, 40) + (a.id === graph ? " (this graph)" : "") })),
  ];
}
