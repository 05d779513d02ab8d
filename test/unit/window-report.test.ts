import { test } from 'node:test';
import assert from 'node:assert/strict';
import { windowExperiment } from '../../packages/lab/src/experiments/window.js';
import type { ResultEnvelope } from '../../packages/lab/src/types.js';

test('window report: the Finals table shows each run and the median the choice read, ∞ for a run that did not count (null once written as JSON)', () => {
  const r = {
    experiment: 'window',
    sink: 'file',
    sloMs: 20,
    limitMs: 17,
    cellDurationMs: 2000,
    loads: {
      calibration: { fixedCostMs: 0.3, unbatchedCapacityPerSec: 3333 },
      fullBatchItems: 4096, fullBatchMs: 5, sinkBatchedCapacityPerSec: 800_000, measuredCapacityPerSec: 300_000,
      lowPerSec: 666, peakPerSec: 9000, sloCapacityPerSec: 10_000, peakFraction: 0.03, ramp: [],
    },
    gridAxes: { maxItems: [], maxWaitMs: [] },
    grid: [],
    finalists: [
      { maxItems: 512, maxWaitMs: 10, p99RunsMs: { low: [13.4, 13.9, 14.1], peak: [15.9, 16.2, 15.1] }, medianP99Ms: { low: 13.9, peak: 15.9 }, peakFlushReasons: { size: 2, bytes: 0, time: 500, drain: 3 }, sizeBound: false },
      { maxItems: 230, maxWaitMs: 13, p99RunsMs: { low: [16.4, 16.1, null], peak: [29.8, 16.0, 15.7] }, medianP99Ms: { low: null, peak: 16.0 }, peakFlushReasons: { size: 520, bytes: 0, time: 3, drain: 3 }, sizeBound: true },
    ],
    chosen: { maxItems: 512, maxWaitMs: 10, reason: 'r', runnerUpLostOn: 'l', found: true },
    validation: [],
    replays: [],
    checks: [],
  } as unknown as ResultEnvelope;
  const md = windowExperiment.markdown!(r);
  assert.match(md, /\*\*Finals\*\*/);
  assert.match(md, /\| 512 \| 10 \| peak \| 15\.9, 16\.2, 15\.1 \| 15\.9 \| 2\/0\/500\/3 \|/);
  assert.match(md, /\| 230 \| 13 \| low \| 16\.4, 16\.1, ∞ \| ∞ \| – \|/);
  assert.match(md, /\| 230 \| 13 \| peak \| 29\.8, 16, 15\.7 \| 16 \| 520\/0\/3\/3 \|/);
});
