import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../packages/sluice/src/core/clock.js';
import { AimdController, IntervalHistogram, StaticController, createWindowController, type WindowTarget } from '../../packages/sluice/src/core/controller.js';
import { envelope, type Envelope, type FlushReason } from '../../packages/sluice/src/core/types.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';

/** A window target that records every setWindow. */
function fakeTarget(maxItems: number, maxWaitMs: number): WindowTarget & { sets: number } {
  const w = { maxItems, maxWaitMs };
  const t = {
    sets: 0,
    setWindow(p: { maxItems?: number; maxWaitMs?: number }) {
      t.sets++;
      if (p.maxItems !== undefined) w.maxItems = p.maxItems;
      if (p.maxWaitMs !== undefined) w.maxWaitMs = p.maxWaitMs;
    },
    window: () => ({ ...w }),
  };
  return t;
}

/**
 * Drives a controller for `ms` of fake time: every `batchEveryMs` one flush of `reason`
 * and one committed batch of `perBatch` items whose latency is `latencyMs(window)`.
 */
function drive(
  clock: FakeClock,
  c: AimdController,
  target: WindowTarget,
  ms: number,
  opts: { reason: FlushReason | ((w: { maxItems: number; maxWaitMs: number }) => FlushReason); perBatch: number; batchEveryMs: number; latencyMs: (w: { maxItems: number; maxWaitMs: number }) => number },
): void {
  const end = clock.now() + ms;
  while (clock.now() < end) {
    clock.advance(opts.batchEveryMs);
    const now = clock.now();
    const w = target.window();
    const reason = typeof opts.reason === 'function' ? opts.reason(w) : opts.reason;
    c.onFlush({ reason, items: opts.perBatch, bytes: 0, waitMs: 0 }, now);
    const lat = opts.latencyMs(w);
    const batch: Envelope[] = [];
    for (let i = 0; i < opts.perBatch; i++) batch.push(envelope(null, { bytes: 1, intendedAtMs: now - lat }));
    c.onCommitted(batch, now);
  }
}

/**
 * One control period per call: `batches` timer flushes of 100 items, one every `everyMs`;
 * `stalled` items of each batch at `stallMs`, the rest at `baseMs`. Returns the last decision.
 */
function stallingPeriods(clock: FakeClock, c: AimdController, batches: number, everyMs: number) {
  return (baseMs: number, stalled = 0, stallMs = 0) => {
    for (let b = 0; b < batches; b++) {
      clock.advance(everyMs);
      const now = clock.now();
      c.onFlush({ reason: 'time', items: 100, bytes: 0, waitMs: 0 }, now);
      const batch: Envelope[] = [];
      for (let i = 0; i < 100; i++) batch.push(envelope(null, { bytes: 1, intendedAtMs: now - (i < stalled ? stallMs : baseMs) }));
      c.onCommitted(batch, now);
    }
    return c.decisions().at(-1)!;
  };
}

test('interval histogram: percentiles within 1% and reset', () => {
  const h = new IntervalHistogram();
  for (let i = 1; i <= 1000; i++) h.recordMs(i / 10);
  assert.equal(h.count, 1000);
  const p99 = h.percentileMs(99);
  assert.ok(Math.abs(p99 - 99) / 99 < 0.01, `p99 ${p99}`);
  h.reset();
  assert.equal(h.count, 0);
  assert.equal(h.percentileMs(99), 0);
});

