/**
 * The pipeline's flush triggers, in-flight limit and overflow policies, driven by a
 * FakeClock and a sink whose writes complete only when the test says so.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { FakeClock, systemClock } from '../../packages/sluice/src/core/clock.js';
import { ErrorCode, SinkError, SluiceError } from '../../packages/sluice/src/core/errors.js';

const systemClockForTest = () => systemClock;
import { envelope, type Envelope, type FixedCostKind, type FlushInfo, type PipelineObserver, type Sink } from '../../packages/sluice/src/core/types.js';
import type { QueueOptions, WindowOptions } from '../../packages/sluice/src/core/options.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';

/** A sink whose writes stay pending until `release()` (or `fail()`) settles the oldest one. */
class GateSink implements Sink<number> {
  readonly name = 'gate';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly started: number[][] = [];
  readonly committed: number[] = [];
  private pending: { batch: number[]; resolve: () => void; reject: (e: unknown) => void }[] = [];

  write(batch: readonly Envelope<number>[]): Promise<void> {
    const values = batch.map((e) => e.value);
    this.started.push(values);
    return new Promise((resolve, reject) => this.pending.push({ batch: values, resolve, reject }));
  }

  inFlight(): number {
    return this.pending.length;
  }

  release(): void {
    const w = this.pending.shift();
    assert.ok(w, 'no write pending');
    this.committed.push(...w.batch);
    w.resolve();
  }

  fail(error: unknown = new Error('boom')): void {
    const w = this.pending.shift();
    assert.ok(w, 'no write pending');
    w.reject(error);
  }

  fixedCostOps(): number {
    return this.started.length;
  }

  async close(): Promise<void> {}
}

/** Lets promise callbacks (write completions, put() resolutions) run. */
const settle = () => new Promise<void>((r) => setImmediate(r));

/** Lets every pending write of a GateSink commit, one at a time, until `closing` (a close()) resolves. */
async function releaseAll(sink: GateSink, closing: Promise<void>): Promise<void> {
  while (sink.inFlight() > 0) {
    sink.release();
    await settle();
  }
  await closing;
}

let nextValue = 0;
function item(clock: FakeClock, bytes = 10, value = nextValue++): Envelope<number> {
  return envelope(value, { bytes, intendedAtMs: clock.now(), id: String(value) });
}

function setup(window: Partial<WindowOptions>, queue: Partial<QueueOptions> = {}) {
  const clock = new FakeClock(1000);
  const sink = new GateSink();
  const flushes: FlushInfo[] = [];
  const dropped: number[] = [];
  const observer: PipelineObserver<number> = {
    onFlush: (info) => void flushes.push(info),
    onDropped: (items) => {
      if (typeof items !== 'number') for (const e of items) dropped.push(e.value);
    },
  };
  const p = new Pipeline<number>({ sink, window, queue, clock, observers: [observer] });
  return { clock, sink, p, flushes, dropped };
}

/** close(), releasing every write until the drain completes. */
async function drainAll(p: Pipeline<number>, sink: GateSink): Promise<void> {
  const closing = p.close();
  for (let i = 0; i < 10_000 && p.state() !== 'closed'; i++) {
    if (sink.inFlight() > 0) sink.release();
    await settle();
  }
  await closing;
}

function assertBalanced(p: Pipeline<number>): void {
  const l = p.stats().ledger;
  assert.equal(l.balanced, true, JSON.stringify(l));
  assert.equal(l.accepted, l.committed + l.dropped + l.deadLettered + l.inFlight);
}

// ------------------------------------------------------------------ flush triggers

test('size: a batch is cut the moment it holds maxItems, not before', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 4, maxWaitMs: 1000 });
  for (let i = 0; i < 3; i++) assert.equal(p.offer(item(clock)), 'accepted');
  assert.equal(sink.started.length, 0);
  assert.equal(p.state(), 'lingering');
  p.offer(item(clock));
  assert.equal(sink.started.length, 1);
  assert.equal(sink.started[0].length, 4);
  assert.deepEqual(flushes.map((f) => f.reason), ['size']);
  assert.equal(flushes[0].waitMs, 0);
  sink.release();
  await settle();
  assert.equal(p.stats().ledger.committed, 4);
  assert.equal(p.state(), 'idle');
  assert.equal(clock.pendingTimers(), 0, 'no deadline timer left armed once the queue is empty');
  assertBalanced(p);
});

