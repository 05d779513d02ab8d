/**
 * Property: for random arrival patterns (gaps on a FakeClock, item sizes), random windows,
 * queue policies and random write times, the pipeline loses nothing, duplicates nothing,
 * keeps order, never builds a batch over maxItems/maxBytes, never makes an item wait
 * needlessly, and its ledger balances at every step.
 *
 * On waiting: "no item waits past maxWaitMs plus the write time" holds whenever a write
 * slot is free at the item's deadline. When every slot is busy (the load exceeds what the
 * sink can take), no batcher can honour it; what must hold then is that the cut is delayed
 * only while every slot is busy. Both are checked, per batch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { FakeClock } from '../../packages/sluice/src/core/clock.js';
import { envelope, type Envelope, type FixedCostKind, type Sink } from '../../packages/sluice/src/core/types.js';
import type { OverflowPolicy } from '../../packages/sluice/src/core/options.js';

/** A sink whose every write takes a (random) number of fake-clock milliseconds. */
class TimedSink implements Sink<number> {
  readonly name = 'timed';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly batches: { values: number[]; bytes: number; start: number; end: number }[] = [];
  /** Values in the order writes started (= cut order). */
  readonly started: number[] = [];
  private n = 0;

  constructor(
    private readonly clock: FakeClock,
    private readonly delaysMs: number[],
  ) {}

  write(batch: readonly Envelope<number>[]): Promise<void> {
    const delay = this.delaysMs[this.n++ % this.delaysMs.length];
    for (const e of batch) this.started.push(e.value);
    const rec = { values: batch.map((e) => e.value), bytes: batch.reduce((s, e) => s + e.bytes, 0), start: this.clock.now(), end: -1 };
    return new Promise((resolve) =>
      this.clock.setTimer(() => {
        rec.end = this.clock.now();
        this.batches.push(rec);
        resolve();
      }, delay),
    );
  }

  fixedCostOps(): number {
    return this.n;
  }

  async close(): Promise<void> {}
}

const settle = () => new Promise<void>((r) => setImmediate(r));

const scenario = fc.record({
  maxItems: fc.integer({ min: 1, max: 12 }),
  maxBytes: fc.integer({ min: 50, max: 400 }),
  maxWaitMs: fc.integer({ min: 0, max: 15 }),
  maxInFlight: fc.integer({ min: 1, max: 3 }),
  queueSlack: fc.integer({ min: 0, max: 20 }),
  policy: fc.constantFrom<OverflowPolicy | 'huge'>('drop-newest', 'drop-oldest', 'huge'),
  delaysMs: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 8 }),
  arrivals: fc.array(fc.record({ gapMs: fc.integer({ min: 0, max: 6 }), bytes: fc.integer({ min: 1, max: 50 }) }), { minLength: 1, maxLength: 120 }),
});

