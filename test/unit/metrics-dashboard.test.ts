/**
 * deploy/grafana/sluice.json against deploy/prometheus/alerts.yml and what Sluice really
 * exposes (no Grafana server): the dashboard is valid JSON with PromQL targets; every metric
 * an alert uses is on some panel; every metric a panel or an alert uses is one that `sluice
 * serve`, `sluice run --metrics-port` or the window controller's metrics export.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { startServer } from '../../packages/sluice/src/sources/http.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { PipelineMetrics } from '../../packages/sluice/src/metrics/metrics.js';
import { prometheusFor } from '../../packages/sluice/src/metrics/prometheus.js';
import { registerControllerMetrics } from '../../packages/sluice/src/metrics/controller-prometheus.js';
import { AimdController } from '../../packages/sluice/src/core/controller.js';
import { startService } from '../../packages/sluice/src/run/service.js';
import { resolveRunConfig } from '../../packages/sluice/src/run/config.js';
import { EmbeddedLogWriter } from '../../packages/sluice/src/sources/embedded-log.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: { refId: string; expr: string }[];
}

/** Metric families named in a PromQL expression (histogram series reduced to their family). */
function metricsIn(expr: string, histograms: Set<string>): string[] {
  const out = new Set<string>();
  // Drop label matchers and strings first: label names and values are not metrics.
  const bare = expr.replace(/\{[^}]*\}/g, '').replace(/"[^"]*"/g, '');
  for (const [name] of bare.matchAll(/\b(?:sluice|process|nodejs)_[a-z0-9_]+\b/g)) {
    const family = name.replace(/_(bucket|sum|count)$/, '');
    out.add(histograms.has(family) ? family : name);
  }
  return [...out];
}

/** Family name → type, from Prometheus text. */
function families(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
}

async function exposedBySluice(): Promise<Map<string, string>> {
  const all = new Map<string, string>();
  // serve, with an item through it
  const server = await startServer({ sink: new MemorySink<unknown>() });
  try {
    await fetch(`${server.url}/ingest`, { method: 'POST', body: '{"a":1}\n' });
    for (const [k, v] of families(await (await fetch(`${server.url}/metrics`)).text())) all.set(k, v);
  } finally {
    await server.close();
  }
  // a configured SLO and the window controller's metrics
  const sink = new MemorySink<unknown>();
  const metrics = new PipelineMetrics<unknown>(sink);
  const c = new AimdController<unknown>({ sloMs: 20 });
  const p = new Pipeline<unknown>({ sink, observers: [metrics, c], name: 'ctl' });
  c.attach(p);
  const expo = prometheusFor(p, metrics, {}, { sloMs: 20, processMetrics: false });
  registerControllerMetrics(expo.registry, c);
  for (const [k, v] of families(await expo.text())) all.set(k, v);
  await p.close();
  // run, with its metrics port (the source lag)
  const dir = await mkdtemp(join(tmpdir(), 'sluice-dash-'));
  try {
    const log = join(dir, 'log.ndjson');
    await (await EmbeddedLogWriter.open(log)).close();
    const svc = await startService(resolveRunConfig(undefined, { source: log, sink: join(dir, 'out.ndjson'), metricsPort: 0 }));
    try {
      for (const [k, v] of families(await (await fetch(svc.describe.metricsUrl!)).text())) all.set(k, v);
    } finally {
      await svc.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return all;
}

test('the Grafana dashboard covers every metric the alerts use, and uses only metrics Sluice exposes', async () => {
  const dash = JSON.parse(await readFile('deploy/grafana/sluice.json', 'utf8'));
  assert.equal(typeof dash.title, 'string');
  assert.equal(typeof dash.uid, 'string');
  assert.ok(Number.isInteger(dash.schemaVersion));
  const panels = dash.panels as Panel[];
  assert.ok(panels.length > 0);
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'panel ids are unique');
  for (const p of panels) {
    assert.ok(p.title && p.type && p.gridPos, `panel ${p.id} has a title, a type and a position`);
    assert.ok(p.gridPos.x + p.gridPos.w <= 24, `panel ${p.title} fits the 24-column grid`);
    assert.ok(p.targets.length > 0 && p.targets.every((t) => t.expr && t.refId), `panel ${p.title} has PromQL targets`);
  }

  const exposed = await exposedBySluice();
  const histograms = new Set([...exposed].filter(([, t]) => t === 'histogram').map(([k]) => k));
  const panelMetrics = new Set(panels.flatMap((p) => p.targets.flatMap((t) => metricsIn(t.expr, histograms))));

  const rules = parseYaml(await readFile('deploy/prometheus/alerts.yml', 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  const alertRules = rules.groups.flatMap((g) => g.rules);
  assert.ok(alertRules.length >= 6);
  const alertMetrics = new Set(alertRules.flatMap((r) => metricsIn(r.expr, histograms)));
  assert.ok(alertMetrics.size >= 8, `metrics found in the alerts: ${[...alertMetrics]}`);

  const missingFromPanels = [...alertMetrics].filter((m) => !panelMetrics.has(m));
  assert.deepEqual(missingFromPanels, [], 'alert metrics with no panel');
  const notExposed = [...new Set([...panelMetrics, ...alertMetrics])].filter((m) => !exposed.has(m));
  assert.deepEqual(notExposed, [], 'metrics used by the dashboard or the alerts that Sluice does not expose');
  // The variables are read from a series every Sluice process exposes.
  for (const v of dash.templating.list.filter((x: { type: string }) => x.type === 'query')) assert.match(v.query.query, /sluice_build_info/);
  assert.equal(exposed.get('sluice_build_info'), 'gauge');
});