test('AIMD grows the binding knob additively while p99 is under SLO − margin', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, marginMs: 3, stepMs: 2, clock, minPeriodMs: 500, minSamples: 100, slowStart: false });
  const t = fakeTarget(64, 2);
  c.attach(t);
  // Timer-bound at low latency: the wait grows by 2 ms per period, the size is left alone.
  drive(clock, c, t, 2600, { reason: 'time', perBatch: 20, batchEveryMs: 50, latencyMs: (w) => w.maxWaitMs + 1 });
  const d = c.decisions().filter((x) => x.decision !== 'start');
  assert.ok(d.length >= 4);
  assert.equal(d[0].decision, 'increase');
  assert.equal(d[0].bound, 'time');
  assert.equal(d[0].maxWaitMs, 4);
  assert.equal(d[1].maxWaitMs, 6);
  assert.equal(t.window().maxItems, 64);
  // Size-bound: the size grows by the items that arrive in one step (rate × 2 ms).
  const c2 = new AimdController({ sloMs: 20, marginMs: 3, stepMs: 2, clock, minPeriodMs: 500, minSamples: 100, slowStart: false });
  const t2 = fakeTarget(100, 10);
  c2.attach(t2);
  drive(clock, c2, t2, 600, { reason: 'size', perBatch: 100, batchEveryMs: 10, latencyMs: () => 5 }); // 10 000 items/s
  const d2 = c2.decisions().at(-1)!;
  assert.equal(d2.decision, 'increase');
  assert.equal(d2.bound, 'size');
  assert.ok(d2.maxItems >= 115 && d2.maxItems <= 125, `maxItems ${d2.maxItems} (expected 100 + 10 000/s × 2 ms)`);
  assert.equal(t2.window().maxWaitMs, 10);
});

test('AIMD (decrease: halve) halves the binding knob on a breach and holds in the band', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100, decrease: 'halve' });
  const t = fakeTarget(800, 10);
  c.attach(t);
  drive(clock, c, t, 500, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => 25 }); // the 10 ms wait is part of the breach
  let last = c.decisions().at(-1)!;
  assert.equal(last.decision, 'decrease');
  assert.equal(t.window().maxItems, 400);
  assert.equal(t.window().maxWaitMs, 10);
  drive(clock, c, t, 500, { reason: 'time', perBatch: 100, batchEveryMs: 5, latencyMs: () => 25 });
  last = c.decisions().at(-1)!;
  assert.equal(last.decision, 'decrease');
  assert.equal(t.window().maxWaitMs, 5);
  drive(clock, c, t, 1000, { reason: 'time', perBatch: 100, batchEveryMs: 5, latencyMs: () => 18 });
  last = c.decisions().at(-1)!;
  assert.equal(last.decision, 'hold');
  assert.match(last.reason, /band/);
  assert.equal(c.stats().decreases, 2);
});

test('AIMD (decrease: to-setpoint, the default) cuts the binding knob by the excess over the band, by half at most', () => {
  const clock = new FakeClock();
  // Timer-bound: latency = wait + an overhead that rises from 4 to 8 ms.
  const c = new AimdController({ sloMs: 20, marginMs: 1.5, clock, minPeriodMs: 500, minSamples: 100, slidingPeriods: 1 });
  assert.equal(c.decrease, 'to-setpoint');
  const t = fakeTarget(4096, 15);
  c.attach(t);
  let overhead = 4;
  const period = () => drive(clock, c, t, 500, { reason: 'time', perBatch: 100, batchEveryMs: 5, latencyMs: (w) => w.maxWaitMs + overhead });
  period();
  assert.equal(c.decisions().at(-1)!.decision, 'hold'); // 19 ms: in the band [18.5, 20]
  const before = t.window().maxWaitMs;
  overhead = 8; // p99 = 23 ms > 20: 4.5 ms over the band's lower edge (18.5), less than half the wait
  period();
  let d = c.decisions().at(-1)!;
  assert.equal(d.decision, 'decrease');
  const excess = d.decisionP99Ms! - 18.5;
  assert.ok(Math.abs(t.window().maxWaitMs - (before - excess)) < 0.01, `wait ${t.window().maxWaitMs}, expected ${before - excess}`);
  assert.ok(t.window().maxWaitMs > before / 2);
  assert.match(d.reason, /cut maxWaitMs \(timer-bound\) by the [\d.]+ ms over the band's lower edge/);
  // Back at the band's lower edge (the cut paid: it was the window's breach): no further cut.
  period();
  d = c.decisions().at(-1)!;
  assert.notEqual(d.decision, 'decrease', d.reason);
  assert.ok(d.p99Ms >= 18.4 && d.p99Ms <= 19, `p99 ${d.p99Ms}`);
  // An excess larger than half the knob's latency: halved, never more.
  overhead = 30;
  const w0 = t.window().maxWaitMs;
  period();
  assert.equal(c.decisions().at(-1)!.decision, 'hold'); // p99 − wait still > SLO: not the window's breach
  overhead = 15;
  period();
  d = c.decisions().at(-1)!;
  assert.equal(d.decision, 'decrease');
  assert.equal(t.window().maxWaitMs, Math.ceil((w0 / 2) * 1000) / 1000);
  assert.match(d.reason, /halve maxWaitMs/);
  // Size-bound: maxItems by the items that arrive in the excess (20k items/s here).
  const s = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100 });
  const ts = fakeTarget(800, 10);
  s.attach(ts);
  drive(clock, s, ts, 500, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => 25 });
  d = s.decisions().at(-1)!;
  assert.equal(d.decision, 'decrease');
  const cut = Math.round((d.ratePerSec * (d.decisionP99Ms! - 17)) / 1000);
  assert.equal(ts.window().maxItems, 800 - cut); // ≈ 640: 8 ms of 20k items/s, less than half
  assert.ok(ts.window().maxItems > 400);
  assert.throws(() => new AimdController({ sloMs: 20, decrease: 'third' as never }), /decrease/);
});

