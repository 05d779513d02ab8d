// Issue 19: a sink that is down is backpressure, not poison. Each test here fails without
// the fix it names (checked by reverting the fix once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDeadLetters, RetryExhaustedError, SinkHealth, abortWholeBatch, retrying, splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import type { Clock, TimerHandle } from '../../packages/sluice/src/core/clock.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { envelope, type Envelope, type Sink } from '../../packages/sluice/src/core/types.js';
import { SinkError } from '../../packages/sluice/src/core/errors.js';
import { FlakySink, IdempotentMemorySink, PoisonedSink } from '../../packages/sluice/src/sinks/doubles.js';

const batchOf = (n: number, from = 0): Envelope<number>[] =>
  Array.from({ length: n }, (_, i) => envelope(from + i, { bytes: 10, intendedAtMs: 0, id: `r${from + i}` }));

/** A clock whose timers fire on the next turn with time jumped forward by their delay; records every delay. */
class JumpClock implements Clock {
  t = 0;
  readonly delays: number[] = [];
  now(): number {
    return this.t;
  }
  setTimer(fn: () => void, delayMs: number): TimerHandle {
    this.delays.push(delayMs);
    const h = setImmediate(() => {
      this.t += delayMs;
      fn();
    });
    return h as unknown as TimerHandle;
  }
  clearTimer(h: TimerHandle): void {
    clearImmediate(h as unknown as NodeJS.Immediate);
  }
}

test('transient failures are retried until the sink is back by default: nothing dead-lettered, nothing dropped', async () => {
  const inner = new IdempotentMemorySink<number>();
  const flaky = new FlakySink(inner, 40); // far beyond the old default budget of 5
  const dlq = new MemoryDeadLetters<number>();
  const clock = new JumpClock();
  const h = splitAndRetry(flaky, { dlq, retry: { writeTimeoutMs: Infinity } }, { clock });
  const out = await h.handle(batchOf(16));
  assert.equal(out.committed.length, 16);
  assert.equal(out.deadLettered.length, 0);
  assert.equal(out.dropped.length, 0);
  assert.equal(dlq.letters.length, 0);
  assert.deepEqual(flaky.failedSizes, Array(40).fill(16), 'retried whole, never split');
  assert.ok(clock.delays.every((d) => d <= 5_000), 'backoff capped at maxMs');
});

test('SinkHealth: one down and one up per outage, with the outage length and retry counters', async () => {
  const inner = new IdempotentMemorySink<number>();
  const flaky = new FlakySink(inner, 6, 'ECONNREFUSED');
  const clock = new JumpClock();
  const health = new SinkHealth(clock);
  const events: string[] = [];
  let outage = -1;
  health.onDown((_e, info) => events.push(`down:${info.sinkCode}`));
  health.onUp((ms, info) => {
    outage = ms;
    events.push(`up:${info.retries}`);
  });
  health.onDown(() => {
    throw new Error('a throwing listener is ignored');
  });
  const h = splitAndRetry(flaky, { dlq: new MemoryDeadLetters(), retry: { baseMs: 100, maxMs: 1_000, jitter: 0, writeTimeoutMs: Infinity } }, { clock, health });
  await h.handle(batchOf(4));
  assert.deepEqual(events, ['down:ECONNREFUSED', 'up:6']);
  assert.equal(outage, 100 + 200 + 400 + 800 + 1000 + 1000);
  const s = health.snapshot();
  assert.equal(s.up, true);
  assert.equal(s.outages, 1);
  assert.equal(s.retries, 6);
  assert.equal(s.transientFailures, 6);
  assert.equal(s.lastOutageMs, outage);
  assert.equal(s.lastError?.sinkCode, 'ECONNREFUSED');
  // item errors mean the sink answered: it stays up, and splitting still isolates the poison
  const p = splitAndRetry(new PoisonedSink<number>(new Set(['r2'])), { dlq: new MemoryDeadLetters() }, { health });
  const out = await p.handle(batchOf(4));
  assert.deepEqual(out.deadLettered.map((e) => e.id), ['r2']);
  assert.equal(health.snapshot().outages, 1);
});

