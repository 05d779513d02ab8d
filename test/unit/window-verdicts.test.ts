import { test } from 'node:test';
import assert from 'node:assert/strict';
import { costModel, deriveWindow, writeCostMs } from '../../packages/sluice/src/core/window-chooser.js';
import { interleaved, judge, mad, median, noiseOf } from '../../packages/lab/src/protocol.js';
import { replayedCostMs, summarise } from '../../packages/lab/src/replay-sink.js';

test('protocol: variants run interleaved (A B C, A B C, …)', async () => {
  const order: string[] = [];
  const out = await interleaved(['A', 'B', 'C'], 3, async (v, rep) => {
    order.push(`${v}${rep}`);
    return rep;
  });
  assert.deepEqual(order, ['A0', 'B0', 'C0', 'A1', 'B1', 'C1', 'A2', 'B2', 'C2']);
  assert.deepEqual(out, [[0, 1, 2], [0, 1, 2], [0, 1, 2]]);
});

test('protocol: median and MAD; one outlier of three does not move them, two do', () => {
  assert.equal(median([12, 13, 300]), 13);
  assert.equal(mad([12, 13, 300]), 1);
  assert.equal(mad([12, 30, 300]), 18);
  const n = noiseOf([10, 11, 12, 11, 50]);
  assert.equal(n.median, 11);
  assert.equal(n.mad, 1);
  assert.equal(n.relMad, 0.091);
});

test('protocol: pass and fail need a margin beyond max(tolerance, spread); within it the check is not decidable here', () => {
  const t = { tolerance: 1, toleranceFrom: 'cal', unit: 'ms' };
  assert.equal(judge('a', [15, 16, 40], '<=', 20, t).verdict, 'pass', 'one stall of three: the median reads past it');
  assert.equal(judge('a', [21.5, 22, 21.8], '<=', 20, t).verdict, 'fail');
  const nd = judge('a', [15, 25, 35], '<=', 20, t);
  assert.equal(nd.verdict, 'undecidable');
  assert.equal(nd.pass, false);
  assert.match(nd.judged!.needs!, /less than 5 ms/);
  assert.equal(judge('a', [19.5, 19.6, 19.4], '<=', 20, t).verdict, 'undecidable', 'within the calibrated tolerance');
  assert.equal(judge('a', [Infinity, Infinity, 12], '<=', 20, t).verdict, 'fail', 'two runs that lost items');
  assert.equal(judge('a', [1.3, 1.25, 1.4], '>=', 1.2, { tolerance: 0.05, toleranceFrom: 'cal' }).verdict, 'pass');
  assert.equal(judge('a', [NaN, NaN, NaN], '>=', 1.2, { tolerance: 0.05, toleranceFrom: 'cal' }).verdict, 'fail');
});

test('derived window: size-bound at peak and timer-bound at low load by construction', () => {
  const cost = costModel(0.4, 4096, 11.3);
  assert.ok(Math.abs(cost.perItemMs - 0.00266) < 1e-4);
  assert.equal(writeCostMs(cost, 1), 0.4);
  const d = deriveWindow({ limitMs: 17, lowPerSec: 600, peakPerSec: 9000, cost, lowOverheadMs: 3 });
  assert.equal(d.feasible, true);
  assert.equal(d.maxWaitMs, 13.5);
  const n = (9000 * 13.5) / 1000;
  assert.equal(d.maxItems, Math.floor(n - 2 * Math.sqrt(n)), 'the peak fills maxItems before the wait in ≈ 97.7% of windows');
  assert.ok(d.predicted.lowArrivalsInWait < d.maxItems / 5, 'the low load brings far fewer: the timer cuts');
  assert.ok(d.predicted.peakP99Ms <= 17);
  assert.match(d.reason, /derived from the cost model/);
});

test('derived window: moves with its medians, not with which cell a stall fell in; shrinks the wait when the write of the batch is dear; says when nothing fits', () => {
  const cost = { fixedMs: 0.4, perItemMs: 0.0027 };
  const a = deriveWindow({ limitMs: 17, lowPerSec: 600, peakPerSec: 9000, cost, lowOverheadMs: 3.0 });
  const b = deriveWindow({ limitMs: 17, lowPerSec: 600, peakPerSec: 9000, cost, lowOverheadMs: 3.3 });
  assert.ok(Math.abs(a.maxWaitMs - b.maxWaitMs) <= 0.5 && Math.abs(a.maxItems - b.maxItems) / a.maxItems < 0.05);
  const dear = deriveWindow({ limitMs: 17, lowPerSec: 600, peakPerSec: 30_000, cost: { fixedMs: 0.4, perItemMs: 0.004 }, lowOverheadMs: 3 });
  assert.ok(dear.maxWaitMs < 13.5);
  assert.match(dear.reason, /was shortened/);
  assert.ok(dear.predicted.peakP99Ms <= 16.5);
  const none = deriveWindow({ limitMs: 17, lowPerSec: 600, peakPerSec: 1000, cost, lowOverheadMs: 38 });
  assert.equal(none.feasible, false);
  assert.match(none.reason, /no window fits/);
  const busy = deriveWindow({ limitMs: 17, lowPerSec: 600, peakPerSec: 9000, cost: { fixedMs: 8, perItemMs: 0 }, lowOverheadMs: 3 });
  assert.equal(busy.feasible, false);
  assert.match(busy.reason, /busy/);
});

test('replay sink: a write issued inside a recorded stall lasts until the stall ends; others cost what was recorded', () => {
  const tr = summarise([0, 1, 2, 3, 33, 34], [0.5, 0.5, 0.5, 30, 0.5, 0.5], 35);
  assert.equal(tr.stalls, 1);
  assert.equal(replayedCostMs(tr, 1.2), 0.5);
  assert.equal(replayedCostMs(tr, 13), 20);
  assert.equal(replayedCostMs(tr, 35 + 13), 20, 'the trace wraps around');
  assert.equal(replayedCostMs(tr, 33.2), 0.5);
});
