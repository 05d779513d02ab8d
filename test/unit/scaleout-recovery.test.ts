/** How `lab scaleout` reads a recovery after a kill (packages/lab/src/scaleout-topology.ts recoverySeconds). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recoverySeconds } from '../../packages/lab/src/scaleout-topology.js';

const BIN = 250;
/** A series of 250 ms bins from 0 to `toMs`, rate given per bin start. */
const series = (toMs: number, rate: (t: number) => number) => Array.from({ length: toMs / BIN }, (_, i) => ({ t: i * BIN, rate: rate(i * BIN) }));

test('recovery: the end of the first window from which the rate holds ≥ share of the baseline', () => {
  // Steady 1,000/s, nothing from 10 s to 13 s (the kill), steady again.
  const s = series(20_000, (t) => (t >= 10_000 && t < 13_000 ? 0 : 1000));
  const r = recoverySeconds(s, BIN, 10_000, 4_000, 0.8, 20_000);
  assert.equal(r.baseline, 1000);
  assert.equal(r.lowest, 0);
  assert.ok(r.seconds > 3 && r.seconds <= 4.25, String(r.seconds));
});

test('recovery: a catch-up burst before the kill is not its level (the baseline is capped at the offered rate)', () => {
  // Offered 1,000/s; an earlier outage's backlog drains at 3,000/s for the 4 s before the kill;
  // after it the rate is back at the offered 1,000/s at once.
  const s = series(20_000, (t) => (t >= 6_000 && t < 10_000 ? 3000 : 1000));
  assert.equal(recoverySeconds(s, BIN, 10_000, 4_000, 0.8, 20_000).seconds, Infinity, 'uncapped: 1,000/s never reaches 80% of 3,000/s');
  const r = recoverySeconds(s, BIN, 10_000, 4_000, 0.8, 20_000, 1000);
  assert.equal(r.baseline, 1000);
  assert.equal(r.seconds, 0);
});

test('recovery: a dip after the rate held (a late batch) does not undo it; no hold before the horizon is Infinity', () => {
  const dipLate = series(20_000, (t) => (t >= 10_000 && t < 12_000 ? 0 : t >= 17_000 && t < 18_000 ? 100 : 1000));
  const r = recoverySeconds(dipLate, BIN, 10_000, 4_000, 0.8, 18_000, 1000);
  assert.ok(r.seconds > 2 && r.seconds <= 3.25, String(r.seconds));
  const never = series(20_000, (t) => (t >= 10_000 ? 500 : 1000));
  assert.equal(recoverySeconds(never, BIN, 10_000, 4_000, 0.8, 20_000, 1000).seconds, Infinity);
});