test('AIMD: a halving moves a knob by at most a factor of 2 (odd maxItems, a wait off the µs grid), and the log shows the window itself', () => {
  const clock = new FakeClock();
  const mk = () => new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100, decrease: 'halve' });
  const band = (c: AimdController, k: 'maxItems' | 'maxWaitMs') => {
    const v = c.decisions().map((d) => d[k]);
    return Math.max(...v) / Math.min(...v);
  };
  const size = mk();
  const ts = fakeTarget(1001, 10);
  size.attach(ts);
  drive(clock, size, ts, 500, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => 25 });
  assert.equal(size.decisions().at(-1)!.decision, 'decrease');
  assert.equal(ts.window().maxItems, 501); // not 500: 1001 / 500 > 2
  assert.ok(band(size, 'maxItems') <= 2);
  const time = mk();
  const tt = fakeTarget(4096, 14.0005);
  time.attach(tt);
  assert.equal(tt.window().maxWaitMs, 14.001); // the starting wait is put on the 1 µs grid
  drive(clock, time, tt, 500, { reason: 'time', perBatch: 100, batchEveryMs: 5, latencyMs: () => 25 });
  assert.equal(time.decisions().at(-1)!.decision, 'decrease');
  assert.equal(tt.window().maxWaitMs, 7.001); // 14.001 / 2, rounded up on the µs grid
  assert.equal(time.decisions().at(-1)!.maxWaitMs, tt.window().maxWaitMs);
  assert.ok(band(time, 'maxWaitMs') <= 2);
});

test('AIMD halves on a mild breach (≤ SLO + mildBreachMs) only when the period before breached too', () => {
  const clock = new FakeClock();
  // One period at a time (slidingPeriods 1): every item of a period has the same latency here.
  const c = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100, slidingPeriods: 1, breachTest: 'p99', decrease: 'halve' });
  const t = fakeTarget(800, 10);
  c.attach(t);
  const period = (lat: number) => drive(clock, c, t, 500, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => lat });
  period(21.5); // mild, first in a row: hold
  assert.equal(c.decisions().at(-1)!.decision, 'hold');
  assert.match(c.decisions().at(-1)!.reason, /first breach in a row/);
  assert.equal(t.window().maxItems, 800);
  period(18); // in the band: the streak ends
  period(21.5); // mild again, but alone: hold
  assert.equal(t.window().maxItems, 800);
  period(21.5); // second mild breach in a row: halve
  assert.equal(c.decisions().at(-1)!.decision, 'decrease');
  assert.equal(t.window().maxItems, 400);
  // Above SLO + 3 ms: halve at once.
  const c1 = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100, decrease: 'halve' });
  const t1 = fakeTarget(800, 10);
  c1.attach(t1);
  drive(clock, c1, t1, 500, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => 24 });
  assert.equal(t1.window().maxItems, 400);
  // mildBreachMs 0: every breach halves.
  const c0 = new AimdController({ sloMs: 20, marginMs: 3, mildBreachMs: 0, clock, minPeriodMs: 500, minSamples: 100, breachTest: 'p99', decrease: 'halve' });
  const t0 = fakeTarget(800, 10);
  c0.attach(t0);
  drive(clock, c0, t0, 500, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => 21.5 });
  assert.equal(t0.window().maxItems, 400);
  assert.throws(() => new AimdController({ sloMs: 20, mildBreachMs: -1 }), /mildBreachMs/);
});

