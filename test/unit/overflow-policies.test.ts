/**
 * Each overflow policy at the edge: the queue exactly full (accepted), then one over.
 * A gate sink holds every write until the test opens it; a FakeClock drives the timers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { FakeClock } from '../../packages/sluice/src/core/clock.js';
import { Pipeline, type OfferResult } from '../../packages/sluice/src/core/pipeline.js';
import { DiskSpillStore } from '../../packages/sluice/src/core/spill.js';
import { ErrorCode, isSluiceError } from '../../packages/sluice/src/core/errors.js';
import type { OverflowPolicy } from '../../packages/sluice/src/core/options.js';
import { envelope, type Envelope, type Sink } from '../../packages/sluice/src/core/types.js';

class GateSink implements Sink<string> {
  readonly name = 'gate';
  readonly fixedCostKind = 'none' as const;
  readonly delivered: string[] = [];
  private readonly held: { batch: readonly Envelope<string>[]; resolve: () => void }[] = [];
  write(batch: readonly Envelope<string>[]): Promise<void> {
    return new Promise((resolve) => this.held.push({ batch, resolve }));
  }
  /** Lets the oldest held write complete. */
  async open(): Promise<void> {
    const h = this.held.shift();
    assert.ok(h, 'no write is being held');
    for (const e of h.batch) this.delivered.push(e.value);
    h.resolve();
    await tick();
    await tick();
  }
  async openAll(): Promise<void> {
    for (let i = 0; i < 1000 && this.held.length > 0; i++) await this.open();
  }
  holding(): number {
    return this.held.length;
  }
  fixedCostOps(): number {
    return 0;
  }
  async close(): Promise<void> {}
}

/** Items of identical size, so byte bounds count items. */
const item = (n: number) => envelope(String(n).padStart(4, '0'), { bytes: 10, intendedAtMs: 0, id: `i${String(n).padStart(4, '0')}` });
const names = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i).padStart(4, '0'));

function build(policy: OverflowPolicy, extra: { spill?: DiskSpillStore<string>; windowItems?: number; queueItems?: number } = {}) {
  const clock = new FakeClock();
  const sink = new GateSink();
  const p = new Pipeline<string>({
    sink,
    clock,
    spill: extra.spill,
    window: { maxItems: extra.windowItems ?? 4, maxWaitMs: 100, maxInFlight: 1, maxBytes: 1000 },
    queue: { maxItems: extra.queueItems ?? 4, maxBytes: 1000, policy, blockTimeoutMs: 50 },
  });
  return { clock, sink, p };
}

/** 1–4 cut into a held write, 5–8 fill the queue exactly. */
function fillExactly(p: Pipeline<string>, sink: GateSink): void {
  for (let n = 1; n <= 8; n++) assert.equal(p.offer(item(n)), 'accepted', `item ${n}`);
  assert.equal(sink.holding(), 1);
  const st = p.stats();
  assert.equal(st.queueItems, 4);
  assert.equal(st.inFlightItems, 4);
  assert.ok(st.ledger.balanced);
}

test('block: exactly full accepts; one over waits, is admitted FIFO when space frees, or fails after blockTimeoutMs', async () => {
  const { clock, sink, p } = build('block');
  fillExactly(p, sink);
  assert.equal(p.offer(item(9)), 'full');
  const waits: Promise<OfferResult>[] = [p.put(item(9)), p.put(item(10))];
  assert.equal(p.stats().blockedProducers, 2);
  clock.advance(49);
  await sink.open(); // 1–4 committed, 5–8 cut, 9 and 10 admitted in order
  assert.deepEqual(await Promise.all(waits), ['accepted', 'accepted']);
  assert.equal(p.stats().queueItems, 2);
  // Fill again and let one producer time out: a coded, retryable error; nothing dropped.
  assert.equal(p.offer(item(11)), 'accepted');
  assert.equal(p.offer(item(12)), 'accepted');
  const late = p.put(item(13));
  clock.advance(50);
  await assert.rejects(late, (e: unknown) => isSluiceError(e, ErrorCode.QueueFull) && (e as { retryable: boolean }).retryable);
  const closing = p.close();
  await sink.openAll();
  await closing;
  assert.deepEqual(sink.delivered, names(1, 12));
  const led = p.stats().ledger;
  assert.equal(led.dropped, 0);
  assert.equal(led.rejected, 1);
  assert.ok(led.balanced && led.inFlight === 0);
});

