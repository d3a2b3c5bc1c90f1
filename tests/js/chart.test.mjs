// chart.js: smoothing math, axes, downsampling that keeps spikes, run handling, pixel mapping.
import assert from "node:assert/strict";
import test from "node:test";

import {
  LossSeries, RATE_WINDOW, chartGeometry, downsample, ema, formatDuration, formatRate, formatTick, niceAxis, niceStep, rateAndEta,
  statusLine, ticksWithin,
} from "../../js/lib/chart.js";

const close = (a, b) => assert.ok(Math.abs(a - b) < 1e-12, `${a} != ${b}`);

test("debiased EMA: starts at the first value, constant stays constant, follows the recurrence", () => {
  const out = ema([2, 4, 8], 0.9);
  close(out[0], 2);
  close(out[1], (0.9 * 0.1 * 2 + 0.1 * 4) / (0.9 * 0.1 + 0.1));
  const acc = 0.81 * 0.1 * 2 + 0.9 * 0.1 * 4 + 0.1 * 8;
  close(out[2], acc / (0.81 * 0.1 + 0.9 * 0.1 + 0.1));
  for (const v of ema([3, 3, 3, 3])) close(v, 3);
  assert.deepEqual(ema([]), []);
});

test("nice steps and axes", () => {
  assert.equal(niceStep(100, 4), 50);
  assert.equal(niceStep(0.37, 3), 0.2);
  assert.deepEqual(niceAxis(0.083, 0.33, 3), { min: 0, max: 0.4, ticks: [0, 0.1, 0.2, 0.3, 0.4] });
  assert.deepEqual(niceAxis(2, 2, 2).ticks.length > 1, true);
  assert.deepEqual(niceAxis(NaN, 1), { min: 0, max: 1, ticks: [0, 0.5, 1] });
  assert.deepEqual(ticksWithin(0, 120, 4), [0, 50, 100]);
});

test("downsampling keeps the lowest and highest of every bucket", () => {
  const values = Array.from({ length: 1000 }, (_, i) => (i === 567 ? 100 : i === 123 ? -5 : Math.sin(i)));
  const keep = downsample(values, 100);
  assert.ok(keep.length <= 100);
  assert.ok(keep.includes(567) && keep.includes(123));
  assert.deepEqual([...keep].sort((a, b) => a - b), keep);
  assert.deepEqual(downsample([1, 2, 3], 100), [0, 1, 2]);
});

test("a series follows its run, skips non-finite losses, and replaces re-reported steps", () => {
  const s = new LossSeries();
  assert.equal(statusLine(s), "waiting for training to start");
  s.add({ run: "a", step: 1, total: 10, loss: 0.5, loss_avg: 0.5, lr: 1e-4, t: 100 });
  s.add({ run: "a", step: 2, total: 10, loss: NaN, t: 100 });
  s.add({ run: "a", step: 3, total: 10, loss: 0.3, loss_avg: 0.45, lr: 5e-5, t: 100 });  // no time passed: no rate
  assert.deepEqual(s.steps, [1, 3]);
  assert.equal(s.skipped, 1);
  assert.equal(statusLine(s), "step 3 / 10 · loss 0.3 · avg 0.45 · lr 5.0e-5 · 1 non-finite loss");
  s.add({ run: "a", step: 2, total: 10, loss: 0.4 });
  assert.deepEqual(s.steps, [1, 2]);
  s.add({ run: "b", step: 1, total: 5, loss: 1 });
  assert.deepEqual([s.steps, s.losses, s.total, s.skipped], [[1], [1], 5, 0]);
  assert.equal(s.add({ step: "x" }), false);
  assert.equal(s.add(null), false);
});

test("geometry maps steps and losses into the box", () => {
  const s = new LossSeries();
  assert.equal(chartGeometry(s, { x: 0, y: 0, width: 100, height: 50 }), null);
  s.add({ run: 1, step: 0, total: 100, loss: 0.4 });
  s.add({ run: 1, step: 100, total: 100, loss: 0 });
  const g = chartGeometry(s, { x: 10, y: 5, width: 100, height: 50 });
  assert.deepEqual(g.raw, [[10, 5], [110, 55]]);
  assert.equal(g.smooth[0][1], 5);
  assert.ok(g.smooth[1][1] < 55, "the smoothed line lags the raw drop");
  assert.deepEqual(g.xTicks.map((t) => t.value), [0, 50, 100]);
  assert.equal(g.yTicks[0].pos, 55);
});