test('AIMD undoes a halving that did not lower p99 (the breach was not the window\'s), keeps one that did', () => {
  // 20 items/ms arrive; 200 items fill in 10 ms < the 40 ms wait: size-bound, the window adds 10 ms.
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100 });
  const t = fakeTarget(200, 40);
  c.attach(t);
  const opts = (latencyMs: (w: { maxItems: number; maxWaitMs: number }) => number) => ({ reason: 'size' as const, perBatch: 100, batchEveryMs: 5, latencyMs });
  drive(clock, c, t, 500, opts(() => 25)); // a stall-made tail, whatever the window
  assert.equal(t.window().maxItems, 100);
  drive(clock, c, t, 500, opts(() => 25)); // halving gave back 5 ms, p99 did not move: undone
  let last = c.decisions().at(-1)!;
  assert.equal(last.decision, 'increase');
  assert.match(last.reason, /did not pay/);
  assert.equal(t.window().maxItems, 200);
  // A tail the window makes (fill time + 14 ms): the halving lowers p99 from 24 to 19 ms and stays.
  const c2 = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100 });
  const t2 = fakeTarget(200, 40);
  c2.attach(t2);
  drive(clock, c2, t2, 1000, opts((w) => w.maxItems / 20 + 14));
  last = c2.decisions().at(-1)!;
  assert.equal(t2.window().maxItems, 100);
  assert.equal(last.decision, 'hold');
  assert.match(last.reason, /band/);
});

test('AIMD respects its bounds on both knobs', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minItems: 50, maxItems: 300, minWaitMs: 1, maxWaitMs: 12, minPeriodMs: 200, minSamples: 50 });
  const t = fakeTarget(5000, 40); // out of bounds: clamped at attach
  c.attach(t);
  assert.deepEqual(t.window(), { maxItems: 300, maxWaitMs: 12 });
  drive(clock, c, t, 5000, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: () => 1 });
  assert.equal(t.window().maxItems, 300);
  drive(clock, c, t, 5000, { reason: 'time', perBatch: 100, batchEveryMs: 5, latencyMs: () => 1 });
  assert.equal(t.window().maxWaitMs, 12);
  // Breaches the window causes: latency = what the window adds + 19 ms (20 items/ms arrive).
  drive(clock, c, t, 5000, { reason: 'size', perBatch: 100, batchEveryMs: 5, latencyMs: (w) => Math.min(w.maxItems / 20, w.maxWaitMs) + 19 });
  assert.equal(t.window().maxItems, 50);
  drive(clock, c, t, 5000, { reason: 'time', perBatch: 100, batchEveryMs: 5, latencyMs: (w) => w.maxWaitMs + 19 });
  assert.equal(t.window().maxWaitMs, 1);
  for (const d of c.decisions()) {
    assert.ok(d.maxItems >= 50 && d.maxItems <= 300);
    assert.ok(d.maxWaitMs >= 1 && d.maxWaitMs <= 12);
  }
});

