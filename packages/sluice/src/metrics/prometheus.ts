/**
 * Prometheus text exposition (prom-client). Values are read from the pipeline and its
 * metrics at scrape time (`collect`), so the hot path never touches prom-client.
 *
 * Conventions (https://prometheus.io/docs/practices/naming/): counters are typed `counter`
 * and end in `_total`; durations are histograms in seconds (`_seconds`); sizes in bytes end
 * in `_bytes`. The histograms' buckets are computed at scrape time from the HDR histograms
 * the pipeline records anyway. Renamed series are listed in docs/serve.md ("Metrics").
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import client from 'prom-client';
import type { Pipeline } from '../core/pipeline.js';
import type { PipelineMetrics } from './metrics.js';
import { registerSinkHealthMetrics } from './sink-health.js';

export interface Exposition {
  registry: client.Registry;
  /** Prometheus text format. */
  text(): Promise<string>;
  contentType: string;
}

export interface ExpositionOptions {
  /** prom-client's default process and Node.js metrics (`process_*`, `nodejs_*`). @default true */
  processMetrics?: boolean;
  /**
   * The p99 objective (ms), when one is configured: exported as `sluice_slo_p99_seconds` (the
   * alert `SluiceP99OverSlo` compares against it) and added as a latency bucket edge, so the
   * SLO is an exact `le` bound.
   */
  sloMs?: number;
}

/**
 * Latency bucket edges (seconds). 0.017 and 0.02 are the lab's SLO − margin and SLO
 * (`sluice lab window`, default `--slo-ms 20`, margin 15%: docs/window.md "Experiment
 * window"), so `histogram_quantile` is exact at the default alert threshold.
 */
export const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.017, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Batch size bucket edges (items): powers of two up to the largest window (4096) and beyond. */
export const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536];

type Labels = Record<string, string | number>;
interface Sample {
  labels?: Labels;
  value: number;
  metricName?: string;
}

/**
 * Registers a metric whose samples are produced at scrape time by `read`. prom-client's
 * Counter has no `set`, and its Histogram only observes; a value kept elsewhere (the ledger,
 * an HDR histogram) is exported through its own `get`, which the registry prints as is.
 */
export function collectedMetric(
  registry: client.Registry,
  name: string,
  help: string,
  type: 'counter' | 'gauge' | 'histogram',
  read: () => Sample[] | Promise<Sample[]>,
): void {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    // `MetricType` is a type-only enum in prom-client's typings (undefined at run time, and
    // numeric): the exposition needs the string the registry prints after `# TYPE`.
    get: async () => ({ name, help, type, aggregator: 'sum', values: await read() }),
    reset: () => {},
  };
  registry.registerMetric(metric as unknown as client.Metric);
}

/** A counter whose value (or values by label) is read at scrape time. */
export function collectedCounter(registry: client.Registry, name: string, help: string, read: () => number | Sample[]): void {
  collectedMetric(registry, name, help, 'counter', () => {
    const v = read();
    return typeof v === 'number' ? [{ value: v }] : v;
  });
}

/** A gauge whose value is read at scrape time by `read` (no work on the hot path). */
export function collectedGauge(
  registry: client.Registry,
  name: string,
  help: string,
  read: (g: client.Gauge) => void,
  labelNames: string[] = [],
): client.Gauge {
  return new client.Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      read(this);
    },
  });
}

/** The samples of one histogram: cumulative `_bucket`s (with `+Inf`), `_sum`, `_count`. */
export function histogramSamples(name: string, bounds: readonly number[], cumulative: readonly number[], sum: number, count: number, labels: Labels = {}): Sample[] {
  const out: Sample[] = bounds.map((le, i) => ({ metricName: `${name}_bucket`, labels: { ...labels, le: String(le) }, value: cumulative[i] }));
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count });
  out.push({ metricName: `${name}_sum`, labels, value: sum });
  out.push({ metricName: `${name}_count`, labels, value: count });
  return out;
}

let version: string | undefined;
/** Sluice's version, from the nearest package.json above this module (src/ or dist/src/). */
export function sluiceVersion(): string {
  if (version !== undefined) return version;
  version = 'unknown';
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      try {
        version = String(JSON.parse(readFileSync(p, 'utf8')).version ?? 'unknown');
      } catch {
        // unreadable: keep 'unknown'
      }
      break;
    }
    dir = dirname(dir);
  }
  return version;
}

