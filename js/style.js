// LoRA Lab's widget styles, injected once (only .js files load from WEB_DIRECTORY).

const CSS = `
/* Nodes 2.0: LoRA Lab's text boxes keep TEXT_MIN_HEIGHT..TEXT_MAX_HEIGHT (js/node_layout.js) however tall the node */
[node-type^="LoRALab"] textarea { min-height: 40px; max-height: 80px; }
.loralab-widget { box-sizing: border-box; overflow: hidden; font: 11px/1.35 sans-serif; color: var(--input-text, #ddd); }
.loralab-widget * { box-sizing: border-box; }
.loralab-panel, .loralab-blocks, .loralab-loss { display: flex; flex-direction: column; gap: 4px; padding: 4px 6px;
  background: var(--comfy-input-bg, #222); border-radius: 6px; }
.loralab-info + .loralab-info { border-top: 1px solid var(--border-color, #444); padding-top: 4px; }
.loralab-head { display: flex; align-items: center; gap: 6px; min-width: 0; }
.loralab-compact { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.loralab-slot { color: var(--descrip-text, #999); }
.loralab-error .loralab-compact { color: #e88; white-space: normal; }
.loralab-loading .loralab-compact, .loralab-empty .loralab-compact, .loralab-muted { color: var(--descrip-text, #999); }
.loralab-badge { color: #fb4; white-space: nowrap; }
.loralab-toggle, .loralab-chip { font: inherit; color: inherit; background: var(--comfy-menu-bg, #333);
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
.loralab-chart { width: 100%; height: 150px; display: block; }
.loralab-loss[data-kind="empty"] .loralab-chart, .loralab-loss[data-kind="empty"] .loralab-legend { display: none; }
.loralab-legend { display: flex; gap: 12px; color: var(--descrip-text, #999); }
.loralab-legend-raw::before, .loralab-legend-smooth::before { content: ""; display: inline-block; width: 14px; height: 2px;
  margin: 0 4px 3px 0; vertical-align: middle; }
.loralab-legend-raw::before { background: rgba(110,160,255,0.6); }
.loralab-legend-smooth::before { background: rgb(255,170,60); }
`;

/** Add the stylesheet to the page (once). */
export function injectStyles() {
  if (document.getElementById("loralab-styles")) return;
  const style = document.createElement("style");
  style.id = "loralab-styles";
  style.textContent = CSS;
  document.head.appendChild(style);
}