test('property: nothing lost or duplicated, order kept, batches within bounds, no needless wait, ledger balanced', async () => {
  await fc.assert(
    fc.asyncProperty(scenario, async (sc) => {
      const clock = new FakeClock(0);
      const sink = new TimedSink(clock, sc.delaysMs);
      const dropped: number[] = [];
      /** In-flight batches after each event, by time: [time, inFlight]. */
      const occupancy: [number, number][] = [];
      let inFlight = 0;
      const cuts: { at: number; oldestAcceptedAt: number; first: number; items: number }[] = [];
      const acceptedAt = new Map<number, number>();
      /** The clock when each item was really accepted. */
      const realAcceptedAt = new Map<number, number>();
      const p = new Pipeline<number>({
        sink,
        clock,
        window: { maxItems: sc.maxItems, maxBytes: sc.maxBytes, maxWaitMs: sc.maxWaitMs, maxInFlight: sc.maxInFlight },
        queue:
          sc.policy === 'huge'
            ? { policy: 'block', maxItems: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER }
            : { maxItems: sc.maxItems + sc.queueSlack, maxBytes: sc.maxBytes + sc.queueSlack * 50, policy: sc.policy },
        observers: [
          {
            onAccepted: (e) => {
              // The stamp that starts a batch's deadline is never later than the acceptance.
              assert.ok(e.acceptedAtMs <= clock.now(), `item ${e.value} stamped ${e.acceptedAtMs} > ${clock.now()}`);
              acceptedAt.set(e.value, e.acceptedAtMs);
              realAcceptedAt.set(e.value, clock.now());
            },
            onFlush: (info, now) => {
              inFlight++;
              occupancy.push([now, inFlight]);
              cuts.push({ at: now, oldestAcceptedAt: now - info.waitMs, first: -1, items: info.items });
            },
            onCommitted: (_b, now) => {
              inFlight--;
              occupancy.push([now, inFlight]);
            },
            onDropped: (items, reason, now) => {
              if (typeof items === 'number') return;
              for (const e of items) dropped.push(e.value);
              if (reason === 'sink-failed' || reason === 'handler-failed') {
                inFlight--;
                occupancy.push([now, inFlight]);
              }
            },
          },
        ],
      });
      const offered: number[] = [];
      const step = async (ms: number) => {
        for (let i = 0; i < ms; i++) {
          clock.advance(1);
          await settle();
          assert.equal(p.stats().ledger.balanced, true);
        }
      };
      for (let i = 0; i < sc.arrivals.length; i++) {
        const a = sc.arrivals[i];
        await step(a.gapMs);
        offered.push(i);
        const r = p.offer(envelope(i, { bytes: a.bytes, intendedAtMs: clock.now(), id: String(i) }));
        assert.notEqual(r, 'full', 'only block can answer full');
        assert.equal(p.stats().ledger.balanced, true);
      }
      const closing = p.close();
      let closed = false;
      void closing.then(() => (closed = true));
      for (let i = 0; i < 100_000 && !closed; i++) await step(1);
      assert.equal(closed, true, 'close() drained');

      // Lost / duplicated / order.
      const committed = sink.batches.flatMap((b) => b.values);
      assert.equal(new Set(committed).size, committed.length, 'no duplicate commits');
      assert.equal(new Set([...committed, ...dropped]).size, committed.length + dropped.length, 'nothing both committed and dropped');
      assert.deepEqual([...committed, ...dropped].sort((x, y) => x - y), offered, 'every offered item committed or dropped');
      // Batches are cut in offer order; with one write at a time they also commit in it.
      // (With maxInFlight > 1 concurrent writes may finish out of order, by design.)
      for (let i = 1; i < sink.started.length; i++) assert.ok(sink.started[i - 1] < sink.started[i], 'cut order = offer order');
      if (sc.maxInFlight === 1) for (let i = 1; i < committed.length; i++) assert.ok(committed[i - 1] < committed[i], 'commit order = offer order');
      if (sc.policy === 'huge') assert.equal(dropped.length, 0);
      if (sc.policy === 'drop-newest') {
        // Only newcomers are dropped: each dropped item was refused at its offer.
        for (const d of dropped) assert.equal(acceptedAt.has(d), false);
      }

      // Batch bounds.
      for (const b of sink.batches) {
        assert.ok(b.values.length >= 1 && b.values.length <= sc.maxItems, `batch of ${b.values.length} > maxItems ${sc.maxItems}`);
        assert.ok(b.bytes <= sc.maxBytes, `batch of ${b.bytes} B > maxBytes ${sc.maxBytes}`);
      }

      // Waiting. Occupancy at the end of instant t (after every event stamped t).
      const occAt = (t: number) => {
        let v = 0;
        for (const [time, n] of occupancy) if (time <= t) v = n;
        return v;
      };
      const maxDelay = Math.max(...sc.delaysMs);
      for (const c of cuts) {
        const deadline = c.oldestAcceptedAt + sc.maxWaitMs;
        if (c.at <= deadline) continue;
        // Cut after the deadline: legitimate only if every slot was busy from the deadline
        // until the cut (or the pipeline was draining, which only cuts earlier).
        for (let t = deadline; t < c.at; t++)
          assert.equal(occAt(t), sc.maxInFlight, `batch cut at ${c.at}, deadline ${deadline}, but a slot was free at ${t}`);
      }
      // A cut's waitMs is never shorter than its oldest item's real wait.
      let pos = 0;
      for (const c of cuts) {
        const head = sink.started[pos];
        assert.ok(c.oldestAcceptedAt <= realAcceptedAt.get(head)!, `cut at ${c.at}: waited from ${c.oldestAcceptedAt}, head accepted at ${realAcceptedAt.get(head)}`);
        pos += c.items;
      }
      // Every batch completes within its write time.
      for (const b of sink.batches) assert.ok(b.end - b.start <= maxDelay);

      const l = p.stats().ledger;
      assert.equal(l.balanced, true);
      assert.equal(l.inFlight, 0);
      assert.equal(l.committed, committed.length);
      assert.equal(l.dropped, dropped.length);
      assert.equal(l.accepted, offered.length);
    }),
    { numRuns: 120, seed: Number(process.env.FC_SEED ?? 20261127) },
  );
});

