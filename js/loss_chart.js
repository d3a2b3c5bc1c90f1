// The live loss chart: ``loralab.train.progress`` events (node, run, step, total, loss,
// loss_avg, lr, t, val_loss, or saved) drawn on the node that sent them, raw loss, its smoothed
// line and the validation loss (points joined by a line), with it/s, ETA and the saved file; a reloaded page replays the run from GET /loralab/train_progress.
// Until the first event the chart is its status line alone, so a fresh training node stays short.

import { LossSeries, chartGeometry, formatTick, statusLine } from "./lib/chart.js";
import { el } from "./lib/dom.js";
import { addContentWidget } from "./widget.js";

const HEIGHT = 150;
const PAD = { left: 44, right: 8, top: 6, bottom: 18 };

function draw(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(120, canvas.clientWidth);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(HEIGHT * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, HEIGHT);
  const box = { x: PAD.left, y: PAD.top, width: width - PAD.left - PAD.right, height: HEIGHT - PAD.top - PAD.bottom };
  const g = chartGeometry(series, box, Math.max(50, Math.floor(box.width)));
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#999";
  if (!g) {
    ctx.fillText("no loss yet", box.x + 4, box.y + box.height / 2);
    return;
  }
  ctx.strokeStyle = "rgba(160,160,160,0.25)";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of g.yTicks) {
    ctx.beginPath();
    ctx.moveTo(box.x, t.pos);
    ctx.lineTo(box.x + box.width, t.pos);
    ctx.stroke();
    ctx.fillText(formatTick(t.value), box.x - 4, t.pos);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of g.xTicks) ctx.fillText(formatTick(t.value), t.pos, box.y + box.height + 4);
  const line = (points, style, width) => {
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  };
  line(g.raw, "rgba(110,160,255,0.35)", 1);
  line(g.smooth, "rgb(255,170,60)", 2);
  if (g.val.length) {
    line(g.val, "rgb(80,200,120)", 2);
    ctx.fillStyle = "rgb(80,200,120)";
    for (const [x, y] of g.val) ctx.fillRect(x - 2, y - 2, 4, 4);
  }
  return g.val.length > 0;
}

/** Add the chart to a node. Returns {widget, add(event), replay(history)}. */
export function attachLossChart(node) {
  const series = new LossSeries();
  const status = el(document, "div", { className: "loralab-status", text: statusLine(series) });
  const canvas = el(document, "canvas", { className: "loralab-chart" });
  const legend = el(document, "div", { className: "loralab-legend" }, [
    el(document, "span", { className: "loralab-legend-raw", text: "loss" }),
    el(document, "span", { className: "loralab-legend-smooth", text: "smoothed" }),
    el(document, "span", { className: "loralab-legend-val", text: "validation" }),
  ]);
  const root = el(document, "div", { className: "loralab-loss", attrs: { "data-kind": "empty" } }, [status, canvas, legend]);
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      status.textContent = statusLine(series);
      root.setAttribute("data-kind", series.last === null && series.saved === null ? "empty" : "drawn");
      legend.setAttribute("data-val", draw(canvas, series) ? "shown" : "none");
    });
  };
  const widget = addContentWidget(node, "loralab_loss", root, { fallbackHeight: 24, onResize: redraw });
  return {
    widget,
    add(event) {
      if (series.add(event)) redraw();
    },
    /** Feed a run's history from the server (a reloaded page); events the chart already has
     * (live ones that came first) are not fed again. */
    replay(history) {
      if (!history || !Array.isArray(history.events) || history.run === null) return;
      if (series.run !== null && series.run !== history.run) return;  // a newer run is live
      const seen = series.last?.step ?? -Infinity;
      for (const e of history.events) if (!(e?.step <= seen)) series.add(e);
      if (history.saved) series.add(history.saved);
      redraw();
    },
  };
}