test('AIMD does not oscillate at steady load: it settles in the band and stays', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 200 });
  const t = fakeTarget(16, 5);
  c.attach(t);
  // A steady 20 000 items/s: batches cut by size every maxItems/rate ms, latency = fill time + 2 ms write.
  const rate = 20; // items per ms
  drive(clock, c, t, 60_000, {
    reason: (w) => (w.maxItems / rate < w.maxWaitMs ? 'size' : 'time'),
    perBatch: 50,
    batchEveryMs: 2.5,
    latencyMs: (w) => Math.min(w.maxItems / rate, w.maxWaitMs) + 2,
  });
  const d = c.decisions().filter((x) => x.decision !== 'start');
  const settled = d.filter((x) => x.tMs > 20_000);
  assert.ok(settled.length > 30);
  assert.ok(settled.every((x) => x.decision === 'hold'), 'only holds after settling');
  const items = settled.map((x) => x.maxItems);
  assert.ok(Math.max(...items) / Math.min(...items) <= 2);
  assert.ok(settled[0].p99Ms >= 17 && settled[0].p99Ms <= 20, `settled p99 ${settled[0].p99Ms}`);
});

test('static controller sets the window once and never moves it; selection by option', () => {
  const clock = new FakeClock();
  const s = createWindowController({ kind: 'static', maxItems: 256, maxWaitMs: 7, clock });
  assert.ok(s instanceof StaticController);
  const t = fakeTarget(10, 1);
  s.attach(t);
  assert.deepEqual(t.window(), { maxItems: 256, maxWaitMs: 7 });
  s.onCommitted?.([envelope(null, { bytes: 1, intendedAtMs: -100 })], 0);
  assert.equal(t.sets, 1);
  assert.ok(createWindowController({ kind: 'aimd', sloMs: 10 }) instanceof AimdController);
  assert.throws(() => createWindowController({ kind: 'pid' } as never), /controller/);
  assert.throws(() => new AimdController({ sloMs: 0 }), /sloMs/);
});

test('AIMD attaches to a real Pipeline and moves its window (fake clock, memory sink)', async () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 100, minSamples: 10, minSamplesToAct: 5 });
  let ops = 0;
  const sink = { name: 'mem', fixedCostKind: 'none' as const, write: async () => void ops++, fixedCostOps: () => ops, close: async () => {} };
  const p = new Pipeline({ sink, window: { maxItems: 64, maxWaitMs: 2 }, clock, observers: [c] });
  c.attach(p);
  for (let i = 0; i < 400; i++) {
    p.offer(envelope(i, { bytes: 10, intendedAtMs: clock.now() }));
    clock.advance(1);
    await Promise.resolve();
  }
  await p.close();
  assert.ok(c.stats().increases >= 1, JSON.stringify(c.decisions()));
  assert.ok(p.window().maxWaitMs > 2);
});

test('AIMD saturation guard: late full cuts double maxItems instead of halving it; late partial cuts hold', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 100 });
  const t = fakeTarget(64, 5);
  c.attach(t);
  // Every cut waited 40 ms (> maxWaitMs 5 + slack 5): the in-flight batch held it. p99 breaches.
  for (let k = 0; k < 110; k++) {
    clock.advance(5);
    const now = clock.now();
    c.onFlush({ reason: 'size', items: 64, bytes: 0, waitMs: 40 }, now);
    c.onCommitted(Array.from({ length: 64 }, () => envelope(null, { bytes: 1, intendedAtMs: now - 45 })), now);
  }
  const d = c.decisions().filter((x) => x.decision !== 'start');
  assert.equal(d[0].decision, 'increase');
  assert.match(d[0].reason, /saturated/);
  assert.equal(d[0].maxItems, 128);
  assert.equal(t.window().maxWaitMs, 5);
  const before = t.window().maxItems;
  for (let k = 0; k < 110; k++) {
    clock.advance(5);
    const now = clock.now();
    c.onFlush({ reason: 'time', items: 10, bytes: 0, waitMs: 40 }, now);
    c.onCommitted(Array.from({ length: 10 }, () => envelope(null, { bytes: 1, intendedAtMs: now - 45 })), now);
  }
  const last = c.decisions().at(-1)!;
  assert.equal(last.decision, 'hold');
  assert.match(last.reason, /no window helps/);
  assert.equal(t.window().maxItems, before);
});

