/**
 * LiveSlo (`--slo-p99-ms`, issue 21) on a FakeClock: the controller's raises stop at the queue's
 * byte bound, and a change of regime is logged once, not once per decision.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../packages/sluice/src/core/clock.js';
import { envelope } from '../../packages/sluice/src/core/types.js';
import { LiveSlo, QUEUE_BYTES_SHARE, regimeOf } from '../../packages/sluice/src/tune/live.js';

function target(start: { maxItems: number; maxWaitMs: number }) {
  let w = { ...start };
  const sets: { maxItems?: number; maxWaitMs?: number }[] = [];
  return {
    sets,
    window: () => ({ ...w }),
    setWindow(p: { maxItems?: number; maxWaitMs?: number }) {
      sets.push(p);
      w = { ...w, ...p };
    },
  };
}

/** One control period: `cuts` full batches of `items`, each cut late (waited past the wait + slack), committed `latencyMs` after arrival. */
function saturatedPeriod(slo: LiveSlo, clock: FakeClock, items: number, bytes: number, latencyMs: number) {
  for (let c = 0; c < 10; c++) {
    clock.advance(60);
    const now = clock.now();
    slo.observer.onFlush!({ reason: 'size', items, bytes: items * bytes, waitMs: 50 }, now);
    const batch = Array.from({ length: items }, () => envelope({ x: 1 }, { bytes, intendedAtMs: now - latencyMs }));
    slo.observer.onCommitted!(batch, now);
  }
}

test('the controller never raises maxItems past the queue byte bound', () => {
  const clock = new FakeClock(1000);
  const lines: string[] = [];
  const queue = { maxItems: 10_000, maxBytes: 200_000 };
  const slo = new LiveSlo({ sloMs: 20, queue, start: { maxItems: 16, maxWaitMs: 1 }, log: (l) => lines.push(l), clock });
  const t = target({ maxItems: 16, maxWaitMs: 1 });
  slo.attach(t);
  // 1000-byte records: the bound is 0.5 × 200 000 / 1000 = 100 items.
  for (let p = 0; p < 8; p++) saturatedPeriod(slo, clock, t.window().maxItems, 1000, 5);
  assert.equal(slo.itemBound(), Math.floor((QUEUE_BYTES_SHARE * queue.maxBytes) / 1000));
  assert.ok(t.sets.length >= 2, 'the controller raised maxItems');
  assert.ok(t.sets.every((s) => s.maxItems === undefined || s.maxItems <= slo.itemBound()), JSON.stringify(t.sets));
  assert.equal(t.window().maxItems, 100);
  assert.ok(slo.capped >= 1);
  // Saturated in every period: one regime line, however many decisions.
  const decisions = slo.controller.stats().periods;
  assert.ok(decisions >= 4);
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0], /^window regime start → sink saturated: /);
  assert.equal(slo.regimeChanges, 1);
});

test('regimeOf: the decision log read as regimes', () => {
  const d = { tMs: 1, maxItems: 8, maxWaitMs: 2, p99Ms: 5, decisionP99Ms: 5, samples: 500, ratePerSec: 100, bound: 'time' as const, decision: 'increase' as const, reason: 'p99 5 ms < 8.5 ms' };
  assert.equal(regimeOf(d, 20), 'timer-bound');
  assert.equal(regimeOf({ ...d, bound: 'size' }, 20), 'size-bound');
  assert.equal(regimeOf({ ...d, decisionP99Ms: 25 }, 20), 'over the SLO');
  assert.equal(regimeOf({ ...d, reason: 'sink saturated: 9 of 10 cuts…' }, 20), 'sink saturated');
  assert.equal(regimeOf({ ...d, samples: 0, reason: 'only 0 samples (< 50): no evidence' }, 20), 'idle');
  assert.equal(regimeOf({ ...d, samples: 10, reason: 'only 10 samples (< 50): no evidence' }, 20), null);
  assert.equal(regimeOf({ ...d, decision: 'start' }, 20), null);
});