test('drop-newest: exactly full accepts; one over is dropped (counted), the queue is untouched', async () => {
  const { sink, p } = build('drop-newest');
  fillExactly(p, sink);
  assert.equal(p.offer(item(9)), 'dropped');
  assert.equal(p.stats().ledger.droppedByReason['drop-newest'], 1);
  assert.equal(p.stats().queueItems, 4);
  const closing = p.close();
  await sink.openAll();
  await closing;
  assert.deepEqual(sink.delivered, names(1, 8));
  const led = p.stats().ledger;
  assert.equal(led.accepted, 9);
  assert.ok(led.balanced && led.inFlight === 0 && led.dropped === 1);
});

test('drop-oldest: exactly full accepts; one over evicts the oldest queued item (counted)', async () => {
  const { sink, p } = build('drop-oldest');
  fillExactly(p, sink);
  assert.equal(p.offer(item(9)), 'accepted');
  assert.equal(p.stats().ledger.droppedByReason['drop-oldest'], 1);
  assert.equal(p.stats().queueItems, 4);
  const closing = p.close();
  await sink.openAll();
  await closing;
  assert.deepEqual(sink.delivered, [...names(1, 4), ...names(6, 9)]);
  assert.ok(p.stats().ledger.balanced && p.stats().ledger.dropped === 1);
});

test('unbounded is not a policy of the product (the lab builds its contrast from huge bounds)', () => {
  assert.throws(() => build('unbounded' as never), /SLUICE_INVALID_OPTION|policy/);
});

function spillStore(records: number, fallback: 'block' | 'drop-newest') {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-policy-test-'));
  // One record per segment, so releasing one record frees its segment.
  const probe = DiskSpillStore.open<string>({ dir: join(dir, 'probe') });
  const e = item(1);
  e.seq = 1;
  probe.tryAppend(e, 1);
  const recordBytes = probe.diskUsage();
  probe.destroy();
  return { dir, store: DiskSpillStore.open<string>({ dir: join(dir, 'spill'), spillMaxBytes: records * recordBytes, segmentBytes: recordBytes, fallback }) };
}