test('AIMD holds on a breach the window cannot have caused (p99 − wait still above the SLO)', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 100 });
  const t = fakeTarget(512, 4);
  c.attach(t);
  // Timer-bound with a 4 ms wait, but p99 = 45 ms (a write stall): 45 − 4 > 20.
  drive(clock, c, t, 500, { reason: 'time', perBatch: 20, batchEveryMs: 5, latencyMs: () => 45 });
  const last = c.decisions().at(-1)!;
  assert.equal(last.decision, 'hold');
  assert.match(last.reason, /not the window/);
  assert.deepEqual(t.window(), { maxItems: 512, maxWaitMs: 4 });
});

test('AIMD takes one decision per period even when setWindow re-enters it (cuts during setWindow)', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 10 });
  const w = { maxItems: 64, maxWaitMs: 5 };
  // A target whose setWindow cuts a batch at once, as Pipeline.setWindow → pump → cut does.
  const t: WindowTarget = {
    window: () => ({ ...w }),
    setWindow(p) {
      Object.assign(w, p);
      c.onFlush({ reason: 'time', items: 1, bytes: 0, waitMs: 0 }, clock.now());
    },
  };
  c.attach(t);
  drive(clock, c, t, 500, { reason: 'time', perBatch: 20, batchEveryMs: 5, latencyMs: () => 24 });
  const d = c.decisions().filter((x) => x.decision !== 'start');
  assert.equal(d.length, 1);
  assert.equal(w.maxWaitMs, 2.5);
});

test('AIMD slow start: doubles the binding knob while p99 is under half the target, then steps additively', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, marginMs: 3, stepMs: 2, clock, minPeriodMs: 500, minSamples: 100 });
  const t = fakeTarget(64, 2);
  c.attach(t);
  drive(clock, c, t, 2000, { reason: 'time', perBatch: 20, batchEveryMs: 50, latencyMs: (w) => w.maxWaitMs + 1 });
  const waits = c.decisions().filter((x) => x.decision !== 'start').map((x) => x.maxWaitMs);
  // 2 → 4 → 8 (p99 3, 5 < 8.5: doubling), then p99 9 ≥ 8.5: +2 → 10.
  assert.deepEqual(waits.slice(0, 3), [4, 8, 10]);
});

test('controller metrics: window, last p99 and decisions by kind in the Prometheus exposition', async () => {
  const { default: client } = await import('prom-client');
  const { registerControllerMetrics } = await import('../../packages/sluice/src/metrics/controller-prometheus.js');
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 100, slowStart: false });
  const t = fakeTarget(64, 2);
  c.attach(t);
  drive(clock, c, t, 1000, { reason: 'time', perBatch: 20, batchEveryMs: 5, latencyMs: (w) => w.maxWaitMs + 1 });
  const registry = new client.Registry();
  registerControllerMetrics(registry, c);
  const text = await registry.metrics();
  assert.match(text, /sluice_window_max_items\{controller="aimd"\} 64/);
  assert.match(text, new RegExp(`sluice_window_max_wait_seconds\\{controller="aimd"\\} ${t.window().maxWaitMs / 1000}`));
  assert.match(text, /sluice_controller_decisions_total\{controller="aimd",decision="increase"\} 2/);
  assert.match(text, /sluice_controller_period_p99_seconds\{controller="aimd"\} [0-9.]+/);
  assert.match(text, /# TYPE sluice_controller_decisions_total counter/);
});

