import { test } from 'node:test';
import assert from 'node:assert/strict';
import { judge } from '../../packages/lab/src/protocol.js';
import { ALWAYS_JUDGED_UP_TO, SLO_CHECKED_UP_TO, p99Judged } from '../../packages/lab/src/experiments/batching.js';
import { againstBestStatic } from '../../packages/lab/src/experiments/adaptive.js';
import { withinSloBeside } from '../../packages/lab/src/experiments/tenants.js';

test('batching: the p99 is judged at 0.5× and 2×C1 always, above only up to 10×C1 and within the capacity at the SLO', () => {
  const c1 = 4810;
  assert.equal(ALWAYS_JUDGED_UP_TO, 2);
  assert.equal(SLO_CHECKED_UP_TO, 10);
  // A fast fdatasync: 10×C1 = 48,100/s against a capacity at the SLO of 16,880/s.
  assert.deepEqual([0.5, 2, 10, 30].map((m) => p99Judged(m, c1, 16_880)), [true, true, false, false]);
  // Nothing held on the ramp: the lower rungs are still judged (the restatement never excuses them).
  assert.deepEqual([0.5, 2, 10, 30].map((m) => p99Judged(m, c1, 0)), [true, true, false, false]);
  // A slow sink (PostgreSQL-like C1) whose capacity covers 10×C1: judged as the issue states it; 30×C1 never.
  assert.deepEqual([0.5, 2, 10, 30].map((m) => p99Judged(m, 1186, 20_000)), [true, true, true, false]);
});

test('adaptive: a ratio over 1.1 fails only against a best static that surely meets the SLO; a pass stands', () => {
  const tol = { tolerance: 0.03, toleranceFrom: 'cal' };
  const p99 = { tolerance: 0.4, toleranceFrom: 'cal', unit: 'ms' };
  const over = judge('ratio', [1.3, 1.35, 1.4], '<=', 1.1, tol);
  const under = judge('ratio', [1.0, 1.02, 1.01], '<=', 1.1, tol);
  const staticSure = judge('static p99', [18.0, 18.2, 17.9], '<=', 20, p99);
  const staticEdge = judge('static p99', [20.1, 19.0, 20.0], '<=', 20, p99);
  assert.equal(staticSure.verdict, 'pass');
  assert.equal(staticEdge.verdict, 'undecidable');
  assert.equal(againstBestStatic(over, staticSure).verdict, 'fail');
  const nd = againstBestStatic(over, staticEdge);
  assert.equal(nd.verdict, 'undecidable');
  assert.equal(nd.pass, false);
  assert.match(nd.judged!.needs!, /not decidable against the SLO/);
  assert.equal(againstBestStatic(under, staticEdge).verdict, 'pass');
  assert.equal(againstBestStatic(under, staticSure).verdict, 'pass');
});

test('tenants: the steady tenant over the SLO beside the flood fails only where it meets the SLO alone; a pass stands', () => {
  const p99 = { tolerance: 0.5, toleranceFrom: 'cal', unit: 'ms' };
  const besideOver = judge('beside', [26, 27, 28], '<=', 20, p99);
  const besideUnder = judge('beside', [15, 16, 15.5], '<=', 20, p99);
  const aloneMeets = judge('alone', [14, 15, 14.5], '<=', 20, p99);
  const aloneOver = judge('alone', [24, 25, 23], '<=', 20, p99);
  const aloneEdge = judge('alone', [20.2, 19.9, 20], '<=', 20, p99);
  assert.equal(besideOver.verdict, 'fail');
  assert.equal(withinSloBeside(besideOver, aloneMeets).verdict, 'fail');
  for (const alone of [aloneOver, aloneEdge]) {
    const nd = withinSloBeside(besideOver, alone);
    assert.equal(nd.verdict, 'undecidable');
    assert.equal(nd.pass, false);
    assert.match(nd.judged!.needs!, /alone does not meet the SLO here either/);
  }
  assert.equal(withinSloBeside(besideUnder, aloneOver).verdict, 'pass');
});
