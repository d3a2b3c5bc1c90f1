// The loss chart's data and geometry, without a canvas: a run's points from
// ``loralab.train.progress`` events, exponential smoothing, axis ranges with round ticks, and
// the mapping of points to pixels. The widget (js/loss_chart.js) only draws what this returns.

/** Smoothing weight of the smoothed line (TensorBoard's exponential moving average). */
export const SMOOTHING = 0.9;

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** The points of one training run, fed from progress events in arrival order. */
export class LossSeries {
  constructor() {
    this.reset(null);
  }

  reset(run) {
    this.run = run;
    this.steps = [];
    this.losses = [];
    this.valSteps = [];  // the validation loss, at the steps that measured it
    this.valLosses = [];
    this.total = null;
    this.last = null;
    this.skipped = 0;
    this.saved = null;
    this.times = [];  // [step, seconds] of the loss events, for the rate
  }

  /** Add one event ({run, step, total, loss, loss_avg, lr, and val_loss at a validation step});
   * a new run id starts a new series. Events with a non-finite loss are counted, not plotted.
   * Returns whether the event was used. */
  add(event, now = Date.now() / 1000) {
    if (!event || typeof event !== "object" || !finite(event.step)) return false;
    if (event.run !== this.run) this.reset(event.run);
    if (finite(event.total) && event.total > 0) this.total = event.total;
    if (typeof event.saved === "string") {  // the run's file was written: not a loss point
      this.saved = event.saved;
      return true;
    }
    this.last = event;
    const t = finite(event.t) ? event.t : now;
    const m = this.times.length;
    if (m > 0 && event.step <= this.times[m - 1][0]) this.times.length = this.times.findIndex(([s]) => s >= event.step);
    this.times.push([event.step, t]);
    if (this.times.length > RATE_WINDOW + 1) this.times.shift();
    if (!finite(event.loss)) {
      this.skipped += 1;
      return true;
    }
    const n = this.steps.length;
    if (n > 0 && event.step <= this.steps[n - 1]) {
      // a repeated or earlier step replaces what follows it (a resumed run re-reports steps)
      const keep = this.steps.findIndex((s) => s >= event.step);
      this.steps.length = keep;
      this.losses.length = keep;
    }
    this.steps.push(event.step);
    this.losses.push(event.loss);
    const v = this.valSteps.length;
    if (v > 0 && event.step <= this.valSteps[v - 1]) {
      const keep = this.valSteps.findIndex((s) => s >= event.step);
      this.valSteps.length = keep;
      this.valLosses.length = keep;
    }
    if (finite(event.val_loss)) {
      this.valSteps.push(event.step);
      this.valLosses.push(event.val_loss);
    }
    return true;
  }
}

/** Steps the rate is measured over (the latest ones). */
export const RATE_WINDOW = 50;

/** Training speed and time left: {rate (steps per second) | null, eta (seconds) | null}, from
 * the latest RATE_WINDOW steps' times (the server's clock where events carry ``t``). */
export function rateAndEta(series) {
  const t = series.times;
  if (t.length < 2) return { rate: null, eta: null };
  const [s0, t0] = t[0];
  const [s1, t1] = t[t.length - 1];
  if (!(t1 > t0) || !(s1 > s0)) return { rate: null, eta: null };
  const rate = (s1 - s0) / (t1 - t0);
  const left = series.total ? Math.max(0, series.total - s1) : null;
  return { rate, eta: left === null ? null : left / rate };
}

/** Steps per second as text: "3.2 it/s", or "4.1 s/it" below one step a second. */
export function formatRate(rate) {
  if (!finite(rate) || rate <= 0) return "";
  return rate >= 1 ? `${Number(rate.toPrecision(3))} it/s` : `${Number((1 / rate).toPrecision(3))} s/it`;
}