test('bytes: a batch never exceeds maxBytes; reaching it exactly cuts at once', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 100, maxBytes: 100, maxWaitMs: 1000 });
  for (let i = 0; i < 4; i++) p.offer(item(clock, 25));
  assert.equal(sink.started.length, 1, '4 × 25 B = maxBytes exactly');
  assert.equal(sink.started[0].length, 4);
  sink.release();
  await settle();
  // 3 × 30 B = 90 B waits; the 4th (120 B) would overflow: the first 3 go, the 4th stays.
  for (let i = 0; i < 3; i++) p.offer(item(clock, 30));
  assert.equal(sink.started.length, 1);
  p.offer(item(clock, 30));
  assert.equal(sink.started.length, 2);
  assert.equal(sink.started[1].length, 3);
  assert.deepEqual(flushes.map((f) => f.reason), ['bytes', 'bytes']);
  assert.equal(p.stats().queueItems, 1);
  assert.equal(p.stats().queueBytes, 30);
  sink.release();
  await settle();
  clock.advance(1000);
  sink.release();
  await settle();
  assert.equal(p.stats().ledger.committed, 8);
  assertBalanced(p);
});

test('bytes: an item larger than maxBytes is refused with SLUICE_ITEM_TOO_LARGE, never accepted', () => {
  const { clock, p } = setup({ maxItems: 10, maxBytes: 100 });
  assert.throws(() => p.offer(item(clock, 101)), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.ItemTooLarge);
  assert.equal(p.stats().ledger.accepted, 0);
  assert.equal(p.stats().ledger.rejected, 1);
});

test('time: the deadline is absolute from the first item, not reset by later items', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 100, maxWaitMs: 10 });
  p.offer(item(clock));
  clock.advance(6);
  p.offer(item(clock));
  clock.advance(3);
  assert.equal(sink.started.length, 0, 'at 9 ms nothing is due');
  clock.advance(1);
  assert.equal(sink.started.length, 1, 'at 10 ms after the first item the batch is cut');
  assert.equal(sink.started[0].length, 2);
  assert.deepEqual(flushes, [{ reason: 'time', items: 2, bytes: 20, waitMs: 10 }]);
  sink.release();
  await settle();
  // The next batch's deadline starts from its own first item.
  clock.advance(50);
  p.offer(item(clock));
  clock.advance(9);
  assert.equal(sink.started.length, 1);
  clock.advance(1);
  assert.equal(sink.started.length, 2);
  sink.release();
  await settle();
  assertBalanced(p);
});

test('time: maxWaitMs=0 cuts every item at once', () => {
  const { clock, sink, p } = setup({ maxItems: 100, maxWaitMs: 0, maxInFlight: 5 });
  p.offer(item(clock));
  p.offer(item(clock));
  assert.deepEqual(sink.started.map((b) => b.length), [1, 1]);
});

test('drain: close() cuts what is queued regardless of the window, resolves after the write, then refuses', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 100, maxWaitMs: 1000 });
  p.offer(item(clock));
  p.offer(item(clock));
  let closed = false;
  const closing = p.close().then(() => (closed = true));
  assert.equal(p.state(), 'draining');
  assert.equal(sink.started.length, 1);
  assert.deepEqual(flushes.map((f) => f.reason), ['drain']);
  await settle();
  assert.equal(closed, false, 'close() waits for the last write');
  sink.release();
  await closing;
  assert.equal(p.state(), 'closed');
  assert.equal(p.stats().ledger.committed, 2);
  assert.throws(() => p.offer(item(clock)), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.Closed);
  await assert.rejects(p.put(item(clock)), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.Closed);
  assert.equal(p.close(), p.close(), 'close() is idempotent');
  assertBalanced(p);
});