test('AIMD never halves maxItems below what keeps the sink at most half busy (2 × rate × write time)', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 100 });
  const t = fakeTarget(200, 50);
  c.attach(t);
  // 200-item batches every 10 ms (20 000 items/s), each taking 4 ms to write; p99 24 ms, size-bound.
  for (let k = 0; k < 52; k++) {
    clock.advance(6);
    c.onFlush({ reason: 'size', items: 200, bytes: 0, waitMs: 0 }, clock.now());
    clock.advance(4);
    const now = clock.now();
    c.onCommitted(Array.from({ length: 200 }, () => envelope(null, { bytes: 1, intendedAtMs: now - 24 })), now);
  }
  const d = c.decisions().find((x) => x.decision !== 'start')!;
  assert.equal(d.decision, 'decrease');
  // floor = 2 × 20 000/s × 4 ms = 160 > 200 / 2.
  assert.ok(d.maxItems >= 158 && d.maxItems <= 162, `maxItems ${d.maxItems}`);
  assert.match(d.reason, /half busy/);
});

test('controller metrics register on the pipeline exposition (the documented use) without a duplicate window gauge', async () => {
  const { registerControllerMetrics } = await import('../../packages/sluice/src/metrics/controller-prometheus.js');
  const { prometheusFor } = await import('../../packages/sluice/src/metrics/prometheus.js');
  const { Pipeline } = await import('../../packages/sluice/src/core/pipeline.js');
  const { PipelineMetrics } = await import('../../packages/sluice/src/metrics/metrics.js');
  const { MemorySink } = await import('../../packages/sluice/src/sinks/memory.js');
  const clock = new FakeClock();
  const sink = new MemorySink<null>();
  const metrics = new PipelineMetrics<null>(sink);
  const c = new AimdController<null>({ sloMs: 20, clock, minPeriodMs: 500, minSamples: 100 });
  const p = new Pipeline<null>({ sink, clock, window: { maxItems: 64, maxWaitMs: 2 }, observers: [metrics, c], name: 'pc' });
  c.attach(p);
  const expo = prometheusFor(p, metrics);
  registerControllerMetrics(expo.registry, c);
  const text = await expo.text();
  assert.match(text, /sluice_window_max_items\{pipeline="pc"\} 64/);
  assert.match(text, /sluice_controller_period_p99_seconds\{controller="aimd",pipeline="pc"\} [0-9.]+/);
  await p.close();
});

test('AIMD reads p99 over a sliding interval of the periods at the current window: one stalled period does not halve, a window really too large does', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, marginMs: 3, clock, minPeriodMs: 500, minSamples: 100 });
  const t = fakeTarget(4096, 10);
  c.attach(t);
  // One period: 100 batches of 100 items, `stalled` of every 100 items at `stallMs`, the rest at `baseMs`.
  const period = stallingPeriods(clock, c, 100, 5);
  assert.equal(period(18).decision, 'hold'); // in the band: the window stays, the interval starts
  assert.equal(period(18).decision, 'hold');
  // A stall delays 2% of this period's items to 26 ms: alone this period's p99 breaches, but
  // over the three periods at this window it is 0.7% of the samples.
  const d = period(18, 2, 26);
  assert.ok(d.p99Ms > 25, `period p99 ${d.p99Ms}`);
  assert.ok(d.decisionP99Ms! < 19, `sliding p99 ${d.decisionP99Ms}`);
  assert.equal(d.periodsUsed, 3);
  assert.equal(d.decision, 'hold');
  assert.match(d.reason, /over the last 3 periods/);
  assert.equal(t.window().maxWaitMs, 10);
  // A tail in every item of a period (24 ms > SLO + mildBreachMs): a third of the sliding
  // interval's samples, so its p99 breaches too, and the window halves.
  const h = period(24);
  assert.equal(h.decisionP99Ms, h.p99Ms);
  assert.equal(h.decision, 'decrease');
  assert.equal(t.window().maxWaitMs, 5);
  // The window moved: the interval starts afresh.
  assert.equal(period(12).periodsUsed, 1);
  assert.throws(() => new AimdController({ sloMs: 20, slidingPeriods: 0 }), /slidingPeriods/);
});

