// LoRA Lab's widget styles, injected once (only .js files load from WEB_DIRECTORY).

const CSS = `
/* Nodes 2.0: LoRA Lab's text boxes keep TEXT_MIN_HEIGHT..TEXT_MAX_HEIGHT (js/node_layout.js) however tall the node */
[node-type^="LoRALab"] textarea { min-height: 40px; max-height: 80px; }
.loralab-widget { box-sizing: border-box; overflow: hidden; font: 11px/1.35 sans-serif; color: var(--input-text, #ddd); }
.loralab-widget * { box-sizing: border-box; }
.loralab-panel, .loralab-blocks, .loralab-loss { display: flex; flex-direction: column; gap: 4px; padding: 4px 6px;
  background: var(--comfy-input-bg, #222); border-radius: 6px; }
.loralab-entries { display: flex; flex-direction: column; gap: 4px; }
.loralab-library { display: flex; flex-direction: column; gap: 3px; padding-bottom: 4px; border-bottom: 1px solid var(--border-color, #444); }
.loralab-search { flex: 1; min-width: 0; font: inherit; color: inherit; background: var(--comfy-menu-bg, #333);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 1px 5px; }
.loralab-library[data-kind="idle"] .loralab-library-status { display: none; }
.loralab-results { display: flex; flex-direction: column; gap: 1px; max-height: 170px; overflow-y: auto; }
.loralab-result { display: flex; flex-direction: column; align-items: flex-start; text-align: left; font: inherit; color: inherit;
  background: transparent; border: 1px solid transparent; border-radius: 4px; padding: 1px 5px; cursor: pointer; }
.loralab-result:hover { border-color: #8af; }
.loralab-current { border-color: var(--border-color, #555); background: var(--comfy-menu-bg, #333); }
.loralab-result-name, .loralab-result-detail { max-width: 100%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  unicode-bidi: isolate; }
.loralab-result-detail { color: var(--descrip-text, #999); font-size: 10px; }
.loralab-flagged .loralab-result-name { color: #fb4; }
.loralab-info + .loralab-info { border-top: 1px solid var(--border-color, #444); padding-top: 4px; }
.loralab-head { display: flex; align-items: center; gap: 6px; min-width: 0; }
.loralab-compact { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.loralab-slot { color: var(--descrip-text, #999); }
.loralab-error .loralab-compact { color: #e88; white-space: normal; }
.loralab-loading .loralab-compact, .loralab-empty .loralab-compact, .loralab-muted { color: var(--descrip-text, #999); }
.loralab-badge { color: #fb4; white-space: nowrap; }
.loralab-doctor { overflow-wrap: anywhere; }
.loralab-doctor-ok, .loralab-doctor-unknown { color: var(--descrip-text, #999); }
.loralab-doctor-info { color: #8bd; }
.loralab-doctor-warn { color: #fb4; }
.loralab-doctor-error { color: #e88; }
.loralab-toggle, .loralab-more-toggle, .loralab-chip { font: inherit; color: inherit; background: var(--comfy-menu-bg, #333);
  border: 1px solid var(--border-color, #555); border-radius: 10px; padding: 0 7px; cursor: pointer; }
.loralab-toggle { flex: none; }
.loralab-chips { display: flex; flex-wrap: wrap; gap: 3px; }
.loralab-chip { max-width: 100%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; unicode-bidi: isolate; }
.loralab-chip:hover { border-color: #8af; }
.loralab-chip-hidden { border-style: dashed; border-color: #fb4; }
.loralab-copied { background: #2a5; border-color: #2a5; }
.loralab-copy-failed { background: #a33; border-color: #a33; }
.loralab-details { display: flex; flex-direction: column; gap: 1px; }
.loralab-row { display: flex; gap: 6px; }
.loralab-label { flex: none; width: 72px; color: var(--descrip-text, #999); }
.loralab-value { flex: 1; min-width: 0; overflow-wrap: anywhere; unicode-bidi: isolate; }
.loralab-warning { color: #fb4; overflow-wrap: anywhere; }
.loralab-warning-item { padding-left: 12px; color: var(--descrip-text, #aaa); }
.loralab-more { display: flex; flex-direction: column; gap: 3px; max-height: 240px; overflow: auto; overflow-wrap: anywhere; }
.loralab-section-title { color: var(--descrip-text, #999); }
.loralab-line { padding-left: 8px; unicode-bidi: isolate; }
.loralab-more-error { color: #e88; }
.loralab-report { margin: 0; padding: 6px; max-height: 400px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere;
  font: 10.5px/1.35 monospace; background: var(--comfy-input-bg, #222); border-radius: 6px;
  color: var(--input-text, #ddd); unicode-bidi: plaintext; }
.loralab-title { flex: 1; color: var(--descrip-text, #999); }
.loralab-select { font: inherit; color: inherit; background: var(--comfy-menu-bg, #333); border: 1px solid var(--border-color, #555);
  border-radius: 4px; max-width: 110px; }
.loralab-groups { display: flex; flex-wrap: wrap; gap: 2px 10px; }
.loralab-group { display: flex; flex-direction: column; min-width: 16px; }
.loralab-group-name { color: var(--descrip-text, #999); font-size: 10px; }
.loralab-sliders { display: flex; flex-wrap: wrap; gap: 0; }
.loralab-cell { display: flex; flex-direction: column; align-items: center; width: 22px; }
.loralab-cell-value { width: 21px; box-sizing: border-box; padding: 0; margin: 0 0 1px; border: 0; border-radius: 2px;
  font: 8px/11px monospace; text-align: center; color: inherit; background: var(--comfy-input-bg, #222); }
.loralab-cell[data-untouched="true"] { opacity: 0.35; }
.loralab-button { font: inherit; color: inherit; background: var(--comfy-menu-bg, #333); border: 1px solid var(--border-color, #555);
  border-radius: 4px; cursor: pointer; }
.loralab-button:disabled { opacity: 0.5; cursor: default; }
.loralab-slider { writing-mode: vertical-lr; direction: rtl; width: 14px; height: 52px; margin: 0; padding: 0; accent-color: #6a9ff5; }
.loralab-cell[data-kind="zero"] .loralab-slider { accent-color: #888; }
.loralab-cell[data-kind="token"] .loralab-slider { accent-color: #c8f; }
.loralab-cell[data-kind="off"] .loralab-slider { accent-color: #f84; }
.loralab-cell-label { font-size: 9px; color: var(--descrip-text, #999); height: 11px; }
.loralab-blocks[data-kind="invalid"] .loralab-groups { opacity: 0.45; }
.loralab-status { min-height: 14px; color: var(--descrip-text, #aaa); overflow-wrap: anywhere; }
.loralab-status[data-kind="error"] { color: #e88; }
.loralab-rows { display: flex; flex-direction: column; gap: 3px; padding: 3px 4px; background: var(--comfy-input-bg, #222);
  border-radius: 6px; }
.loralab-lora-row { display: flex; flex-direction: column; gap: 2px; padding-bottom: 3px;
  border-bottom: 1px solid var(--border-color, #444); }
.loralab-lora-row[data-kind="off"] > * > :not(.loralab-row-on):not(.loralab-row-remove) { opacity: 0.45; }
.loralab-row-line { display: flex; align-items: center; gap: 3px; min-width: 0; height: 20px; }
.loralab-row-line > * { height: 19px; }
.loralab-row-line .loralab-slot { flex: none; width: 12px; text-align: right; line-height: 19px; }
.loralab-row-on { flex: none; margin: 0; width: 14px; }
.loralab-row-lora { flex: 1; min-width: 0; max-width: none; }
.loralab-row-line .loralab-button { flex: none; min-width: 19px; padding: 0 3px; line-height: 17px; }
.loralab-row-label { flex: none; color: var(--descrip-text, #999); line-height: 19px; }
.loralab-row-number, .loralab-row-spec { font: inherit; color: inherit; background: var(--comfy-menu-bg, #333);
  border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 0 3px; min-width: 0; }
.loralab-row-number { flex: none; width: 40px; text-align: right; }
.loralab-row-spec { flex: 1; }
.loralab-row-add { padding: 0 8px !important; }
.loralab-row-summary { flex: 1; text-align: right; line-height: 19px; }
.loralab-chart { width: 100%; height: 150px; display: block; }
.loralab-loss[data-kind="empty"] .loralab-chart, .loralab-loss[data-kind="empty"] .loralab-legend { display: none; }
.loralab-legend { display: flex; gap: 12px; color: var(--descrip-text, #999); }
.loralab-legend-raw::before, .loralab-legend-smooth::before, .loralab-legend-val::before { content: "";
  display: inline-block; width: 14px; height: 2px; margin: 0 4px 3px 0; vertical-align: middle; }
.loralab-legend-raw::before { background: rgba(110,160,255,0.6); }
.loralab-legend-smooth::before { background: rgb(255,170,60); }
.loralab-legend-val::before { background: rgb(80,200,120); }
.loralab-legend:not([data-val="shown"]) .loralab-legend-val { display: none; }
`;

/** Add the stylesheet to the page (once). */
export function injectStyles() {
  if (document.getElementById("loralab-styles")) return;
  const style = document.createElement("style");
  style.id = "loralab-styles";
  style.textContent = CSS;
  document.head.appendChild(style);
}