test('flush(): cuts everything accepted so far and resolves once it is handled', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 3, maxWaitMs: 1000, maxInFlight: 1 });
  for (let i = 0; i < 5; i++) p.offer(item(clock));
  // One size cut is in flight; 2 items wait.
  let flushed = false;
  const f = p.flush().then(() => (flushed = true));
  p.offer(item(clock)); // accepted after flush(): not part of it
  sink.release();
  await settle();
  assert.equal(sink.started.length, 2);
  assert.equal(sink.started[1].length, 3, 'the drain cut takes the two flushed items and the newer one behind them');
  assert.equal(flushed, false);
  sink.release();
  await f;
  assert.equal(flushed, true);
  assert.deepEqual(flushes.map((x) => x.reason), ['size', 'size']);
  // Flushing a partial window: reason drain.
  p.offer(item(clock));
  const f2 = p.flush();
  assert.deepEqual(flushes.map((x) => x.reason), ['size', 'size', 'drain']);
  sink.release();
  await f2;
  await p.flush(); // nothing outstanding: resolves at once
  assertBalanced(p);
});

// ------------------------------------------------------------------ acceptance stamps

/** A FakeClock that counts its readings. */
class CountingClock extends FakeClock {
  reads = 0;
  override now(): number {
    this.reads++;
    return super.now();
  }
  /** The time, without counting a reading. */
  at(): number {
    return super.now();
  }
}

test('stamps: one clock reading per batch, not per item; a stamp is never later than the acceptance', async () => {
  const clock = new CountingClock(1000);
  const sink = new GateSink();
  const p = new Pipeline<number>({ sink, clock, window: { maxItems: 100, maxWaitMs: 1000 } });
  const acceptedAt = new Map<Envelope<number>, number>();
  const offer = (n: number) => {
    for (let i = 0; i < n; i++) {
      const e = envelope(nextValue++, { bytes: 10, intendedAtMs: clock.at() });
      acceptedAt.set(e, clock.at());
      p.offer(e);
      clock.advance(1);
    }
  };
  offer(99);
  assert.equal(clock.reads, 1, 'the item that opened the batch read the clock; the 98 behind it did not');
  offer(101); // the 100th item fills the window: a cut (one reading); 100 more queue behind it
  assert.equal(sink.started.length, 1);
  assert.equal(clock.reads, 3, 'one reading for the cut, one for the item opening the next batch, none for the 99 behind it');
  for (const [e, t] of acceptedAt) assert.ok(e.acceptedAtMs <= t, `stamp ${e.acceptedAtMs} > acceptance ${t}`);
  sink.release();
  await settle();
  assert.deepEqual(sink.started.map((b) => b.length), [100, 100]);
  assert.equal(clock.reads, 4, 'the completion and the cut it allows share one reading');
  sink.release();
  await settle();
  assert.equal(p.stats().ledger.committed, 200);
  assertBalanced(p);
});

test('stamps: an item queued behind others gets the latest reading, so its batch is never cut later than its own deadline', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 4, maxWaitMs: 10, maxInFlight: 1 });
  for (let i = 0; i < 4; i++) p.offer(item(clock)); // t=1000: size cut, batch A written
  clock.advance(3);
  const x = item(clock);
  p.offer(x); // t=1003: opens the next batch (fresh reading)
  clock.advance(2);
  const rest = [0, 1, 2, 3, 4].map(() => item(clock));
  for (const e of rest) p.offer(e); // t=1005: behind x, stamped with the latest reading (1003)
  assert.equal(x.acceptedAtMs, 1003);
  for (const e of rest.slice(0, 3)) assert.equal(e.acceptedAtMs, 1003, 'the latest reading, ≤ the acceptance (1005)');
  assert.equal(rest[3].acceptedAtMs, 1005, 'the 4th queued item heads the next full window: a fresh reading');
  assert.equal(rest[4].acceptedAtMs, 1005, 'behind it, the latest reading is that one');
  assert.equal(sink.started.length, 1, 'the window is full but the write slot is busy');
  clock.advance(20); // t=1025; every deadline has passed while A was being written
  sink.release();
  await settle();
  // B = x + 3 behind it (size); the remainder (2 items accepted at 1005, due at 1015) is
  // cut as soon as the slot frees again, not 10 ms after B's cut.
  assert.deepEqual(sink.started.map((b) => b.length), [4, 4]);
  sink.release();
  await settle();
  assert.deepEqual(sink.started.map((b) => b.length), [4, 4, 2]);
  assert.deepEqual(flushes.map((f) => [f.reason, f.waitMs]), [['size', 0], ['size', 22], ['time', 20]]);
  assert.ok(flushes[2].waitMs >= 1025 - 1005, 'waitMs is never shorter than the real wait');
  sink.release();
  await settle();
  assertBalanced(p);
});