test('AIMD: a mild breach of the sliding interval that this period did not make (an earlier stall still in it) does not halve', () => {
  const clock = new FakeClock();
  const c = new AimdController({ sloMs: 20, marginMs: 1.5, mildBreachMs: 3, clock, minPeriodMs: 500, minSamples: 100, breachTest: 'p99', decrease: 'halve' });
  const t = fakeTarget(4096, 14);
  c.attach(t);
  const period = stallingPeriods(clock, c, 10, 50);
  period(19);
  period(19);
  // A stall: 5% of this period's items at 22 ms, 1.7% of the interval: a mild breach, first in a row.
  let d = period(19, 5, 22);
  assert.equal(d.decision, 'hold');
  assert.match(d.reason, /first breach in a row/);
  // The next period is clean, but the interval still holds the stall: no halving.
  d = period(19);
  assert.ok(d.decisionP99Ms! > 20 && d.p99Ms < 20, `interval ${d.decisionP99Ms}, period ${d.p99Ms}`);
  assert.equal(d.decision, 'hold');
  assert.match(d.reason, /this period alone did not breach/);
  assert.equal(t.window().maxWaitMs, 14);
  // A period that breaches on its own after a breach: halve.
  d = period(21.5);
  assert.equal(d.decision, 'decrease');
  assert.equal(t.window().maxWaitMs, 7);
});

test('AIMD breach test: a stall that delays a few items is within the 1% budget’s binomial noise (hold); the old p99 rule halves on it; a window really too large halves under both', () => {
  // One period of 10 timer flushes of 100 items (n = 1,000: the budget is 10 ± 3.1, so at
  // z = 2 up to 16 samples over the SLO are noise). A stall delays 15 of them to 28 ms (p99 − the 10 ms wait ≤ the SLO: the old rule blames the window).
  const run = (breachTest: 'binomial' | 'p99', stalled: number, stallMs: number) => {
    const clock = new FakeClock();
    const c = new AimdController({ sloMs: 20, marginMs: 1.5, mildBreachMs: 0, clock, minPeriodMs: 500, minSamples: 1000, slidingPeriods: 1, breachTest });
    const t = fakeTarget(4096, 10);
    c.attach(t);
    for (let b = 0; b < 10; b++) {
      clock.advance(50);
      const now = clock.now();
      c.onFlush({ reason: 'time', items: 100, bytes: 0, waitMs: 10 }, now);
      const batch: Envelope[] = [];
      for (let i = 0; i < 100; i++) batch.push(envelope(null, { bytes: 1, intendedAtMs: now - (b * 100 + i < stalled ? stallMs : 12) }));
      c.onCommitted(batch, now);
    }
    return { d: c.decisions().at(-1)!, w: t.window() };
  };
  const stallNew = run('binomial', 15, 28);
  assert.equal(stallNew.d.decision, 'hold');
  assert.match(stallNew.d.reason, /within sampling noise/);
  assert.equal(stallNew.d.overSlo, 15);
  assert.ok(Math.abs(stallNew.d.overSloAllowed! - 16.29) < 0.01);
  assert.equal(stallNew.w.maxWaitMs, 10);
  const stallOld = run('p99', 15, 28);
  assert.equal(stallOld.d.decision, 'decrease', 'the old rule halves on the stall');
  assert.equal(stallOld.w.maxWaitMs, 5);
  // 40 items over: beyond the noise, and p99 - the wait (30 − 10) still ≤ SLO: the window's breach.
  const tooLarge = run('binomial', 40, 29);
  assert.equal(tooLarge.d.decision, 'decrease');
  assert.equal(tooLarge.w.maxWaitMs, 5);
  assert.throws(() => new AimdController({ sloMs: 20, breachTest: 'x' as 'p99' }), /breachTest/);
  assert.throws(() => new AimdController({ sloMs: 20, breachZ: -1 }), /breachZ/);
});

test('IntervalHistogram.countAbove counts the samples whose bucket lies above a latency', () => {
  const h = new IntervalHistogram();
  for (let i = 0; i < 990; i++) h.recordMs(5);
  for (let i = 0; i < 10; i++) h.recordMs(40);
  assert.equal(h.countAbove(20), 10);
  assert.equal(h.countAbove(50), 0);
  assert.equal(h.countAbove(1), 1000);
});
