/**
 * A real Prometheus (Debian `prometheus`: its own port, its own temporary storage, killed in
 * `finally`) scrapes a running `sluice serve` with deploy/prometheus/alerts.yml loaded; the
 * test asks Prometheus's HTTP API until Sluice's series arrive, with the types Sluice declared
 * and the alert rules loaded. Bounds are generous and nothing about speed is asserted.
 *
 * Without /usr/bin/prometheus the test is skipped outside CI and fails in CI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { inCI } from '../helpers/services.js';
import { startServer } from '../../packages/sluice/src/sources/http.js';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';

const PROMETHEUS = process.env.PROMETHEUS_PATH ?? '/usr/bin/prometheus';

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

async function until<T>(what: string, f: () => Promise<T | null>, timeoutMs = 90_000): Promise<T> {
  const t0 = Date.now();
  let last: unknown = null;
  for (;;) {
    try {
      const v = await f();
      if (v !== null) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
    await sleep(500);
  }
}

test('a real Prometheus scrapes sluice serve: the series arrive with their types, the alert rules load', async (t) => {
  if (!existsSync(PROMETHEUS)) {
    const msg = `prometheus not found at ${PROMETHEUS} (apt-get install -y prometheus)`;
    if (inCI) throw new Error(`${msg}: required in CI`);
    t.skip(msg);
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'sluice-prom-'));
  let prom: ChildProcess | null = null;
  let promLog = '';
  const server = await startServer({ sink: await new FileSink<unknown>({ path: join(dir, 'out.jsonl') }).open() });
  let loading = true;
  const load = (async () => {
    let i = 0;
    while (loading) {
      const body = Array.from({ length: 20 }, () => JSON.stringify({ i: i++ })).join('\n');
      await fetch(`${server.url}/ingest`, { method: 'POST', body }).then((r) => r.arrayBuffer());
      await sleep(20);
    }
  })();
  try {
    const port = await freePort();
    const target = new URL(server.url).host;
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${JSON.stringify(resolve('deploy/prometheus/alerts.yml'))}`,
        'scrape_configs:',
        '  - job_name: sluice',
        '    static_configs:',
        `      - targets: [${JSON.stringify(target)}]`,
        '',
      ].join('\n'),
    );
    prom = spawn(
      PROMETHEUS,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prom.stdout!.on('data', (d) => (promLog += d));
    prom.stderr!.on('data', (d) => (promLog = (promLog + d).slice(-8000)));
    const api = `http://127.0.0.1:${port}`;
    const get = async (path: string) => {
      const r = await fetch(`${api}${path}`);
      if (!r.ok) throw new Error(`${path}: ${r.status}`);
      return (await r.json()) as { status: string; data: unknown };
    };
    await until('Prometheus ready', async () => ((await fetch(`${api}/-/ready`)).ok ? true : null));

    const query = (q: string) => get(`/api/v1/query?query=${encodeURIComponent(q)}`).then((r) => (r.data as { result: { metric: Record<string, string>; value: [number, string] }[] }).result);
    const committed = await until('sluice_items_committed_total > 0', async () => {
      const r = await query('sluice_items_committed_total{job="sluice"}');
      return r.length > 0 && Number(r[0].value[1]) > 0 ? r[0] : null;
    });
    assert.equal(committed.metric.pipeline, 'serve');
    // Two scrapes apart at least, so rate() has two points.
    const rate = await until('rate(sluice_items_committed_total) > 0', async () => {
      const r = await query('rate(sluice_items_committed_total{job="sluice"}[30s])');
      return r.length > 0 && Number(r[0].value[1]) > 0 ? Number(r[0].value[1]) : null;
    });
    assert.ok(rate > 0);
    const p99 = await until('a p99 from the latency histogram', async () => {
      const r = await query('histogram_quantile(0.99, sum by (le) (rate(sluice_end_to_end_latency_seconds_bucket{job="sluice"}[30s])))');
      return r.length > 0 && Number.isFinite(Number(r[0].value[1])) ? Number(r[0].value[1]) : null;
    });
    assert.ok(p99 > 0, `p99 ${p99}`);
    for (const [name, value] of [
      ['sluice_sink_up', 1],
      ['sluice_ledger_balanced', 1],
      ['sluice_build_info', 1],
    ] as const) {
      const r = await query(`${name}{job="sluice"}`);
      assert.equal(r.length, 1, name);
      assert.equal(Number(r[0].value[1]), value, name);
    }
    assert.ok((await query('process_resident_memory_bytes{job="sluice"}')).length === 1, 'process metrics');

    // The types Prometheus recorded from the exposition.
    const meta = (await get('/api/v1/metadata')).data as Record<string, { type: string }[]>;
    const typeOf = (m: string) => meta[m]?.[0]?.type;
    assert.equal(typeOf('sluice_items_accepted_total'), 'counter');
    assert.equal(typeOf('sluice_items_dropped_total'), 'counter');
    assert.equal(typeOf('sluice_end_to_end_latency_seconds'), 'histogram');
    assert.equal(typeOf('sluice_batch_size_items'), 'histogram');
    assert.equal(typeOf('sluice_sink_up'), 'gauge');

    // The alert rules loaded, and none fires on a healthy pipeline.
    const rules = (await get('/api/v1/rules?type=alert')).data as { groups: { rules: { name: string; health: string; state: string }[] }[] };
    const loaded = rules.groups.flatMap((g) => g.rules);
    assert.equal(loaded.length, 6);
    for (const r of loaded) assert.notEqual(r.health, 'err', `rule ${r.name}`);
    assert.deepEqual(loaded.filter((r) => r.state === 'firing').map((r) => r.name), []);
  } catch (e) {
    throw new Error(`${(e as Error).message}\nprometheus log (tail):\n${promLog.slice(-2000)}`, { cause: e });
  } finally {
    loading = false;
    await load.catch(() => {});
    if (prom && prom.exitCode === null) {
      const exited = new Promise((r) => prom!.once('exit', r));
      prom.kill('SIGTERM');
      const killTimer = setTimeout(() => prom!.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killTimer);
    }
    const ledger = await server.close();
    assert.equal(ledger.balanced, true);
    await rm(dir, { recursive: true, force: true });
  }
});
