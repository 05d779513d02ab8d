/**
 * Window-controller metrics for Prometheus: the window the controller set, the p99 it last
 * acted on and its decisions by kind. Read from `controller.stats()` at scrape time, like the
 * pipeline's own metrics (src/metrics/prometheus.ts), so control never touches prom-client.
 * Register them on the pipeline's registry: `registerControllerMetrics(exposition.registry, aimd)`.
 */
import client from 'prom-client';
import type { WindowController } from '../core/controller.js';
import { collectedCounter, collectedGauge } from './prometheus.js';

export function registerControllerMetrics(registry: client.Registry, controller: Pick<WindowController, 'stats' | 'kind'>): void {
  // On the pipeline's own registry (`prometheusFor`), the window gauges already exist, read
  // from the pipeline the controller sets; registering them twice would throw.
  const gauge = (name: string, help: string, read: (g: client.Gauge) => void, labelNames: string[] = []) => {
    if (!registry.getSingleMetric(name)) collectedGauge(registry, name, help, read, labelNames);
  };
  gauge('sluice_window_max_items', 'Window size bound currently set (items).', (g) => g.set({ controller: controller.kind }, controller.stats().window.maxItems), ['controller']);
  gauge(
    'sluice_window_max_wait_seconds',
    'Window deadline currently set (seconds).',
    (g) => g.set({ controller: controller.kind }, controller.stats().window.maxWaitMs / 1000),
    ['controller'],
  );
  gauge(
    'sluice_controller_period_p99_seconds',
    'End-to-end p99 of the last control period (seconds).',
    (g) => g.set({ controller: controller.kind }, controller.stats().lastP99Ms / 1000),
    ['controller'],
  );
  if (!registry.getSingleMetric('sluice_controller_decisions_total'))
    collectedCounter(registry, 'sluice_controller_decisions_total', 'Control decisions taken, by decision (increase, decrease, hold).', () => {
      const s = controller.stats();
      return [
        { labels: { controller: controller.kind, decision: 'increase' }, value: s.increases },
        { labels: { controller: controller.kind, decision: 'decrease' }, value: s.decreases },
        { labels: { controller: controller.kind, decision: 'hold' }, value: s.holds },
      ];
    });
}
