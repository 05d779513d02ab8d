/**
 * The sink's health for Prometheus (issue 19): up or down, the current outage's length, and
 * the retry counters the reliability handlers keep. Read from `SinkHealth.snapshot()` at
 * scrape time, so the write path never touches prom-client. Counters are typed `counter`
 * (`rate()` works on them); they are set from the handler's own monotonic counts.
 */
import client from 'prom-client';
import type { SinkHealth } from '../core/reliability.js';

export function registerSinkHealthMetrics(registry: client.Registry, health: SinkHealth): void {
  const registers = [registry];
  new client.Gauge({
    name: 'sluice_sink_up',
    help: '1 while the sink answers, 0 from its first transient failure until a write succeeds again.',
    registers,
    collect() {
      this.set(health.isUp() ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'sluice_sink_down_seconds',
    help: 'Length of the current sink outage (0 while up).',
    registers,
    collect() {
      this.set((health.snapshot().downForMs ?? 0) / 1000);
    },
  });
  const counter = (name: string, help: string, read: (s: ReturnType<SinkHealth['snapshot']>) => number) =>
    new client.Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read(health.snapshot()));
      },
    });
  counter('sluice_sink_outages_total', 'Times the sink went down (a transient failure after being up).', (s) => s.outages);
  counter('sluice_sink_transient_failures_total', 'Writes that failed with a transient error (each is retried).', (s) => s.transientFailures);
  counter('sluice_sink_retries_total', 'Retries of a batch after a transient failure.', (s) => s.retries);
  counter('sluice_sink_write_timeouts_total', 'Writes still pending after writeTimeoutMs (counted as transient failures).', (s) => s.timeouts);
  counter('sluice_sink_retry_exhausted_total', 'Batches given up after a finite retry budget (failed loudly, never dead-lettered).', (s) => s.exhausted);
}
