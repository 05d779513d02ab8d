/**
 * Prometheus text exposition (prom-client). Values are read from the pipeline and its
 * metrics at scrape time (`collect`), so the hot path never touches prom-client.
 * End-to-end latency is exported as a summary whose quantiles come from the HDR histogram.
 */
import client from 'prom-client';
import type { Pipeline } from '../core/pipeline.js';
import type { PipelineMetrics } from './metrics.js';

export interface Exposition {
  registry: client.Registry;
  /** Prometheus text format. */
  text(): Promise<string>;
  contentType: string;
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

export function prometheusFor<T>(pipeline: Pipeline<T>, metrics: PipelineMetrics<T>, labels: Record<string, string> = {}): Exposition {
  const registry = new client.Registry();
  registry.setDefaultLabels({ pipeline: pipeline.name, ...labels });

  const gauge = (name: string, help: string, read: (g: client.Gauge) => void, labelNames: string[] = []) =>
    collectedGauge(registry, name, help, read, labelNames);

  gauge('sluice_items_accepted_total', 'Items accepted into the pipeline.', (g) => g.set(pipeline.stats().ledger.accepted));
  gauge('sluice_items_committed_total', 'Items whose batch the sink committed.', (g) => g.set(metrics.committed));
  gauge('sluice_items_dead_lettered_total', 'Items written to the dead-letter queue.', (g) => g.set(metrics.deadLettered));
  gauge('sluice_items_in_flight', 'Items queued, spilled or being written.', (g) => g.set(pipeline.inFlight()));
  gauge('sluice_items_rejected_total', 'Offers refused with an error (never accepted).', (g) => g.set(pipeline.stats().ledger.rejected));
  gauge(
    'sluice_items_dropped_total',
    'Items dropped, by reason.',
    (g) => {
      g.reset();
      for (const [reason, n] of metrics.dropped) g.set({ reason }, n);
    },
    ['reason'],
  );
  gauge('sluice_queue_items', 'Items waiting in the memory queue.', (g) => g.set(pipeline.stats().queueItems));
  gauge('sluice_queue_bytes', 'Bytes waiting in the memory queue.', (g) => g.set(pipeline.stats().queueBytes));
  gauge('sluice_spill_bytes', 'Bytes held in spill segments.', (g) => g.set(pipeline.stats().spilledBytes));
  gauge('sluice_bytes_in_total', 'Bytes accepted.', (g) => g.set(metrics.bytesIn));
  gauge(
    'sluice_fixed_cost_ops_total',
    'Fixed-cost sink operations really performed, by kind.',
    (g) => {
      const s = pipeline.sinkRef();
      g.reset();
      g.set({ kind: s.fixedCostKind }, s.fixedCostOps());
    },
    ['kind'],
  );
  gauge(
    'sluice_flushes_total',
    'Batches cut, by reason.',
    (g) => {
      for (const [reason, n] of Object.entries(metrics.flushReasons)) g.set({ reason }, n);
    },
    ['reason'],
  );
  gauge('sluice_window_max_items', 'Current window size bound.', (g) => g.set(pipeline.window().maxItems));
  gauge('sluice_window_max_wait_ms', 'Current window deadline.', (g) => g.set(pipeline.window().maxWaitMs));
  gauge(
    'sluice_batch_size',
    'Batch size quantiles (items).',
    (g) => {
      const s = metrics.batchSize.summary();
      g.set({ quantile: '0.5' }, s.p50);
      g.set({ quantile: '0.99' }, s.p99);
    },
    ['quantile'],
  );

  // A summary's quantiles come from the HDR histogram at scrape time.
  const latency = {
    name: 'sluice_end_to_end_latency_seconds',
    help: 'From each item\'s intended arrival time to its batch commit.',
    type: 'summary' as const,
    aggregator: 'sum' as const,
    get: async () => {
      const h = metrics.latency;
      const values = [0.5, 0.9, 0.99, 0.999].map((q) => ({ labels: { quantile: String(q) }, value: h.percentileMs(q * 100) / 1000 }));
      values.push({ labels: {} as { quantile: string }, value: h.sumMs() / 1000, metricName: 'sluice_end_to_end_latency_seconds_sum' } as never);
      values.push({ labels: {} as { quantile: string }, value: h.count, metricName: 'sluice_end_to_end_latency_seconds_count' } as never);
      // `MetricType` is a type-only enum in prom-client's typings (undefined at run time, and
      // numeric): the exposition needs the string the registry prints after `# TYPE`.
      return { name: latency.name, help: latency.help, type: 'summary' as unknown as client.MetricType, aggregator: latency.aggregator, values };
    },
    reset: () => {},
  };
  registry.registerMetric(latency as unknown as client.Metric);

  return { registry, text: () => registry.metrics(), contentType: registry.contentType };
}