/** Seconds as "45s", "3:07", "1:02:05". */
export function formatDuration(seconds) {
  if (!finite(seconds) || seconds < 0) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** Debiased exponential moving average of ``values`` (the first value is not pulled to 0). */
export function ema(values, weight = SMOOTHING) {
  const out = [];
  let acc = 0;
  let norm = 0;
  for (const v of values) {
    acc = acc * weight + (1 - weight) * v;
    norm = norm * weight + (1 - weight);
    out.push(acc / norm);
  }
  return out;
}

/** A step of 1, 2 or 5 × 10^k near ``span / count``. */
export function niceStep(span, count) {
  if (!(span > 0) || !(count > 0)) return 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** An axis covering [min, max] that starts and ends on round ticks: {min, max, ticks}. */
export function niceAxis(min, max, count = 4) {
  if (!finite(min) || !finite(max)) return { min: 0, max: 1, ticks: [0, 0.5, 1] };
  if (max === min) {
    const pad = Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
  }
  const step = niceStep(max - min, count);
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const ticks = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) ticks.push(Number((lo + i * step).toPrecision(12)));
  return { min: lo, max: hi, ticks };
}

/** Round ticks inside [min, max] (the axis itself is not widened). */
export function ticksWithin(min, max, count = 4) {
  const step = niceStep(max - min, count);
  const ticks = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** Keep at most ``max`` points: per bucket of consecutive points, the lowest and the highest,
 * so spikes stay visible. Returns indices into the input, ascending. */
export function downsample(values, max) {
  const n = values.length;
  if (n <= max || max < 4) return Array.from({ length: n }, (_, i) => i);
  const buckets = Math.floor(max / 2);
  const size = n / buckets;
  const out = [];
  for (let b = 0; b < buckets; b++) {
    const start = Math.floor(b * size);
    const end = Math.min(n, Math.floor((b + 1) * size));
    let lo = start;
    let hi = start;
    for (let i = start; i < end; i++) {
      if (values[i] < values[lo]) lo = i;
      if (values[i] > values[hi]) hi = i;
    }
    out.push(...(lo === hi ? [lo] : lo < hi ? [lo, hi] : [hi, lo]));
  }
  return out;
}

/** Everything the chart draws, in pixels inside ``box`` ({x, y, width, height}): the raw and
 * smoothed polylines, the validation-loss polyline (``val``, on the same axes; empty without
 * validation), the axes with ticks, or null when there is nothing to draw. */
export function chartGeometry(series, box, maxPoints = 400) {
  const n = series.steps.length;
  if (n === 0) return null;
  const smooth = ema(series.losses);
  const xAxis = { min: Math.min(0, series.steps[0]), max: Math.max(series.total ?? 0, series.steps[n - 1], 1) };
  xAxis.ticks = ticksWithin(xAxis.min, xAxis.max, 4);
  const lo = Math.min(...series.losses, ...series.valLosses);
  const hi = Math.max(...series.losses, ...series.valLosses);
  const yAxis = niceAxis(lo, hi, 3);
  const px = (s) => box.x + ((s - xAxis.min) / (xAxis.max - xAxis.min)) * box.width;
  const py = (v) => box.y + box.height - ((v - yAxis.min) / (yAxis.max - yAxis.min)) * box.height;
  const keep = downsample(series.losses, maxPoints);
  return {
    raw: keep.map((i) => [px(series.steps[i]), py(series.losses[i])]),
    smooth: keep.map((i) => [px(series.steps[i]), py(smooth[i])]),
    val: series.valSteps.map((s, i) => [px(s), py(series.valLosses[i])]),
    xTicks: xAxis.ticks.map((t) => ({ value: t, pos: px(t) })),
    yTicks: yAxis.ticks.map((t) => ({ value: t, pos: py(t) })),
  };
}

/** A tick or loss label: up to 4 significant digits, exponent form for tiny or huge values. */
export function formatTick(v) {
  if (!finite(v)) return "";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(1).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
}

/** The line of text above the chart: step, loss, average loss and learning rate. */
export function statusLine(series) {
  const e = series.last;
  if (!e) return "waiting for training to start";
  const parts = [`step ${e.step}${series.total ? ` / ${series.total}` : ""}`];
  if (finite(e.loss)) parts.push(`loss ${formatTick(e.loss)}`);
  if (finite(e.loss_avg)) parts.push(`avg ${formatTick(e.loss_avg)}`);
  if (finite(e.lr)) parts.push(`lr ${formatTick(e.lr)}`);
  const v = series.valLosses.length;
  if (v) parts.push(`val ${formatTick(series.valLosses[v - 1])} @${series.valSteps[v - 1]}`);
  if (series.skipped) parts.push(`${series.skipped} non-finite loss${series.skipped > 1 ? "es" : ""}`);
  const { rate, eta } = rateAndEta(series);
  if (rate !== null) parts.push(formatRate(rate));
  if (eta !== null && series.total && e.step < series.total) parts.push(`ETA ${formatDuration(eta)}`);
  if (series.saved !== null) parts.push(`saved ${series.saved}`);
  return parts.join(" · ");
}