test('property: with a free write slot, no item waits past maxWaitMs plus the write time', async () => {
  // The load stays under what the sink can take: maxInFlight slots, each write ≤ maxDelay,
  // at least one arrival gap ≥ the write time between windows. Here the bound is exact.
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        maxItems: fc.integer({ min: 1, max: 8 }),
        maxWaitMs: fc.integer({ min: 0, max: 10 }),
        maxInFlight: fc.integer({ min: 1, max: 3 }),
        delayMs: fc.integer({ min: 1, max: 5 }),
        arrivals: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 60 }),
      }),
      async (sc) => {
        const clock = new FakeClock(0);
        const sink = new TimedSink(clock, [sc.delayMs]);
        const p = new Pipeline<number>({
          sink,
          clock,
          window: { maxItems: sc.maxItems, maxWaitMs: sc.maxWaitMs, maxInFlight: sc.maxInFlight },
          queue: { policy: 'block', maxItems: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER },
        });
        const acceptedAt: number[] = [];
        const step = async (ms: number) => {
          for (let i = 0; i < ms; i++) {
            clock.advance(1);
            await settle();
          }
        };
        // Arrivals in bursts of at most maxItems × maxInFlight per write time: sustainable.
        let i = 0;
        for (const gap of sc.arrivals) {
          await step(gap === 0 ? sc.delayMs + sc.maxWaitMs : gap + sc.delayMs);
          // With maxWaitMs=0 every item is its own batch: a burst needs a slot per item.
          const burst = Math.min(sc.maxItems, 1 + gap, sc.maxWaitMs === 0 ? sc.maxInFlight : Infinity);
          for (let k = 0; k < burst; k++) {
            acceptedAt.push(clock.now());
            p.offer(envelope(i++, { bytes: 1, intendedAtMs: clock.now() }));
          }
        }
        let closed = false;
        // Let every deadline pass before closing, so no batch is cut by the drain.
        await step(sc.maxWaitMs + 2 * sc.delayMs + 1);
        void p.close().then(() => (closed = true));
        for (let k = 0; k < 10_000 && !closed; k++) await step(1);
        assert.equal(closed, true, 'close() drained');
        for (const b of sink.batches)
          for (const v of b.values) {
            const waited = b.end - acceptedAt[v];
            assert.ok(waited <= sc.maxWaitMs + sc.delayMs, `item ${v} waited ${waited} ms > ${sc.maxWaitMs} + ${sc.delayMs}`);
          }
        assert.equal(sink.batches.flatMap((b) => b.values).length, i);
        assert.equal(p.stats().ledger.balanced, true);
      },
    ),
    { numRuns: 100, seed: Number(process.env.FC_SEED ?? 20261127) },
  );
});
