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

test('recovery: the level before is read after the previous kill recovered, else it is the previous kill\'s', () => {
  // Offered 1,000/s. Kill A at 10 s: rows stall at 0 until 16 s (an election's aftermath).
  // Kill B at 17 s takes the rate to 500/s for good. Read inside A's outage, B's baseline
  // would be 0 and B would "recover" at once.
  const s = series(30_000, (t) => (t >= 10_000 && t < 16_000 ? 0 : t >= 17_000 ? 500 : 1000));
  const a = recoverySeconds(s, BIN, 10_000, 4_000, 0.8, 17_000, 1000);
  assert.equal(a.baseline, 1000);
  assert.ok(a.seconds > 6 && a.seconds <= 7.25, String(a.seconds));
  assert.equal(recoverySeconds(s, BIN, 17_000, 4_000, 0.8, 30_000, 1000).baseline, 0, 'without the prior: a baseline of 0');
  const b = recoverySeconds(s, BIN, 17_000, 4_000, 0.8, 30_000, 1000, undefined, { steadyFrom: 10_000 + a.seconds * 1000, baseline: a.baseline });
  assert.equal(b.baselineFrom, 'previous kill');
  assert.equal(b.baseline, 1000);
  assert.equal(b.seconds, Infinity);
  // A short outage (10–12 s): ≥ 2 s of steady rate after it recovered, so the window before B is the level.
  const short = series(30_000, (t) => (t >= 10_000 && t < 12_000 ? 0 : t >= 17_000 ? 500 : 1000));
  const a2 = recoverySeconds(short, BIN, 10_000, 4_000, 0.8, 17_000, 1000);
  const c = recoverySeconds(short, BIN, 17_000, 4_000, 0.8, 30_000, 1000, undefined, { steadyFrom: 10_000 + a2.seconds * 1000, baseline: a2.baseline });
  assert.equal(c.baselineFrom, 'window');
  assert.equal(c.baseline, 1000);
});
