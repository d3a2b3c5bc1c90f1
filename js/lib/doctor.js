// The coverage doctor's verdict (GET /loralab/coverage, loralab/ops/coverage.py Coverage.to_dict)
// as the one line the panel shows under a LoRA, before anything runs: how much lands on the
// connected model, the likely cause in plain words and its fix. Every field may be missing or of
// the wrong type; the strings are plain text for textContent.

import { displayText } from "./text.js";

const LEVELS = new Set(["ok", "info", "warn", "error", "unknown"]);
const MAX_LINE = 400;
const MAX_GROUPS = 6;

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function count(v) {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : null;
}

/** {level, text, title} for the panel line, or null where there is nothing to show. */
export function doctorView(data) {
  if (!isObject(data) || !LEVELS.has(data.level)) return null;
  const level = data.level;
  const model = displayText(isObject(data.model) ? data.model.name : "", 60);
  const headline = displayText(data.headline, MAX_LINE);
  if (level === "unknown") {
    const text = "model not recognized from its file's header: the report after a run says what lands";
    return { level, text, title: headline };
  }
  const landed = count(data.landed);
  const total = count(data.total);
  const cause = isObject(data.cause) ? data.cause : null;
  const groups = (Array.isArray(data.groups) ? data.groups : []).filter(isObject).slice(0, MAX_GROUPS)
    .map((g) => `${count(g.count) ?? "?"} × ${displayText(g.reason, 120)}`);
  const title = [headline, ...groups].filter(Boolean).join("\n");
  if (level === "ok" || !cause) {
    const modules = landed !== null && total !== null ? `: ${landed} of ${total} modules land` : "";
    return { level: "ok", text: `✓ fits the ${model || "connected"} model${modules}`, title };
  }
  const causeText = displayText(cause.text, 200);
  const fix = displayText(cause.fix, 200);
  if (level === "info") {  // nothing to fix here: what to do elsewhere is in the title
    const withFix = [`fix: ${fix}`, title].filter(Boolean).join("\n");
    return { level, text: displayText(`ℹ ${causeText}`, MAX_LINE), title: withFix };
  }
  const share = typeof data.percent === "string" ? displayText(data.percent, 5) : "";
  const lands = share && total !== null ? ` (${share} of ${total} modules land)` : "";
  return { level, text: displayText(`⚠ ${causeText}${lands} · fix: ${fix}`, MAX_LINE), title };
}

/** The query of GET /loralab/coverage for a LoRA name, a model source ({name, kind}) and whether a
 * CLIP is connected; null where one of them is missing. */
export function coverageQuery(lora, source, clip) {
  if (typeof lora !== "string" || !lora || lora === "None" || !isObject(source)) return null;
  if (typeof source.name !== "string" || !source.name || typeof source.kind !== "string") return null;
  const q = new URLSearchParams({ lora, model: source.name, kind: source.kind, clip: clip ? "1" : "0" });
  return q.toString();
}