test('stamps: in a backlog cut by size, the next window\'s deadline runs from its head\'s real arrival, so it fills instead of being cut by the timer', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 4, maxWaitMs: 10, maxInFlight: 1 });
  for (let i = 0; i < 4; i++) p.offer(item(clock)); // t=1000: size cut, batch A written
  const late: Envelope<number>[] = [];
  for (let k = 0; k < 7; k++) {
    clock.advance(1); // t=1001..1007: a backlog builds while A is written
    const e = item(clock);
    late.push(e);
    p.offer(e);
  }
  assert.equal(late[4].acceptedAtMs, 1005, 'the head of the window after next read the clock when it arrived');
  clock.advance(2); // t=1009: A done; B = late[0..3] (size); late[4..6] remain, due at 1015
  sink.release();
  await settle();
  clock.advance(3); // t=1012: B done; the remainder is not due yet (it would be from 1001 + 10)
  sink.release();
  await settle();
  assert.equal(sink.started.length, 2, 'the 3-item remainder lingers: its deadline is 1015');
  p.offer(item(clock)); // t=1012: the window fills
  assert.deepEqual(sink.started.map((b) => b.length), [4, 4, 4]);
  assert.deepEqual(flushes.map((f) => f.reason), ['size', 'size', 'size']);
  sink.release();
  await settle();
  assertBalanced(p);
});

test('stamps: the deadline stays absolute from the batch opener when items join a lingering batch', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 100, maxWaitMs: 10, maxInFlight: 1 });
  p.offer(item(clock)); // t=1000 opens
  for (let k = 0; k < 9; k++) {
    clock.advance(1);
    p.offer(item(clock));
  }
  assert.equal(sink.started.length, 0, 'at 1009 nothing is due');
  clock.advance(1);
  assert.deepEqual(sink.started.map((b) => b.length), [10]);
  assert.deepEqual(flushes, [{ reason: 'time', items: 10, bytes: 100, waitMs: 10 }]);
  sink.release();
  await settle();
  // An idle gap, then a new batch: its opener reads the clock afresh.
  clock.advance(500);
  const y = item(clock);
  p.offer(y);
  assert.equal(y.acceptedAtMs, 1510);
  clock.advance(10);
  assert.equal(sink.started.length, 2);
  sink.release();
  await settle();
  assertBalanced(p);
});

test('timers: a steady stream re-arms the deadline timer once per maxWaitMs, not once per batch, and cuts are unchanged', async () => {
  class TimerCountingClock extends FakeClock {
    set = 0;
    override setTimer(fn: () => void, delayMs: number) {
      this.set++;
      return super.setTimer(fn, delayMs);
    }
  }
  const clock = new TimerCountingClock(1000);
  const sink = new MemorySink<number>();
  const flushes: FlushInfo[] = [];
  const p = new Pipeline<number>({ sink, clock, window: { maxItems: 4, maxWaitMs: 10 }, observers: [{ onFlush: (f) => void flushes.push(f) }] });
  // 5 items per ms: a size cut every 4 items leaves a new head (a later deadline) behind it
  // three times out of four; the queue empties every 4 ms.
  for (let t = 0; t < 40; t++) {
    for (let k = 0; k < 5; k++) p.offer(item(clock));
    await settle();
    clock.advance(1);
  }
  assert.equal(flushes.length, 50);
  assert.ok(flushes.every((f) => f.reason === 'size' && f.waitMs <= 10));
  assert.ok(clock.set <= 11, `${clock.set} timers set for 50 batches`);
  await p.close();
  assert.equal(clock.pendingTimers(), 0);
  assert.equal(p.stats().ledger.committed, 200);
});

test('bytes in: the ledger counts the bytes of the items queued, not of those dropped at the door', () => {
  const { clock, p } = fillToEdge('drop-newest');
  assert.equal(p.ledger.bytesIn, 60);
  assert.equal(p.offer(item(clock, 25)), 'dropped');
  assert.equal(p.ledger.bytesIn, 60);
});