test("validation losses are a second series on the same axes, replaced when steps are re-reported", () => {
  const s = new LossSeries();
  s.add({ run: "a", step: 1, total: 4, loss: 0.4 });
  s.add({ run: "a", step: 2, total: 4, loss: 0.2, val_loss: 0.6 });
  s.add({ run: "a", step: 3, total: 4, loss: 0.3 });
  s.add({ run: "a", step: 4, total: 4, loss: 0.2, val_loss: 0.2 });
  assert.deepEqual([s.valSteps, s.valLosses], [[2, 4], [0.6, 0.2]]);
  assert.match(statusLine(s), / · val 0\.2 @4$/);
  const g = chartGeometry(s, { x: 0, y: 0, width: 100, height: 50 });
  assert.equal(g.yTicks.at(-1).value, 0.6);  // the axis spans the validation loss too
  const top = g.yTicks.at(-1).pos;
  assert.deepEqual(g.val.map(([x]) => x), [50, 100]);
  assert.equal(g.val[0][1], top);
  assert.equal(g.val[1][1], g.raw[3][1]);  // same value, same height as the training loss
  s.add({ run: "a", step: 3, total: 4, loss: 0.5 });  // a resumed run re-reports step 3 on
  assert.deepEqual([s.valSteps, s.valLosses], [[2], [0.6]]);
  s.add({ run: "b", step: 1, total: 4, loss: 0.5 });
  assert.deepEqual([s.valSteps, chartGeometry(s, { x: 0, y: 0, width: 10, height: 10 }).val], [[], []]);
});

test("tick labels", () => {
  assert.equal(formatTick(0), "0");
  assert.equal(formatTick(0.123456), "0.1235");
  assert.equal(formatTick(0.0001), "1.0e-4");
  assert.equal(formatTick(250000), "2.5e5");
  assert.equal(formatTick(NaN), "");
});

test("it/s and ETA from the events' times, over the latest steps", () => {
  const s = new LossSeries();
  assert.deepEqual(rateAndEta(s), { rate: null, eta: null });
  s.add({ run: "a", step: 1, total: 101, loss: 0.5, t: 1000 });
  assert.deepEqual(rateAndEta(s), { rate: null, eta: null });
  for (let step = 2; step <= 21; step++) s.add({ run: "a", step, total: 101, loss: 0.5, t: 1000 + (step - 1) * 0.5 });
  const { rate, eta } = rateAndEta(s);
  assert.equal(rate, 2);  // 20 steps in 10 s
  assert.equal(eta, 40);  // 80 steps left
  assert.equal(statusLine(s), "step 21 / 101 · loss 0.5 · 2 it/s · ETA 40s");
  // the rate follows the latest RATE_WINDOW steps: a slowdown shows within the window
  for (let step = 22; step <= 22 + RATE_WINDOW; step++) s.add({ run: "a", step, total: 101, loss: 0.5, t: 1010 + (step - 21) * 4 });
  assert.equal(rateAndEta(s).rate, 0.25);
  assert.match(statusLine(s), / · 4 s\/it · ETA 1:56$/);
  // a saved file shows, and is not a loss point; the finished run has no ETA
  s.add({ run: "a", step: 101, total: 101, loss: 0.4, t: 2000 });
  s.add({ run: "a", step: 101, total: 101, saved: "my/<lora>.safetensors", t: 2001 });
  assert.equal(s.steps.at(-1), 101);
  assert.equal(s.skipped, 0);
  assert.doesNotMatch(statusLine(s), /ETA/);
  assert.match(statusLine(s), / · saved my\/<lora>\.safetensors$/);
  // a new run forgets the old file and times
  s.add({ run: "b", step: 1, total: 5, loss: 1, t: 3000 });
  assert.deepEqual([s.saved, rateAndEta(s).rate], [null, null]);
});

test("rate and duration as text", () => {
  assert.equal(formatRate(3.14159), "3.14 it/s");
  assert.equal(formatRate(0.5), "2 s/it");
  assert.equal(formatRate(0), "");
  assert.equal(formatRate(NaN), "");
  assert.equal(formatDuration(45.4), "45s");
  assert.equal(formatDuration(187), "3:07");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(-1), "");
});
