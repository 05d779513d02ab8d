/**
 * `/metrics` read back with a real exposition parser (parse-prometheus-text-format, the
 * prom2json shape): every series has the type the Prometheus conventions ask for, the
 * histograms are well formed, and the gauges added for the alerts (deploy/prometheus/alerts.yml)
 * say what happened (sink down after a transient failure, up again after a success).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { envelope } from '../../packages/sluice/src/core/types.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';
import { FlakySink, PoisonedSink } from '../../packages/sluice/src/sinks/doubles.js';
import { PipelineMetrics } from '../../packages/sluice/src/metrics/metrics.js';
import { prometheusFor, LATENCY_BUCKETS_S } from '../../packages/sluice/src/metrics/prometheus.js';
import { LatencyHistogram } from '../../packages/sluice/src/metrics/histogram.js';
import { MemoryDeadLetters, splitAndRetry } from '../../packages/sluice/src/core/reliability.js';

interface Family {
  name: string;
  type: string;
  metrics: { labels?: Record<string, string>; value?: string; buckets?: Record<string, string>; count?: string; sum?: string }[];
}
const parse = (text: string): Map<string, Family> => new Map((parsePrometheusTextFormat(text) as Family[]).map((f) => [f.name, f]));
/**
 * One sample's value read from the text. parse-prometheus-text-format 1.1.1 drops `_sum` and
 * `_count` of a histogram whose series carry labels (every series here has `pipeline`), so
 * those are read directly; test/integration/promtool.test.ts also runs Prometheus's own parser
 * (`promtool check metrics`) over a live exposition.
 */
const sample = (text: string, series: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(series + '{') || l.startsWith(series + ' '));
  assert.ok(line, `${series} missing`);
  return Number(line.split(' ').pop());
};

async function exposition(opts: { sloMs?: number } = {}) {
  const sink = new MemorySink<unknown>();
  const metrics = new PipelineMetrics<unknown>(sink);
  const p = new Pipeline<unknown>({ sink, window: { maxItems: 10, maxWaitMs: 1 }, observers: [metrics], name: 'px' });
  metrics.attach(p);
  for (let i = 0; i < 35; i++) await p.put(envelope({ i }, { bytes: 7, intendedAtMs: performance.now() }));
  await p.flush();
  const expo = prometheusFor(p, metrics, {}, opts);
  const text = await expo.text();
  return { p, metrics, expo, text, families: parse(text) };
}

test('every series has the conventional type: counters end in _total, durations are _seconds histograms, sizes _bytes', async () => {
  const { p, families } = await exposition();
  const expected: Record<string, string> = {
    sluice_items_accepted_total: 'COUNTER',
    sluice_items_committed_total: 'COUNTER',
    sluice_items_dead_lettered_total: 'COUNTER',
    sluice_items_rejected_total: 'COUNTER',
    sluice_items_dropped_total: 'COUNTER',
    sluice_accepted_bytes_total: 'COUNTER',
    sluice_fixed_cost_ops_total: 'COUNTER',
    sluice_flushes_total: 'COUNTER',
    sluice_sink_transient_failures_total: 'COUNTER',
    sluice_sink_retries_total: 'COUNTER',
    sluice_sink_outages_total: 'COUNTER',
    sluice_sink_down_seconds: 'GAUGE',
    sluice_items_in_flight: 'GAUGE',
    sluice_queue_items: 'GAUGE',
    sluice_queue_bytes: 'GAUGE',
    sluice_spill_bytes: 'GAUGE',
    sluice_window_max_items: 'GAUGE',
    sluice_window_max_wait_seconds: 'GAUGE',
    sluice_ledger_balanced: 'GAUGE',
    sluice_sink_up: 'GAUGE',
    sluice_build_info: 'GAUGE',
    sluice_end_to_end_latency_seconds: 'HISTOGRAM',
    sluice_batch_wait_seconds: 'HISTOGRAM',
    sluice_batch_size_items: 'HISTOGRAM',
    process_cpu_seconds_total: 'COUNTER',
    process_resident_memory_bytes: 'GAUGE',
    nodejs_eventloop_lag_seconds: 'GAUGE',
  };
  for (const [name, type] of Object.entries(expected)) assert.equal(families.get(name)?.type, type, name);
  for (const [name, f] of families) {
    if (!name.startsWith('sluice_')) continue;
    assert.equal(name.endsWith('_total'), f.type === 'COUNTER', `${name} is ${f.type}`);
    assert.ok(!/_ms$|_millis/.test(name), `${name}: durations are in seconds`);
    assert.notEqual(f.type, 'SUMMARY', `${name}: quantiles since start cannot be rated or aggregated`);
  }
  const v = (name: string) => Number(families.get(name)!.metrics[0].value);
  assert.equal(v('sluice_items_accepted_total'), 35);
  assert.equal(v('sluice_items_committed_total'), 35);
  assert.equal(v('sluice_accepted_bytes_total'), 35 * 7);
  assert.equal(v('sluice_window_max_wait_seconds'), 0.001);
  assert.equal(v('sluice_ledger_balanced'), 1);
  assert.equal(v('sluice_sink_up'), 1);
  const info = families.get('sluice_build_info')!.metrics;
  assert.equal(info.length, 1);
  assert.equal(info[0].labels?.node_version, process.version);
  assert.match(info[0].labels?.version ?? '', /^\d+\.\d+\.\d+/);
  assert.equal(info[0].labels?.pipeline, 'px');
  await p.close();
});