// ------------------------------------------------------------------ maxInFlight

test('maxInFlight=1: one write at a time; items accumulate meanwhile and go in the next batch', async () => {
  const { clock, sink, p } = setup({ maxItems: 4, maxWaitMs: 0, maxInFlight: 1 });
  p.offer(item(clock));
  for (let i = 0; i < 6; i++) p.offer(item(clock));
  assert.equal(sink.inFlight(), 1);
  assert.equal(p.state(), 'flushing');
  assert.equal(p.stats().queueItems, 6);
  sink.release();
  await settle();
  assert.deepEqual(sink.started.map((b) => b.length), [1, 4], 'the next batch is as full as the window allows');
  sink.release();
  await settle();
  sink.release();
  await settle();
  assert.deepEqual(sink.started.map((b) => b.length), [1, 4, 2]);
  assert.equal(p.stats().ledger.committed, 7);
  assertBalanced(p);
});

test('maxInFlight=2: two writes run concurrently, the third waits for a completion', async () => {
  const { clock, sink, p } = setup({ maxItems: 2, maxWaitMs: 0, maxInFlight: 2 });
  for (let i = 0; i < 6; i++) p.offer(item(clock));
  assert.equal(sink.inFlight(), 2);
  assert.equal(p.stats().inFlightBatches, 2);
  assert.equal(p.stats().inFlightItems, 2);
  assert.equal(p.stats().queueItems, 4);
  assertBalanced(p);
  sink.release();
  await settle();
  assert.equal(sink.inFlight(), 2);
  assert.equal(sink.started.length, 3);
  sink.release();
  sink.release();
  await settle();
  sink.release();
  await settle();
  assert.equal(p.stats().ledger.committed, 6);
  assert.deepEqual(sink.committed, [...sink.started.flat()]);
  assertBalanced(p);
});

// ------------------------------------------------------------------ overflow policies

/** Window 2 items, queue 4 items, one write in flight: after 6 offers the queue is exactly full. */
function fillToEdge(policy: QueueOptions['policy'], blockTimeoutMs = 100) {
  const s = setup({ maxItems: 2, maxWaitMs: 1000, maxInFlight: 1 }, { maxItems: 4, policy, blockTimeoutMs });
  const values: number[] = [];
  for (let i = 0; i < 6; i++) {
    const e = item(s.clock);
    values.push(e.value);
    assert.equal(s.p.offer(e), 'accepted', `offer ${i} fits`);
  }
  assert.equal(s.p.stats().queueItems, 4);
  assert.equal(s.sink.inFlight(), 1);
  return { ...s, values };
}

test('block: exactly full accepts; one over waits, then succeeds when space frees', async () => {
  const { clock, sink, p, values } = fillToEdge('block');
  const extra = item(clock);
  assert.equal(p.offer(extra), 'full', 'offer() never waits and changes nothing');
  assert.equal(p.stats().ledger.accepted, 6);
  let result: string | undefined;
  const waiting = p.put(extra).then((r) => (result = r));
  await settle();
  assert.equal(result, undefined);
  assert.equal(p.stats().blockedProducers, 1);
  clock.advance(50);
  sink.release(); // frees the slot: the next 2 items are cut, making room
  await waiting;
  assert.equal(result, 'accepted');
  assert.equal(p.stats().blockedProducers, 0);
  await drainAll(p, sink);
  assert.deepEqual(sink.committed, [...values, extra.value], 'order kept, the waiter last');
  assertBalanced(p);
});