export function prometheusFor<T>(pipeline: Pipeline<T>, metrics: PipelineMetrics<T>, labels: Record<string, string> = {}, opts: ExpositionOptions = {}): Exposition {
  const registry = new client.Registry();
  registry.setDefaultLabels({ pipeline: pipeline.name, ...labels });
  if (opts.processMetrics ?? true) client.collectDefaultMetrics({ register: registry });

  const gauge = (name: string, help: string, read: (g: client.Gauge) => void, labelNames: string[] = []) =>
    collectedGauge(registry, name, help, read, labelNames);
  const counter = (name: string, help: string, read: () => number | Sample[]) => collectedCounter(registry, name, help, read);

  gauge('sluice_build_info', 'Always 1; the labels say which Sluice and which Node.js.', (g) => g.set({ version: sluiceVersion(), node_version: process.version }, 1), [
    'version',
    'node_version',
  ]);

  counter('sluice_items_accepted_total', 'Items accepted into the pipeline.', () => pipeline.ledger.accepted);
  counter('sluice_items_committed_total', 'Items whose batch the sink committed.', () => metrics.committed);
  counter('sluice_items_dead_lettered_total', 'Items written to the dead-letter queue.', () => metrics.deadLettered);
  counter('sluice_items_rejected_total', 'Offers refused with an error (never accepted).', () => pipeline.ledger.rejected);
  counter('sluice_items_dropped_total', 'Items dropped, by reason.', () => [...metrics.dropped].map(([reason, value]) => ({ labels: { reason }, value })));
  counter('sluice_accepted_bytes_total', 'Bytes of the items accepted.', () => metrics.bytesIn);
  counter('sluice_fixed_cost_ops_total', 'Fixed-cost sink operations really performed, by kind.', () => {
    const s = pipeline.sinkRef();
    return [{ labels: { kind: s.fixedCostKind }, value: s.fixedCostOps() }];
  });
  counter('sluice_flushes_total', 'Batches cut, by reason.', () => Object.entries(metrics.flushReasons).map(([reason, value]) => ({ labels: { reason }, value })));

  gauge('sluice_items_in_flight', 'Items queued, spilled or being written.', (g) => g.set(pipeline.inFlight()));
  gauge('sluice_queue_items', 'Items waiting in the memory queue.', (g) => g.set(pipeline.stats().queueItems));
  gauge('sluice_queue_bytes', 'Bytes waiting in the memory queue.', (g) => g.set(pipeline.stats().queueBytes));
  gauge('sluice_spill_bytes', 'Bytes held in spill segments.', (g) => g.set(pipeline.stats().spilledBytes));
  gauge('sluice_window_max_items', 'Current window size bound (items).', (g) => g.set(pipeline.window().maxItems));
  gauge('sluice_window_max_wait_seconds', 'Current window deadline (seconds).', (g) => g.set(pipeline.window().maxWaitMs / 1000));
  gauge(
    'sluice_ledger_balanced',
    '1 while accepted = committed + dropped + dead_lettered + in_flight holds, else 0 (a bug: nothing may be lost silently).',
    (g) => g.set(pipeline.stats().ledger.balanced ? 1 : 0),
  );
  // sluice_sink_up and the retry counters: from the handler's SinkHealth (the default handler
  // and the reliability decorators keep one; a custom handler without one exports none).
  const health = pipeline.sinkHealth();
  if (health) registerSinkHealthMetrics(registry, health);
  const latencyBounds = [...LATENCY_BUCKETS_S];
  if (opts.sloMs !== undefined && Number.isFinite(opts.sloMs) && opts.sloMs > 0) {
    const slo = opts.sloMs / 1000;
    gauge('sluice_slo_p99_seconds', 'The configured p99 objective for end-to-end latency (seconds).', (g) => g.set(slo));
    if (!latencyBounds.includes(slo)) latencyBounds.push(slo);
    latencyBounds.sort((a, b) => a - b);
  }

  collectedMetric(registry, 'sluice_end_to_end_latency_seconds', "From each item's intended arrival time to its batch commit.", 'histogram', () => {
    const h = metrics.latency;
    return histogramSamples('sluice_end_to_end_latency_seconds', latencyBounds, h.cumulativeAtMs(latencyBounds.map((b) => b * 1000)), h.sumMs() / 1000, h.count);
  });
  collectedMetric(registry, 'sluice_batch_wait_seconds', "How long each batch's oldest item waited in the queue before the cut.", 'histogram', () => {
    const h = metrics.batchWait;
    return histogramSamples('sluice_batch_wait_seconds', LATENCY_BUCKETS_S, h.cumulativeAtMs(LATENCY_BUCKETS_S.map((b) => b * 1000)), h.sumMs() / 1000, h.count);
  });
  collectedMetric(registry, 'sluice_batch_size_items', 'Items per batch cut.', 'histogram', () => {
    const h = metrics.batchSize;
    return histogramSamples('sluice_batch_size_items', BATCH_BUCKETS, h.cumulativeAt(BATCH_BUCKETS), metrics.batchItems, h.count);
  });

  return { registry, text: () => registry.metrics(), contentType: registry.contentType };
}
