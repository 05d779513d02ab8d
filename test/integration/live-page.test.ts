/**
 * The live page in headless Chromium (Debian `chromium`, driven by playwright-core, as the
 * report test does): opened on a running `sluice serve` under load and on `sluice run`'s
 * metrics port while records are appended to its log. The charts must update (more points
 * drawn as samples arrive, items committed per second > 0), the page must log no errors and
 * request nothing but its own server. Screenshots go to test-output/live/ (git-ignored).
 *
 * Without /usr/bin/chromium the test is skipped outside CI and fails in CI.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Page } from 'playwright-core';
import { inCI } from '../helpers/services.js';
import { startServer } from '../../packages/sluice/src/sources/http.js';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';
import { startService } from '../../packages/sluice/src/run/service.js';
import { resolveRunConfig } from '../../packages/sluice/src/run/config.js';
import { EmbeddedLogWriter } from '../../packages/sluice/src/sources/embedded-log.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OUT = resolve('test-output/live');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

function requireChromium(t: TestContext): boolean {
  if (existsSync(CHROMIUM)) return true;
  const msg = `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;
  if (inCI) throw new Error(`${msg}: required in CI`);
  t.skip(msg);
  return false;
}

interface Seen {
  samples: number;
  points: Record<string, number>;
  tiles: Record<string, string>;
  rates: number[] | null;
}

const read = (page: Page): Promise<Seen> =>
  page.evaluate(() => {
    const points: Record<string, number> = {};
    for (const c of Array.from(document.querySelectorAll('canvas'))) points[c.id] = Number(c.dataset.points);
    const tiles: Record<string, string> = {};
    for (const e of Array.from(document.querySelectorAll('.tile .v'))) tiles[e.id] = e.textContent ?? '';
    const r = (document.getElementById('chart-rates') as HTMLCanvasElement | null)?.dataset.last;
    return { samples: Number(document.body.dataset.samples), points, tiles, rates: r ? JSON.parse(r) : null };
  });

async function waitFor(page: Page, what: string, cond: (s: Seen) => boolean, timeoutMs = 60_000): Promise<Seen> {
  const t0 = Date.now();
  for (;;) {
    const s = await read(page);
    if (cond(s)) return s;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
    await sleep(200);
  }
}

/** Opens `url` and checks the charts update while load runs; returns what the page showed last. */
async function watch(url: string, shot: string, kind: 'serve' | 'run'): Promise<Seen> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    const foreign: string[] = [];
    const origin = new URL(url).origin;
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => {
      if (!r.url().startsWith(origin)) foreign.push(r.url());
    });
    await page.goto(url, { waitUntil: 'load' });
    const first = await waitFor(page, 'three samples with items committed', (s) => s.samples >= 3 && (s.rates?.[1] ?? 0) > 0);
    const later = await waitFor(page, 'two more samples', (s) => s.samples >= first.samples + 2);
    // The charts update: more points drawn on every chart that has data.
    for (const id of ['chart-rates', 'chart-latency', 'chart-queue', 'chart-windowItems', 'chart-windowWait'])
      assert.ok(later.points[id] > first.points[id], `${id}: ${first.points[id]} → ${later.points[id]} points`);
    assert.notEqual(later.tiles['t-committed'], '–');
    assert.match(later.tiles['t-p99'], /\/ 20 ms$/, 'p99 against the SLO (the lab default when none is configured)');
    assert.equal(later.tiles['t-sink'], 'up');
    assert.equal(later.tiles['t-ledger'], 'balanced');
    const lagVisible = await page.isVisible('#tile-lag');
    assert.equal(lagVisible, kind === 'run', 'the source lag shows for run only');
    await mkdir(OUT, { recursive: true });
    await page.screenshot({ path: join(OUT, shot), fullPage: true });
    assert.deepEqual(errors, [], 'console errors');
    assert.deepEqual(foreign, [], 'requests to anything but the server');
    return later;
  } finally {
    await browser.close();
  }
}

test('live page on sluice serve: the charts update under load', async (t) => {
  if (!requireChromium(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'sluice-live-'));
  const server = await startServer({ sink: await new FileSink<unknown>({ path: join(dir, 'out.jsonl') }).open() });
  let loading = true;
  const load = (async () => {
    let i = 0;
    while (loading) {
      const body = Array.from({ length: 50 }, () => JSON.stringify({ i: i++ })).join('\n');
      await fetch(`${server.url}/ingest`, { method: 'POST', body }).then((r) => r.arrayBuffer());
      await sleep(10);
    }
  })();
  try {
    await watch(`${server.url}/`, 'serve.png', 'serve');
  } finally {
    loading = false;
    await load.catch(() => {});
    const ledger = await server.close();
    assert.equal(ledger.balanced, true);
    await rm(dir, { recursive: true, force: true });
  }
});

test("live page on sluice run's metrics port: the charts update and the source lag shows", async (t) => {
  if (!requireChromium(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'sluice-live-run-'));
  const log = join(dir, 'log.ndjson');
  const w = await EmbeddedLogWriter.open(log);
  const svc = await startService(resolveRunConfig(undefined, { source: log, sink: join(dir, 'out.ndjson'), metricsPort: 0 }));
  let loading = true;
  const load = (async () => {
    let i = 0;
    while (loading) {
      await w.append(
        Array.from({ length: 50 }, () => {
          const id = `r${i++}`;
          return { id, data: Buffer.from(JSON.stringify({ id, n: i })) };
        }),
        { sync: false },
      );
      await sleep(20);
    }
  })();
  try {
    const seen = await watch(svc.describe.metricsUrl!.replace(/metrics$/, ''), 'run.png', 'run');
    assert.ok(seen.points['chart-lag'] > 0, 'lag chart drawn');
    assert.notEqual(seen.tiles['t-lag'], '–');
  } finally {
    loading = false;
    await load.catch(() => {});
    await w.close();
    const { ledger } = await svc.stop();
    assert.equal(ledger.balanced, true);
    await rm(dir, { recursive: true, force: true });
  }
});
