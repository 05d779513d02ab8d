import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Pipeline, writeOnce } from '../../packages/sluice/src/core/pipeline.js';
import { FakeClock } from '../../packages/sluice/src/core/clock.js';
import { envelope, type Envelope, type FixedCostKind, type Sink } from '../../packages/sluice/src/core/types.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';
import { PipelineMetrics } from '../../packages/sluice/src/metrics/metrics.js';
import { prometheusFor } from '../../packages/sluice/src/metrics/prometheus.js';

const settle = () => new Promise<void>((r) => setImmediate(r));

/** Writes take `delayMs` of fake-clock time; every third batch fails. */
class FakeTimedSink implements Sink<number> {
  readonly name = 'timed';
  readonly fixedCostKind: FixedCostKind = 'commit';
  private ops = 0;
  constructor(
    private readonly clock: FakeClock,
    private readonly delayMs: number,
    private readonly failEvery = 0,
  ) {}
  write(): Promise<void> {
    const n = ++this.ops;
    return new Promise((resolve, reject) =>
      this.clock.setTimer(() => (this.failEvery > 0 && n % this.failEvery === 0 ? reject(new Error('down')) : resolve()), this.delayMs),
    );
  }
  fixedCostOps(): number {
    return this.ops;
  }
  async close(): Promise<void> {}
}

test('latency is measured from each item\'s intended arrival, not from its acceptance', async () => {
  const clock = new FakeClock(1000);
  const sink = new FakeTimedSink(clock, 2);
  const metrics = new PipelineMetrics<number>(sink, 15);
  const p = new Pipeline<number>({ sink, clock, window: { maxItems: 100, maxWaitMs: 10 }, observers: [metrics] });
  metrics.attach(p);
  // Intended 30 ms ago (a producer that fell behind), and one on time.
  p.offer(envelope(1, { bytes: 100, intendedAtMs: 970 }));
  p.offer(envelope(2, { bytes: 100, intendedAtMs: 1000 }));
  clock.advance(10); // deadline: cut at 1010
  clock.advance(2); // write completes at 1012
  await settle();
  const s = metrics.snapshot();
  assert.equal(s.latencyMs.count, 2);
  // 1012 − 970 = 42 ms and 1012 − 1000 = 12 ms (HDR: 3 significant digits).
  assert.ok(Math.abs(s.latencyMs.max - 42) < 0.05, `max ${s.latencyMs.max}`);
  assert.ok(Math.abs(s.latencyMs.p50 - 12) < 0.05, `p50 ${s.latencyMs.p50}`);
  assert.equal(metrics.sloBreaches, 1, 'only the late item breaches a 15 ms SLO');
  assert.ok(Math.abs(s.batchWaitMs.max - 10) < 0.05, 'batch wait is measured from acceptance');
  assert.equal(s.bytesIn, 200);
  assert.equal(s.fixedCostOps, 1);
  assert.equal(s.fixedCostKind, 'commit');
  assert.equal(s.fixedCostOpsPerItem, 0.5);
  assert.equal(s.ledger?.balanced, true);
});

test('batch size histogram and flush reasons', async () => {
  const clock = new FakeClock();
  const sink = new MemorySink<number>();
  const metrics = new PipelineMetrics<number>(sink);
  const p = new Pipeline<number>({ sink, clock, window: { maxItems: 4, maxWaitMs: 5 }, observers: [metrics] });
  metrics.attach(p);
  let v = 0;
  const offer = (n: number) => {
    for (let i = 0; i < n; i++) p.offer(envelope(v++, { bytes: 1, intendedAtMs: clock.now() }));
  };
  offer(4); // size
  offer(4); // size
  offer(1);
  clock.advance(5); // time, 1 item
  await settle();
  offer(2);
  await p.close(); // drain, 2 items
  const s = metrics.snapshot([4]);
  assert.deepEqual(s.flushReasons, { size: 2, bytes: 0, time: 1, drain: 1 });
  assert.equal(s.batchSize.count, 4);
  assert.equal(s.batchSize.max, 4);
  assert.equal(s.batchSize.mean, 2.75);
  assert.deepEqual(s.batchSize.histogram, [[1, 1], [2, 1], [4, 2]]);
  assert.equal(s.committed, 11);
  assert.equal(s.latencyMs.count, 11);
});

test('Prometheus text holds the main series with their values', async () => {
  const clock = new FakeClock();
  const sink = new FakeTimedSink(clock, 1, 2);
  const metrics = new PipelineMetrics<number>(sink);
  // writeOnce: a failed batch is dropped `sink-failed` (the default handler would retry it).
  const p = new Pipeline<number>({ sink, clock, handler: writeOnce(sink), onError: () => {}, window: { maxItems: 2, maxWaitMs: 100 }, queue: { maxItems: 4, policy: 'drop-newest' }, observers: [metrics], name: 'pt' });
  metrics.attach(p);
  for (let i = 0; i < 8; i++) p.offer(envelope(i, { bytes: 10, intendedAtMs: clock.now() }));
  // 2 in flight, 4 queued, 2 dropped (drop-newest).
  for (let i = 0; i < 5; i++) {
    clock.advance(1);
    await settle();
  }
  const text = await prometheusFor(p, metrics).text();
  const value = (series: string) => {
    const line = text.split('\n').find((l) => l.startsWith(series + ' ') || l.startsWith(series.replace(/}$/, ',pipeline="pt"}') + ' '));
    assert.ok(line, `${series} missing from:\n${text}`);
    return Number(line.split(' ').pop());
  };
  const l = p.stats().ledger;
  assert.equal(l.balanced, true);
  assert.equal(value('sluice_items_accepted_total{pipeline="pt"}'), 8);
  assert.equal(value('sluice_items_committed_total{pipeline="pt"}'), l.committed);
  assert.equal(value('sluice_items_dropped_total{reason="drop-newest",pipeline="pt"}'), 2);
  assert.equal(value('sluice_items_dropped_total{reason="sink-failed",pipeline="pt"}'), 2);
  assert.equal(value('sluice_fixed_cost_ops_total{kind="commit",pipeline="pt"}'), 3);
  assert.equal(value('sluice_flushes_total{reason="size",pipeline="pt"}'), 3);
  assert.equal(value('sluice_queue_items{pipeline="pt"}'), p.stats().queueItems);
  assert.equal(value('sluice_items_in_flight{pipeline="pt"}'), l.inFlight);
  assert.equal(value('sluice_end_to_end_latency_seconds_count{pipeline="pt"}'), l.committed);
  assert.equal(value('sluice_end_to_end_latency_seconds_bucket{le="+Inf",pipeline="pt"}'), l.committed);
  assert.match(text, /# TYPE sluice_end_to_end_latency_seconds histogram/);
  assert.match(text, /# TYPE sluice_items_accepted_total counter/);
  assert.match(text, /sluice_accepted_bytes_total\{pipeline="pt"\} 60/);
});