test('jitter is random by default: two handlers failing together do not retry in lockstep', async () => {
  const delays: number[][] = [];
  for (let k = 0; k < 2; k++) {
    const clock = new JumpClock();
    const r = retrying(new FlakySink(new IdempotentMemorySink<number>(), 3), { baseMs: 1_000, maxMs: 8_000, jitter: 1, writeTimeoutMs: Infinity }, { clock });
    await r.write(batchOf(1));
    delays.push(clock.delays);
  }
  assert.equal(delays[0].length, 3);
  assert.notDeepEqual(delays[0], delays[1], 'a fixed seed makes every worker wait the same');
  // and an injected rng still makes it repeatable
  const c1 = new JumpClock();
  const c2 = new JumpClock();
  await retrying(new FlakySink(new IdempotentMemorySink<number>(), 2), { jitter: 1, writeTimeoutMs: Infinity }, { clock: c1, rng: () => 0.25 }).write(batchOf(1));
  await retrying(new FlakySink(new IdempotentMemorySink<number>(), 2), { jitter: 1, writeTimeoutMs: Infinity }, { clock: c2, rng: () => 0.25 }).write(batchOf(1));
  assert.deepEqual(c1.delays, c2.delays);
});

/** First `hangs` calls never settle; later ones delegate. */
class HangingSink implements Sink<number> {
  readonly name = 'hanging';
  readonly fixedCostKind = 'none' as const;
  calls = 0;
  constructor(
    readonly inner: Sink<number>,
    public hangs = 1,
  ) {}
  write(batch: readonly Envelope<number>[]): Promise<void> {
    this.calls++;
    if (this.hangs-- > 0) return new Promise(() => {});
    return this.inner.write(batch);
  }
  fixedCostOps(): number {
    return 0;
  }
  async close(): Promise<void> {}
}

test('writeTimeoutMs: a hung write becomes a transient failure and is retried', async () => {
  const inner = new IdempotentMemorySink<number>();
  const sink = new HangingSink(inner, 2);
  const health = new SinkHealth();
  const h = splitAndRetry(sink, { dlq: new MemoryDeadLetters(), retry: { writeTimeoutMs: 20, baseMs: 1, maxMs: 2 } }, { health });
  const out = await h.handle(batchOf(5));
  assert.equal(out.committed.length, 5);
  assert.equal(sink.calls, 3);
  assert.equal(health.snapshot().timeouts, 2);
  assert.equal(health.snapshot().lastError?.sinkCode, 'ETIMEDOUT');
  const r = retrying(new HangingSink(inner, 1), { writeTimeoutMs: 20, baseMs: 1, maxMs: 2 });
  await r.write(batchOf(2, 100));
  const a = abortWholeBatch(new HangingSink(inner, 1), { writeTimeoutMs: 20, baseMs: 1, maxMs: 2 });
  assert.equal((await a.handle(batchOf(2, 200))).committed.length, 2);
});

test('a finite budget fails loudly through the pipeline: dropped retry-exhausted, onError called, ledger balanced, nothing dead-lettered', async () => {
  const flaky = new FlakySink(new IdempotentMemorySink<number>(), 1_000);
  const dlq = new MemoryDeadLetters<number>();
  const errors: unknown[] = [];
  const p = new Pipeline<number>({
    sink: flaky,
    handler: splitAndRetry(flaky, { dlq, retry: { budget: 2, baseMs: 0, maxMs: 0 } }),
    window: { maxItems: 10, maxWaitMs: 1 },
    observers: [{ onError: (e) => errors.push(e) }],
  });
  for (const e of batchOf(10)) await p.put(e);
  await p.close();
  const l = p.stats().ledger;
  assert.ok(l.balanced);
  assert.deepEqual(l.droppedByReason, { 'retry-exhausted': 10 });
  assert.equal(l.deadLettered, 0);
  assert.equal(dlq.letters.length, 0);
  assert.ok(errors.some((e) => e instanceof RetryExhaustedError));
});

test('an aborted signal ends unlimited retries: the batch is dropped `aborted` (never acked), not dead-lettered', async () => {
  const flaky = new FlakySink(new IdempotentMemorySink<number>(), Infinity);
  const ac = new AbortController();
  const dlq = new MemoryDeadLetters<number>();
  const h = splitAndRetry(flaky, { dlq, retry: { baseMs: 1, maxMs: 5 } }, { signal: ac.signal });
  const p = h.handle(batchOf(3));
  setTimeout(() => ac.abort(), 30);
  const out = await p;
  assert.equal(out.dropped.length, 3);
  assert.equal(out.dropReason, 'aborted');
  assert.equal(dlq.letters.length, 0);
  assert.ok(new SinkError('transient', 'x') instanceof SinkError);
});