test('spill: memory exactly full accepts in memory; one over goes to disk; newer items follow in order', async () => {
  const { dir, store } = spillStore(3, 'drop-newest');
  try {
    const { sink, p } = build('spill', { spill: store });
    fillExactly(p, sink);
    assert.equal(p.stats().spilledItems, 0);
    assert.equal(p.offer(item(9)), 'accepted');
    assert.equal(p.stats().spilledItems, 1);
    assert.equal(p.stats().spilledBytes, 10);
    assert.equal(p.offer(item(10)), 'accepted');
    assert.equal(p.offer(item(11)), 'accepted'); // the disk is now exactly full
    assert.equal(p.offer(item(12)), 'dropped'); // one over: the drop-newest fallback
    assert.equal(p.stats().ledger.droppedByReason['spill-full'], 1);
    const st = p.stats();
    assert.equal(st.spilledItems, 3);
    assert.equal(st.ledger.inFlight, 4 + 4 + 3); // spilled items count as in flight
    assert.ok(st.ledger.balanced);
    const closing = p.close();
    await sink.openAll();
    await closing;
    assert.deepEqual(sink.delivered, names(1, 11));
    assert.ok(p.stats().ledger.balanced && p.stats().ledger.inFlight === 0);
    assert.equal(store.stats().segments, 0);
    assert.equal(store.diskUsage(), 0);
  } finally {
    store.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill→block: a full spill blocks; newcomers queue behind the waiter; it enters the spill as soon as a segment is released', async () => {
  // Window 1, queue 2: 1 in flight, 2–3 in memory, 4–7 on disk (exactly full), 8 one over.
  const { dir, store } = spillStore(4, 'block');
  try {
    const { sink, p } = build('spill', { spill: store, windowItems: 1, queueItems: 2 });
    for (let n = 1; n <= 7; n++) assert.equal(p.offer(item(n)), 'accepted', `item ${n}`);
    assert.equal(p.stats().spilledItems, 4);
    assert.equal(p.offer(item(8)), 'full');
    let admitted: OfferResult | null = null;
    const w = p.put(item(8)).then((r) => (admitted = r));
    assert.equal(p.offer(item(9)), 'full', 'a newcomer must not overtake the blocked producer');
    await sink.open(); // 1 done; 2 cut; 3,4 in memory; 5–7 on disk (4 read back, not committed)
    await sink.open(); // 2 done; 3 cut; 4,5 in memory; 6,7 on disk
    await sink.open(); // 3 done; 4 cut; 5,6 in memory; 7 on disk
    assert.equal(admitted, null, 'no segment released yet: the disk is still full');
    await sink.open(); // 4 committed → its segment is deleted → 8 enters the spill behind 7
    await w;
    assert.equal(admitted, 'accepted');
    assert.equal(p.stats().spilledItems, 1);
    // 5–8 hold the disk (5, 6 read back but not committed): 9 waits for the next release.
    assert.equal(p.offer(item(9)), 'full');
    const w9 = p.put(item(9));
    await sink.open(); // 5 committed → 9 enters the spill
    assert.equal(await w9, 'accepted');
    const closing = p.close();
    await sink.openAll();
    await closing;
    assert.deepEqual(sink.delivered, names(1, 9));
    const led = p.stats().ledger;
    assert.ok(led.balanced && led.inFlight === 0 && led.dropped === 0 && led.rejected === 0);
  } finally {
    store.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill→block: a small newcomer never overtakes a blocked producer whose larger item does not fit yet', async () => {
  const { dir, store } = spillStore(4, 'block');
  try {
    const { sink, p } = build('spill', { spill: store, windowItems: 1, queueItems: 2 });
    for (let n = 1; n <= 7; n++) assert.equal(p.offer(item(n)), 'accepted', `item ${n}`);
    const big = envelope('B'.repeat(60), { bytes: 10, intendedAtMs: 0, id: 'big' });
    let admitted: OfferResult | null = null;
    const w = p.put(big).then((r) => (admitted = r));
    for (let k = 0; k < 4; k++) await sink.open(); // 4 committed: one small segment freed
    assert.equal(admitted, null, 'the big record needs two free segments');
    assert.equal(p.offer(item(9)), 'full', 'the small newcomer fits, but must queue behind the waiter');
    await sink.open(); // 5 committed: a second segment freed → the big item goes to disk
    await w;
    assert.equal(admitted, 'accepted');
    const closing = p.close();
    await sink.openAll();
    await closing;
    assert.deepEqual(sink.delivered, [...names(1, 7), 'B'.repeat(60)]);
  } finally {
    store.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: a pipeline built on a reopened store delivers the recovered items first and balances its ledger', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-policy-test-'));
  try {
    const a = DiskSpillStore.open<string>({ dir });
    for (let n = 1; n <= 5; n++) {
      const e = item(n);
      e.seq = n;
      a.tryAppend(e, n);
    }
    a.close();
    const store = DiskSpillStore.open<string>({ dir });
    const { sink, p } = build('spill', { spill: store });
    assert.equal(p.stats().ledger.accepted, 5);
    assert.equal(p.offer(item(6)), 'accepted');
    const closing = p.close();
    await sink.openAll();
    await closing;
    assert.deepEqual(sink.delivered, names(1, 6));
    const led = p.stats().ledger;
    assert.ok(led.balanced && led.inFlight === 0 && led.committed === 6);
    store.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
