import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MemoryDeadLetters,
  RetryExhaustedError,
  abortWholeBatch,
  backoffDelayMs,
  isolationBound,
  resolveBackoff,
  retrying,
  splitAndRetry,
} from '../../packages/sluice/src/core/reliability.js';
import { FakeClock } from '../../packages/sluice/src/core/clock.js';
import { seededRng } from '../../packages/sluice/src/core/random.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { envelope, type Envelope } from '../../packages/sluice/src/core/types.js';
import { SinkError } from '../../packages/sluice/src/core/errors.js';
import { FlakySink, IdempotentMemorySink, PoisonedSink } from '../../packages/sluice/src/sinks/doubles.js';

const batchOf = (n: number): Envelope<number>[] => Array.from({ length: n }, (_, i) => envelope(i, { bytes: 10, intendedAtMs: 0, id: `r${i}` }));
const noWait = { baseMs: 0, maxMs: 0, jitter: 0 };

async function isolate(B: number, poison: number[], itemRetries = 0) {
  const sink = new PoisonedSink<number>(new Set(poison.map((i) => `r${i}`)));
  const dlq = new MemoryDeadLetters<number>();
  const h = splitAndRetry(sink, { dlq, itemRetries, retry: noWait });
  const batch = batchOf(B);
  const out = await h.handle(batch);
  return { sink, dlq, h, out, batch };
}

function assertOutcome(r: Awaited<ReturnType<typeof isolate>>, poison: number[]) {
  const { out, sink, dlq, batch } = r;
  // every item in exactly one list
  assert.equal(out.committed.length + out.deadLettered.length + out.dropped.length, batch.length);
  assert.deepEqual(out.deadLettered.map((e) => e.id).sort(), poison.map((i) => `r${i}`).sort());
  assert.deepEqual(dlq.ids().sort(), poison.map((i) => `r${i}`).sort());
  assert.equal(out.committed.length, batch.length - poison.length);
  // the sink holds every good record exactly once, and no poisoned one
  assert.equal(sink.byId.size, batch.length - poison.length);
  assert.equal(sink.duplicatesAbsorbed, 0);
  for (const i of poison) assert.ok(!sink.byId.has(`r${i}`));
}

test('bisection: 0 poison records → one call, everything committed', async () => {
  const r = await isolate(64, []);
  assertOutcome(r, []);
  assert.equal(r.sink.calls, 1);
  assert.equal(r.h.stats().isolations.length, 0);
});

test('bisection: 1 poison record isolated within 1 + 2⌈log2 B⌉ calls', async () => {
  for (const B of [2, 7, 64, 100, 1000]) {
    for (const p of [0, B >> 1, B - 1]) {
      const r = await isolate(B, [p]);
      assertOutcome(r, [p]);
      assert.ok(r.sink.calls <= isolationBound(B, 1), `B=${B} p=${p}: ${r.sink.calls} calls > ${isolationBound(B, 1)}`);
      const iso = r.h.stats().isolations[0];
      assert.equal(iso.sinkCalls, r.sink.calls);
      assert.equal(iso.deadLettered, 1);
      const letter = r.dlq.letters[0];
      assert.equal(letter.failureClass, 'item');
      assert.ok(letter.attempts >= 2, 'the record failed in the whole batch and alone');
    }
  }
});

test('bisection: k adjacent and k scattered poison records stay within 1 + 2k⌈log2 B⌉', async () => {
  const B = 512;
  for (const k of [2, 3, 8]) {
    const adjacent = Array.from({ length: k }, (_, i) => 100 + i);
    const rng = seededRng(k);
    const scattered = new Set<number>();
    while (scattered.size < k) scattered.add(Math.floor(rng() * B));
    for (const poison of [adjacent, [...scattered]]) {
      const r = await isolate(B, poison);
      assertOutcome(r, poison);
      assert.ok(r.sink.calls <= isolationBound(B, k), `k=${k}: ${r.sink.calls} > ${isolationBound(B, k)}`);
    }
  }
  // the bound is not vacuous: a lone poison record in 512 costs exactly 1 + 2·9 calls
  const r = await isolate(512, [3]);
  assert.equal(r.sink.calls, 19);
});

test('item retries: an isolated record gets itemRetries more attempts before the DLQ', async () => {
  const r = await isolate(16, [5], 2);
  assertOutcome(r, [5]);
  assert.equal(r.sink.calls, isolationBound(16, 1, 2));
  assert.equal(r.dlq.letters[0].attempts, 1 + 4 + 2);
});

test('a transient error is retried whole and never split', async () => {
  const inner = new IdempotentMemorySink<number>();
  const flaky = new FlakySink(inner, 3);
  const dlq = new MemoryDeadLetters<number>();
  const h = splitAndRetry(flaky, { dlq, retry: { budget: 5, ...noWait } });
  const out = await h.handle(batchOf(40));
  assert.equal(out.committed.length, 40);
  assert.equal(dlq.letters.length, 0);
  assert.deepEqual(flaky.failedSizes, [40, 40, 40], 'every failed call carried the whole batch');
  assert.equal(flaky.calls, 4);
  assert.equal(h.stats().transientRetries, 3);
  assert.equal(inner.calls, 1);
});