test('histograms: cumulative buckets, +Inf = count, sum matches, the SLO is an exact bucket edge', async () => {
  const { p, metrics, text, families } = await exposition({ sloMs: 12 });
  const lat = families.get('sluice_end_to_end_latency_seconds')!.metrics[0];
  const edges = Object.keys(lat.buckets!).filter((k) => k !== '+Inf').map(Number);
  assert.ok(edges.includes(0.012), 'the configured SLO is a bucket edge');
  for (const e of LATENCY_BUCKETS_S) assert.ok(edges.includes(e), `edge ${e}`);
  const counts = edges.sort((a, b) => a - b).map((e) => Number(lat.buckets![String(e)]));
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i] >= counts[i - 1], 'cumulative');
  assert.equal(Number(lat.buckets!['+Inf']), 35);
  assert.equal(sample(text, 'sluice_end_to_end_latency_seconds_count'), 35);
  assert.ok(counts[counts.length - 1] <= 35);
  assert.ok(Math.abs(sample(text, 'sluice_end_to_end_latency_seconds_sum') - metrics.latency.sumMs() / 1000) < 1e-9);
  assert.equal(Number(families.get('sluice_slo_p99_seconds')!.metrics[0].value), 0.012);
  const batches = families.get('sluice_batch_size_items')!.metrics[0];
  assert.equal(sample(text, 'sluice_batch_size_items_sum'), 35);
  assert.equal(sample(text, 'sluice_batch_size_items_count'), metrics.batchSize.count);
  assert.equal(Number(batches.buckets!['+Inf']), metrics.batchSize.count);
  // 3 batches of 10 and one of 5: 1 batch ≤ 8 (the 5), all 4 ≤ 16.
  assert.equal(Number(batches.buckets!['8']), 1);
  assert.equal(Number(batches.buckets!['16']), 4);
  await p.close();
});

test('LatencyHistogram.cumulativeAtMs counts each value under the first edge at or above it', () => {
  const h = new LatencyHistogram();
  for (const ms of [0.4, 0.9, 4, 9.99, 10, 19, 21, 1000]) h.recordMs(ms);
  assert.deepEqual(h.cumulativeAtMs([0.5, 1, 5, 10, 20, 25, 60_000]), [1, 2, 3, 5, 6, 7, 8]);
});

test('LatencyHistogram.intervalReader: each read covers only what was recorded since the last one', () => {
  const h = new LatencyHistogram();
  const read = h.intervalReader();
  for (let i = 0; i < 100; i++) h.recordMs(50);
  const a = read();
  assert.equal(a.count, 100);
  for (let i = 0; i < 200; i++) h.recordMs(2);
  const b = read();
  assert.equal(b.count, 200);
  assert.ok(b.p99 >= 1.99 && b.p99 <= 2.01, `p99 of the second interval ${b.p99}`);
  assert.equal(read().count, 0);
});

test('sluice_sink_up: 0 while the sink fails transiently (retried, not dropped), 1 again once it answers; an item failure is not an outage', async () => {
  const flaky = new FlakySink<unknown>(new MemorySink<unknown>(), Infinity);
  const metrics = new PipelineMetrics<unknown>(flaky);
  // The default handler: transient failures retried until the sink is back.
  const p = new Pipeline<unknown>({ sink: flaky, retry: { baseMs: 1, maxMs: 5 }, window: { maxItems: 5, maxWaitMs: 1 }, observers: [metrics], name: 'down' });
  const expo = prometheusFor(p, metrics, {}, { processMetrics: false });
  const value = async (name: string) => Number(parse(await expo.text()).get(name)!.metrics[0].value);
  assert.equal(await value('sluice_sink_up'), 1, 'up before any write');
  await p.put(envelope({ a: 1 }, { bytes: 1, intendedAtMs: performance.now() }));
  void p.flush();
  while (flaky.calls < 3) await new Promise((r) => setTimeout(r, 5));
  assert.equal(await value('sluice_sink_up'), 0, 'down while the write is retried');
  assert.ok((await value('sluice_sink_transient_failures_total')) >= 2);
  assert.equal(await value('sluice_sink_outages_total'), 1);
  flaky.failures = 0;
  await p.flush();
  await p.close();
  assert.equal(await value('sluice_sink_up'), 1, 'a retry succeeded');
  assert.ok((await value('sluice_sink_retries_total')) >= 2);
  assert.equal(p.stats().ledger.committed, 1, 'nothing dropped while the sink was down');

  // A poison record: the sink answered (refused one record); split-and-retry isolates it.
  const poisoned = new PoisonedSink<unknown>(new Set(['bad']));
  const dead = new MemoryDeadLetters<unknown>();
  const m2 = new PipelineMetrics<unknown>(poisoned);
  const p2 = new Pipeline<unknown>({
    sink: poisoned,
    handler: splitAndRetry(poisoned, { dlq: dead }),
    window: { maxItems: 4, maxWaitMs: 1 },
    observers: [m2],
    name: 'poison',
  });
  const e2 = prometheusFor(p2, m2, {}, { processMetrics: false });
  for (const id of ['g1', 'bad', 'g2', 'g3']) await p2.put(envelope({ id }, { bytes: 1, id, intendedAtMs: performance.now() }));
  await p2.flush();
  const f2 = parse(await e2.text());
  assert.equal(Number(f2.get('sluice_sink_up')!.metrics[0].value), 1);
  assert.equal(Number(f2.get('sluice_sink_outages_total')!.metrics[0].value), 0);
  assert.equal(Number(f2.get('sluice_items_dead_lettered_total')!.metrics[0].value), 1);
  assert.deepEqual(dead.ids(), ['bad']);
  await p2.close();
});