test('block: no space within blockTimeoutMs ends in SLUICE_QUEUE_FULL (retryable); the item was never accepted', async () => {
  const { clock, p } = fillToEdge('block', 100);
  const waiting = p.put(item(clock));
  clock.advance(99);
  await settle();
  assert.equal(p.stats().blockedProducers, 1);
  clock.advance(1);
  await assert.rejects(waiting, (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.QueueFull && e.retryable);
  assert.equal(p.stats().blockedProducers, 0, 'a producer that timed out is no longer counted as blocked');
  const l = p.stats().ledger;
  assert.equal(l.accepted, 6);
  assert.equal(l.rejected, 1);
  assert.equal(l.dropped, 0);
  assertBalanced(p);
});

test('block: blocked producers are admitted in FIFO order, and newcomers queue behind them', async () => {
  const { clock, sink, p, values } = fillToEdge('block', 10_000);
  const order: number[] = [];
  const a = item(clock), b = item(clock), c = item(clock);
  const waits = [a, b, c].map((e) => p.put(e).then(() => order.push(e.value)));
  await settle();
  assert.equal(p.stats().blockedProducers, 3);
  // FIFO: while producers wait, a newcomer cannot jump the line, even through offer().
  const d = item(clock);
  assert.equal(p.offer(d), 'full');
  sink.release();
  await settle();
  assert.deepEqual(order, [a.value, b.value], 'two slots freed, the two oldest waiters got them');
  sink.release();
  await Promise.all(waits);
  assert.deepEqual(order, [a.value, b.value, c.value]);
  await drainAll(p, sink);
  assert.deepEqual(sink.committed, [...values, a.value, b.value, c.value]);
  assertBalanced(p);
});

test('block: close() rejects blocked producers with SLUICE_CLOSED and still drains what was accepted', async () => {
  const { clock, sink, p } = fillToEdge('block', 10_000);
  const waiting = p.put(item(clock));
  await settle();
  const closing = p.close();
  await assert.rejects(waiting, (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.Closed);
  await releaseAll(sink, closing);
  const l = p.stats().ledger;
  assert.equal(l.committed, 6);
  assert.equal(l.rejected, 1);
  assertBalanced(p);
});

test('drop-newest: exactly full accepts; one over is dropped, counted by reason, and never written', async () => {
  const { clock, sink, p, values, dropped } = fillToEdge('drop-newest');
  const extra = item(clock);
  assert.equal(p.offer(extra), 'dropped');
  assert.equal(await p.put(item(clock)), 'dropped', 'put() does not wait under drop-newest');
  const l = p.stats().ledger;
  assert.equal(l.accepted, 8, 'a dropped item was accepted, then dropped: the ledger sees it');
  assert.deepEqual(l.droppedByReason, { 'drop-newest': 2 });
  assert.equal(dropped[0], extra.value);
  assertBalanced(p);
  const closing = p.close();
  await releaseAll(sink, closing);
  assert.deepEqual(sink.committed, values);
  assertBalanced(p);
});

test('drop-oldest: one over evicts the oldest queued item (not the batch being written)', async () => {
  const { clock, sink, p, values, dropped } = fillToEdge('drop-oldest');
  const extra = item(clock);
  assert.equal(p.offer(extra), 'accepted');
  // values[0..1] are being written; values[2] is the oldest queued.
  assert.deepEqual(dropped, [values[2]]);
  assert.deepEqual(p.stats().ledger.droppedByReason, { 'drop-oldest': 1 });
  assert.equal(p.stats().queueItems, 4);
  assertBalanced(p);
  const closing = p.close();
  await releaseAll(sink, closing);
  assert.deepEqual(sink.committed, [values[0], values[1], values[3], values[4], values[5], extra.value]);
  const l = p.stats().ledger;
  assert.equal(l.accepted, 7);
  assert.equal(l.committed + l.dropped, 7);
  assertBalanced(p);
});

test('a queue bound no load reaches never refuses (how the lab builds its unbounded contrast)', async () => {
  const { clock, sink, p } = setup({ maxItems: 2, maxWaitMs: 1000, maxInFlight: 1 }, { maxItems: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER, policy: 'block' });
  for (let i = 0; i < 1000; i++) assert.equal(p.offer(item(clock)), 'accepted');
  assert.equal(p.stats().queueItems, 998);
  const closing = p.close();
  await releaseAll(sink, closing);
  assert.equal(p.stats().ledger.committed, 1000);
  assertBalanced(p);
});

// ------------------------------------------------------------------ window changes and failures

test('setWindow(): a smaller window cuts what now fills it; bad values are refused', async () => {
  const { clock, sink, p, flushes } = setup({ maxItems: 10, maxWaitMs: 1000 }, { maxItems: 20 });
  for (let i = 0; i < 3; i++) p.offer(item(clock));
  assert.equal(sink.started.length, 0);
  p.setWindow({ maxItems: 2 });
  assert.equal(p.window().maxItems, 2);
  assert.deepEqual(sink.started.map((b) => b.length), [2]);
  assert.equal(flushes[0].reason, 'size');
  p.setWindow({ maxWaitMs: 5 });
  sink.release();
  await settle();
  clock.advance(5);
  assert.deepEqual(sink.started.map((b) => b.length), [2, 1]);
  assert.equal(flushes[1].reason, 'time');
  assert.throws(() => p.setWindow({ maxItems: 0 }), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.InvalidOption);
  assert.throws(() => p.setWindow({ maxItems: 21 }), (e: unknown) => e instanceof SluiceError && /queue\.maxItems/.test(e.message));
  assert.equal(p.window().maxItems, 2, 'a refused change leaves the window as it was');
  sink.release();
  await settle();
  assertBalanced(p);
});

test('a sink rejecting a batch for its records: the default handler drops it as sink-failed, reported through onError; the pipeline goes on', async () => {
  const errors: unknown[] = [];
  const clock = new FakeClock();
  const sink = new GateSink();
  const p = new Pipeline<number>({ sink, window: { maxItems: 2, maxWaitMs: 0 }, clock, onError: () => {}, observers: [{ onError: (e) => void errors.push(e) }] });
  p.offer(item(clock));
  p.offer(item(clock));
  p.offer(item(clock));
  sink.fail(new SinkError('item', 'constraint violated'));
  await settle();
  assert.deepEqual(p.stats().ledger.droppedByReason, { 'sink-failed': 1 });
  assert.equal((errors[0] as Error).message, 'constraint violated');
  assertBalanced(p);
  sink.release();
  await settle();
  assert.equal(p.stats().ledger.committed, 2);
  assertBalanced(p);
});

test('a failing sink: the default handler retries a transient failure until the sink is back (never a silent drop)', async () => {
  const clock = new FakeClock();
  const sink = new GateSink();
  const reported: unknown[] = [];
  const p = new Pipeline<number>({ sink, window: { maxItems: 2, maxWaitMs: 0 }, clock, onError: (e) => void reported.push(e) });
  p.offer(item(clock));
  p.offer(item(clock));
  for (let i = 0; i < 8; i++) {
    sink.fail(new Error('disk on fire')); // not a SinkError: transient
    await settle();
    clock.advance(10_000); // past any backoff
    await settle();
  }
  assert.equal(p.stats().ledger.dropped, 0);
  assert.equal(p.sinkHealth()?.isUp(), false);
  sink.release();
  await settle();
  sink.release(); // maxWaitMs 0: the second item is its own batch
  await settle();
  assert.equal(p.stats().ledger.committed, 2);
  assert.equal(p.sinkHealth()?.isUp(), true);
  assert.equal(p.sinkHealth()?.snapshot().retries, 8);
  assert.equal(reported.length, 0);
  assertBalanced(p);
});

test('observers are guarded: a throwing hook is counted and reported, the others still run, close() resolves', async () => {
  const sink = new MemorySink<number>();
  const ctxs: string[] = [];
  const acked: number[] = [];
  const p = new Pipeline<number>({
    sink,
    window: { maxItems: 4, maxWaitMs: 1 },
    onError: (_e, ctx) => void ctxs.push(`${ctx.kind}:${ctx.hook}`),
    observers: [
      {
        onAccepted: () => {
          throw new Error('metrics broke');
        },
        onCommitted: () => {
          throw new Error('ack on a closed connection');
        },
        onFlush: () => {
          throw new Error('flush hook broke');
        },
      },
      { onCommitted: (b) => void acked.push(...b.map((e) => e.value)) },
    ],
  });
  const clock = systemClockForTest();
  for (let i = 0; i < 8; i++) assert.equal(p.offer(envelope(i, { bytes: 1, intendedAtMs: clock.now() })), 'accepted');
  await p.close();
  assert.equal(p.state(), 'closed');
  assert.deepEqual(acked.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7], 'the second observer still acked everything');
  const s = p.stats();
  assert.ok(s.ledger.balanced);
  assert.equal(s.ledger.committed, 8);
  assert.equal(s.observerErrors, 8 + 2 + 2);
  assert.ok(ctxs.includes('observer:onAccepted') && ctxs.includes('observer:onCommitted') && ctxs.includes('observer:onFlush'));
});

test('the default onError writes one JSON line to stderr', async () => {
  const lines: string[] = [];
  const orig = process.stderr.write.bind(process.stderr);
  (process.stderr as { write: unknown }).write = (chunk: string) => {
    lines.push(String(chunk));
    return true;
  };
  try {
    const sink = new MemorySink<number>();
    const p = new Pipeline<number>({ sink, name: 'p1', window: { maxItems: 1, maxWaitMs: 0 }, observers: [{ onCommitted: () => { throw new Error('boom'); } }] });
    p.offer(envelope(1, { bytes: 1, intendedAtMs: systemClockForTest().now() }));
    await p.close();
  } finally {
    (process.stderr as { write: unknown }).write = orig;
  }
  assert.equal(lines.length, 1);
  const o = JSON.parse(lines[0]);
  assert.equal(o.pipeline, 'p1');
  assert.equal(o.kind, 'observer');
  assert.equal(o.hook, 'onCommitted');
  assert.equal(o.error.message, 'boom');
});

test('a handler that throws synchronously or loses items is counted, never hidden', async () => {
  const clock = new FakeClock();
  const sink = new MemorySink<number>();
  let mode: 'throw' | 'lose' = 'throw';
  const p = new Pipeline<number>({
    sink,
    clock,
    window: { maxItems: 2, maxWaitMs: 1000 },
    handler: {
      handle(batch) {
        if (mode === 'throw') throw new Error('sync');
        return Promise.resolve({ committed: batch.slice(1), deadLettered: [], dropped: [] });
      },
    },
  });
  p.offer(item(clock));
  p.offer(item(clock));
  await settle();
  mode = 'lose';
  p.offer(item(clock));
  p.offer(item(clock));
  await p.close();
  const l = p.stats().ledger;
  assert.deepEqual(l.droppedByReason, { 'handler-failed': 2, 'handler-unaccounted': 1 });
  assert.equal(l.committed, 1);
  assert.equal(l.balanced, true);
});

// ------------------------------------------------------------------ options

test('bad options: SLUICE_INVALID_OPTION naming the option', () => {
  const sink = new MemorySink<number>();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ window: { maxItems: 0 } }, /maxItems=0/],
    [{ window: { maxItems: -5 } }, /maxItems=-5/],
    [{ window: { maxItems: 2.5 } }, /maxItems=2\.5/],
    [{ window: { maxItems: Number.NaN } }, /maxItems/],
    [{ window: { maxBytes: -1 } }, /maxBytes=-1/],
    [{ window: { maxWaitMs: -1 } }, /maxWaitMs=-1/],
    [{ window: { maxWaitMs: Number.NaN } }, /maxWaitMs/],
    [{ window: { maxWaitMs: Infinity } }, /maxWaitMs/],
    [{ window: { maxInFlight: 0 } }, /maxInFlight=0/],
    [{ window: { maxItems: 100 }, queue: { maxItems: 50 } }, /queue\.maxItems=50/],
    [{ window: { maxBytes: 1000 }, queue: { maxBytes: 999 } }, /queue\.maxBytes=999/],
    [{ queue: { maxItems: -1 } }, /queue\.maxItems=-1/],
    [{ queue: { policy: 'drop-random' } }, /policy="drop-random"/],
    [{ queue: { blockTimeoutMs: -1 } }, /blockTimeoutMs=-1/],
    [{ queue: { policy: 'spill' } }, /spill/],
  ];
  for (const [opts, re] of cases)
    assert.throws(
      () => new Pipeline<number>({ sink, ...opts }),
      (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.InvalidOption && re.test(e.message),
      `${JSON.stringify(opts)} → ${re}`,
    );
  assert.throws(() => new Pipeline<number>({} as never), (e: unknown) => e instanceof SluiceError && /sink/.test(e.message));
  // undefined means "use the default"; `unbounded` is the lab's contrast, not a policy.
  new Pipeline<number>({ sink, window: { maxItems: undefined } });
  assert.throws(() => new Pipeline<number>({ sink, queue: { policy: 'unbounded' as never } }), /policy.*one of block, drop-newest, drop-oldest, spill/);
});
