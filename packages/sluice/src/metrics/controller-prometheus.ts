/**
 * Window-controller metrics for Prometheus: the window the controller set, the p99 it last
 * acted on and its decisions by kind. Read from `controller.stats()` at scrape time, like the
 * pipeline's own metrics (src/metrics/prometheus.ts), so control never touches prom-client.
 * Register them on the pipeline's registry: `registerControllerMetrics(exposition.registry, aimd)`.
 */
import client from 'prom-client';
import type { WindowController } from '../core/controller.js';
import { collectedGauge } from './prometheus.js';

export function registerControllerMetrics(registry: client.Registry, controller: Pick<WindowController, 'stats' | 'kind'>): void {
  // On the pipeline's own registry (`prometheusFor`), the window gauges already exist, read
  // from the pipeline the controller sets; registering them twice would throw.
  const gauge = (name: string, help: string, read: (g: client.Gauge) => void, labelNames: string[] = []) => {
    if (!registry.getSingleMetric(name)) collectedGauge(registry, name, help, read, labelNames);
  };
  gauge('sluice_window_max_items', 'Window size bound currently set (items).', (g) => g.set({ controller: controller.kind }, controller.stats().window.maxItems), ['controller']);
  gauge('sluice_window_max_wait_ms', 'Window deadline currently set (ms).', (g) => g.set({ controller: controller.kind }, controller.stats().window.maxWaitMs), ['controller']);
  gauge('sluice_controller_period_p99_ms', 'End-to-end p99 of the last control period (ms).', (g) => g.set({ controller: controller.kind }, controller.stats().lastP99Ms), ['controller']);
  // A count only ever grows: typed `counter` (with `_total`), so rate() and increase() apply.
  // Set from the controller's tally at scrape time: reset, then inc by the tally.
  if (!registry.getSingleMetric('sluice_controller_decisions_total'))
    new client.Counter({
      name: 'sluice_controller_decisions_total',
      help: 'Control decisions taken, by decision (increase, decrease, hold).',
      labelNames: ['controller', 'decision'],
      registers: [registry],
      collect() {
        const s = controller.stats();
        this.reset();
        this.inc({ controller: controller.kind, decision: 'increase' }, s.increases);
        this.inc({ controller: controller.kind, decision: 'decrease' }, s.decreases);
        this.inc({ controller: controller.kind, decision: 'hold' }, s.holds);
      },
    });
}
