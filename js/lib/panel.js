// DOM for the metadata panel and the report view, built only through dom.el (textContent and
// inert attributes). The document and the click handlers are passed in; nothing here fetches.

import { el } from "./dom.js";
import { reveal, truncate } from "./text.js";

const MAX_REPORT = 20000;
const MAX_ERROR = 100;

function chip(doc, c, onCopy) {
  const title = [
    c.hidden ? "contains invisible characters (shown as ⟨U+…⟩); copies exactly as stored" : "",
    ...c.sources.map((s) => `from ${s}`),
    "click to copy; shift-click to add to the prompt this node feeds",
  ].filter(Boolean).join("\n");
  const node = el(doc, "button", {
    className: "loralab-chip" + (c.hidden ? " loralab-chip-hidden" : ""),
    text: c.label,
    title,
    attrs: { type: "button" },
  });
  node.addEventListener("click", (e) => {
    e.stopPropagation();
    onCopy(c.word, node, e);
  });
  return node;
}

function detailsFold(doc, fold, onToggle) {
  const open = fold?.open === true;
  const button = el(doc, "button", {
    className: "loralab-more-toggle",
    text: open ? "hide details" : "details",
    title: "metadata fields, caption tags per folder, modules per block (fetched when opened)",
    attrs: { type: "button", "aria-expanded": open ? "true" : "false" },
  });
  button.addEventListener("click", (e) => {
    e.stopPropagation();
    onToggle();
  });
  let body = null;
  if (open && fold.status === "ok") {
    body = el(doc, "div", { className: "loralab-more" }, fold.view.sections.map((s) => el(doc, "div", { className: "loralab-section" }, [
      el(doc, "div", { className: "loralab-section-title", text: s.title }),
      ...s.lines.map((line) => el(doc, "div", { className: "loralab-line", text: line })),
      s.more ? el(doc, "div", { className: "loralab-line loralab-muted", text: `… and ${s.more} more (Inspect LoRA lists everything)` }) : null,
    ])));
  } else if (open) {
    const text = fold.status === "error" ? `details unavailable: ${truncate(fold.error ?? "", MAX_ERROR)}` : "reading details…";
    body = el(doc, "div", { className: `loralab-more loralab-muted loralab-more-${fold.status === "error" ? "error" : "loading"}`, text });
  }
  return [el(doc, "div", { className: "loralab-row" }, [button]), body];
}

function details(doc, view, fold, onToggle) {
  const rows = view.rows.map((r) => el(doc, "div", { className: "loralab-row" }, [
    el(doc, "span", { className: "loralab-label", text: r.label }),
    el(doc, "span", { className: "loralab-value", text: r.value }),
  ]));
  const warnings = view.warnings.map((w) => el(doc, "div", { className: "loralab-warning" }, [
    el(doc, "div", { text: `⚠ ${w.message}` }),
    ...w.items.map((i) => el(doc, "div", { className: "loralab-warning-item", text: i })),
    w.more ? el(doc, "div", { className: "loralab-warning-item", text: `… and ${w.more} more` }) : null,
  ]));
  return el(doc, "div", { className: "loralab-details" }, [
    el(doc, "div", { className: "loralab-row" }, [
      el(doc, "span", { className: "loralab-label", text: "file" }),
      el(doc, "span", { className: "loralab-value", text: view.name }),
    ]),
    ...rows,
    ...warnings,
    ...detailsFold(doc, fold, onToggle),
  ]);
}

const DOCTOR_LEVELS = new Set(["ok", "info", "warn", "error", "unknown"]);

/** The coverage doctor's line (doctor.doctorView: {level, text, title}), or null. */
function doctorLine(doc, doctor) {
  if (!doctor || !DOCTOR_LEVELS.has(doctor.level)) return null;
  return el(doc, "div", { className: `loralab-doctor loralab-doctor-${doctor.level}`, text: doctor.text, title: doctor.title });
}

/** The slot a LoRA picker widget fills: ``suffix`` pairs it with the ``block_weights<suffix>`` spec
 * it goes with (``lora_name_2`` -> ``_2``; a Wan 2.2 pair's ``lora_high`` -> ``""``, the spec both
 * sides share, and ``lora_low`` -> ``_low``, which no spec has), and ``label`` names it on nodes
 * with more than one picker. Null for widgets that are no picker. */
export function pickerSlot(name) {
  if (typeof name !== "string") return null;
  const numbered = /^lora_name(_\d+)?$/.exec(name);
  if (numbered) return { suffix: numbered[1] ?? "", label: numbered[1] ? `#${numbered[1].slice(1)}` : null };
  if (name === "lora_high") return { suffix: "", label: "high noise" };
  if (name === "lora_low") return { suffix: "_low", label: "low noise" };
  return null;
}

/** One LoRA's entry: ``state`` = {label, status: "empty" | "loading" | "error" | "missing" | "ok", view
 * (format.infoView), error (text), expanded, doctor (doctor.doctorView, or null), details: {open, status:
 * "loading" | "ok" | "error", view (format.detailsView), error}}; ``actions`` = {toggle(), details(),
 * copy(word, chipNode, event)}. */
export function renderInfo(doc, state, actions) {
  const label = state.label ? el(doc, "span", { className: "loralab-slot", text: state.label }) : null;
  const doctor = state.status === "empty" ? null : doctorLine(doc, state.doctor);
  if (state.status !== "ok") {
    const text = {
      empty: "no LoRA selected",
      loading: "reading header…",
      error: `info unavailable: ${truncate(state.error ?? "", MAX_ERROR)}`,
      missing: "missing: no longer in the loras folder",
    }[state.status] ?? "";
    const title = state.status === "error" || state.status === "missing" ? state.error : null;
    return el(doc, "div", { className: `loralab-info loralab-${state.status}` }, [
      el(doc, "div", { className: "loralab-head" }, [label, el(doc, "span", { className: "loralab-compact", text, title })]),
      doctor,
    ]);
  }
  const view = state.view;
  const toggle = el(doc, "button", {
    className: "loralab-toggle",
    text: state.expanded ? "less" : "more",
    attrs: { type: "button", "aria-expanded": state.expanded ? "true" : "false" },
  });
  toggle.addEventListener("click", (e) => {
    e.stopPropagation();
    actions.toggle();
  });
  const warn = view.warnings.length
    ? el(doc, "span", { className: "loralab-badge", text: `⚠ ${view.warnings.length}`, title: view.warnings.map((w) => w.message).join("\n") })
    : null;
  const chips = view.triggers.length
    ? el(doc, "div", { className: "loralab-chips" }, view.triggers.map((c) => chip(doc, c, actions.copy)))
    : el(doc, "div", { className: "loralab-chips loralab-muted", text: "no trigger words found" });
  return el(doc, "div", { className: "loralab-info loralab-ok" }, [
    el(doc, "div", { className: "loralab-head" }, [
      label,
      el(doc, "span", { className: "loralab-compact", text: view.compact, title: view.name }),
      warn,
      toggle,
    ]),
    doctor,
    chips,
    state.expanded ? details(doc, view, state.details, () => actions.details?.()) : null,
  ]);
}

/** The text report an Inspect node returned, as preformatted plain text. */
export function renderReport(doc, text) {
  return el(doc, "pre", { className: "loralab-report", text: truncate(reveal(text, { multiline: true }), MAX_REPORT) });
}