test('retrying(): transient retried with backoff on the injected clock; item errors pass through', async () => {
  const clock = new FakeClock();
  const inner = new IdempotentMemorySink<number>();
  const flaky = new FlakySink(inner, 2);
  const s = retrying(flaky, { budget: 3, baseMs: 100, maxMs: 1000, jitter: 0 }, { clock });
  let done = false;
  const p = s.write(batchOf(5)).then(() => (done = true));
  for (let i = 0; i < 10 && !done; i++) {
    await new Promise((r) => setImmediate(r));
    clock.advance(100 * 2 ** i);
  }
  await p;
  assert.equal(flaky.calls, 3);
  assert.deepEqual(s.stats(), { calls: 3, retries: 2, exhausted: 0, alerts: 0 });
  const poisoned = retrying(new PoisonedSink<number>(new Set(['r1'])), { budget: 3, ...noWait });
  await assert.rejects(poisoned.write(batchOf(3)), (e) => e instanceof SinkError && e.failureClass === 'item');
  assert.equal(poisoned.stats().calls, 1, 'an item error is never retried whole');
});

test('backoff: exponential, capped, jitter within its share', () => {
  const p = resolveBackoff({ budget: 5, baseMs: 10, maxMs: 100, jitter: 0.5 });
  const rng = seededRng(1);
  for (let r = 1; r <= 8; r++) {
    const ceiling = Math.min(100, 10 * 2 ** (r - 1));
    const d = backoffDelayMs(p, r, rng);
    assert.ok(d >= ceiling / 2 && d <= ceiling, `retry ${r}: ${d}`);
  }
  assert.throws(() => resolveBackoff({ jitter: 2 }), /retry.jitter/);
});

test('budget exhausted: the batch fails loudly (dropped retry-exhausted, never dead-lettered); dead-lettered only when opted in', async () => {
  const inner = new IdempotentMemorySink<number>();
  const flaky = new FlakySink(inner, 100);
  const dlq = new MemoryDeadLetters<number>();
  const h = splitAndRetry(flaky, { dlq, retry: { budget: 2, ...noWait } });
  const out = await h.handle(batchOf(8));
  assert.equal(flaky.calls, 3, 'first attempt + 2 retries, never split');
  assert.deepEqual(flaky.failedSizes, [8, 8, 8]);
  assert.equal(out.dropped.length, 8);
  assert.equal(out.dropReason, 'retry-exhausted');
  assert.ok(out.error instanceof RetryExhaustedError);
  assert.equal(out.deadLettered.length, 0);
  assert.equal(dlq.letters.length, 0, 'good records are never dead-lettered by default');

  const optIn = splitAndRetry(new FlakySink(inner, 100), { dlq, retry: { budget: 1, ...noWait }, deadLetterOnRetryExhausted: true });
  const out2 = await optIn.handle(batchOf(4));
  assert.equal(out2.deadLettered.length, 4);
  assert.ok(dlq.letters.every((l) => l.failureClass === 'transient' && l.error instanceof RetryExhaustedError && l.attempts === 2));
});

test('pipeline + splitAndRetry: ledger balances; onDeadLettered sees exactly the poison', async () => {
  const poison = new Set(['r3', 'r77', 'r78', 'r150']);
  const sink = new PoisonedSink<number>(poison);
  const dlq = new MemoryDeadLetters<number>();
  const seen: string[] = [];
  const p = new Pipeline<number>({
    sink,
    handler: splitAndRetry(sink, { dlq, retry: noWait }),
    window: { maxItems: 64, maxWaitMs: 1, maxInFlight: 2 },
    observers: [{ onDeadLettered: (items) => seen.push(...items.map((e) => e.id!)) }],
  });
  for (const e of batchOf(200)) await p.put(e);
  await p.close();
  const l = p.stats().ledger;
  assert.ok(l.balanced);
  assert.equal(l.committed, 196);
  assert.equal(l.deadLettered, 4);
  assert.equal(sink.byId.size, 196);
  assert.deepEqual(seen.sort(), [...poison].sort());
});

test('abortWholeBatch: retries the whole batch, never splits, stalls until aborted', async () => {
  const sink = new PoisonedSink<number>(new Set(['r2']));
  const ac = new AbortController();
  const h = abortWholeBatch(sink, { baseMs: 1, maxMs: 2, jitter: 0 }, { signal: ac.signal });
  const p = h.handle(batchOf(10));
  await new Promise((r) => setTimeout(r, 30));
  ac.abort();
  const out = await p;
  assert.ok(sink.callSizes.length >= 3);
  assert.ok(sink.callSizes.every((n) => n === 10), 'never split');
  assert.equal(out.committed.length, 0);
  assert.equal(out.dropped.length, 10);
  assert.equal(out.dropReason, 'aborted');
  assert.equal(sink.byId.size, 0);
});

test('a DLQ write that fails: the letters are dropped (counted, never acked), the good records stay committed', async () => {
  const sink = new PoisonedSink<number>(new Set(['r4']));
  const h = splitAndRetry(sink, { dlq: { write: async () => Promise.reject(new Error('disk full')) }, retry: noWait });
  const out = await h.handle(batchOf(10));
  assert.equal(out.committed.length, 9);
  assert.deepEqual(out.dropped.map((e) => e.id), ['r4']);
  assert.equal(out.dropReason, 'dlq-write-failed');
  assert.equal(out.deadLettered.length, 0);
});
