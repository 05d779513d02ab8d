/**
 * Builds a report from a small fixture results directory and opens its index.html in
 * headless Chromium (Debian `chromium`, driven by playwright-core): every chart image must
 * load, the page must log no errors and fetch nothing from the network. A screenshot is
 * saved under test-output/report/ (git-ignored).
 *
 * Without /usr/bin/chromium the test is skipped outside CI and fails in CI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { inCI } from '../helpers/services.js';
import { batchingResult, windowResult } from '../helpers/report-fixtures.js';
import { buildReport } from '../../packages/lab/src/report.js';
import { runExperiment } from '../../packages/lab/src/runner.js';
import { silentProgress } from '../../packages/lab/src/progress.js';
import { batching } from '../../packages/lab/src/experiments/batching.js';
import { colorScale } from '../../packages/lab/src/charts.js';
import { check } from '../../packages/lab/src/checks.js';
import type { Experiment } from '../../packages/lab/src/types.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OUT = resolve('test-output/report');

/** A tiny experiment registered only here: one good chart, one broken chart. */
const stub: Experiment = {
  name: 'stub',
  title: 'Stub: a histogram of batch sizes',
  description: 'A test-only experiment with one chart that renders and one that cannot.',
  async run() {
    const histogram: [number, number][] = [
      [64, 3],
      [128, 10],
      [256, 25],
      [512, 60],
    ];
    return { histogram, checks: [check('median batch ≥ 0.8 × maxItems', 480, '>=', 409.6), check('a failing check', 3, '<=', 1)] };
  },
  markdown(r) {
    const h = r.histogram as [number, number][];
    return `### stub\n\nBatch sizes by **upper bound**:\n\n| upper bound | batches |\n| --- | --- |\n${h.map(([b, n]) => `| ${b} | ${n} |`).join('\n')}`;
  },
  charts(r) {
    const values = (r.histogram as [number, number][]).map(([bound, count]) => ({ bound: String(bound), count, load: 'peak' }));
    return [
      {
        id: 'stub-histogram',
        title: 'Batch size histogram at peak load',
        caption: 'Most batches fill the window: flushes by size.',
        spec: {
          data: { values },
          mark: 'bar',
          encoding: {
            x: { field: 'bound', type: 'ordinal', title: 'batch size upper bound (items)', sort: null },
            y: { field: 'count', type: 'quantitative', title: 'batches (count)' },
            color: { field: 'load', type: 'nominal', scale: colorScale(['low', 'peak']), title: null },
          },
        },
      },
      { id: 'stub-broken', title: 'A chart that cannot render', caption: 'Never drawn.', spec: { mark: 'no-such-mark', data: { values: [] } } },
    ];
  },
};

test('index.html renders every chart in headless Chromium with no errors', async (t) => {
  if (!existsSync(CHROMIUM)) {
    const msg = `chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;
    if (inCI) throw new Error(`${msg}: required in CI`);
    t.skip(msg);
    return;
  }
  await rm(OUT, { recursive: true, force: true });
  await mkdir(join(OUT, 'results'), { recursive: true });
  const logLines: string[] = [];
  await runExperiment(stub, { quick: true, outDir: OUT, sloMs: 20, sink: 'file', progress: silentProgress, log: () => {} });
  await writeFile(join(OUT, 'results', 'batching.json'), JSON.stringify(batchingResult(), null, 2));
  // A result whose experiment this build does not know: listed with its checks only.
  await writeFile(join(OUT, 'results', 'window.json'), JSON.stringify(windowResult(), null, 2));
  await writeFile(join(OUT, 'results', 'garbage.json'), '{ not json');

  const files = await buildReport(OUT, { experiments: [batching, stub], log: (l) => logLines.push(l) });
  assert.deepEqual(files, [join(OUT, 'REPORT.md'), join(OUT, 'index.html')]);
  // The broken chart and the broken file cost one line each, not the report.
  assert.equal(logLines.filter((l) => l.includes('stub-broken')).length, 1, logLines.join('\n'));
  assert.equal(logLines.filter((l) => l.includes('garbage.json')).length, 1, logLines.join('\n'));

  const md = await readFile(join(OUT, 'REPORT.md'), 'utf8');
  assert.match(md, /\| \[batching\]\(#exp-batching\) \| 3 \| 0 \|/);
  assert.match(md, /\| \[stub\]\(#exp-stub\) \| 1 \| 1 \|/);
  assert.match(md, /\| \[window\]\(#exp-window\) \| 1 \| 0 \|/);
  for (const m of md.matchAll(/!\[[^\]]*\]\((charts\/[^)]+\.png)\)/g)) assert.ok(existsSync(join(OUT, m[1])), `${m[1]} exists`);
  assert.equal([...md.matchAll(/!\[/g)].length, 4, 'three batching charts and the stub histogram');
  assert.match(md, /## Write-up[\s\S]*What was amortized[\s\S]*Why this window/);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors: string[] = [];
    const failed: string[] = [];
    const external: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText ?? ''}`));
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith('file:')) return route.continue();
      external.push(url);
      return route.abort();
    });
    await page.goto(pathToFileURL(join(OUT, 'index.html')).href, { waitUntil: 'load' });

    const charts = await page.$$eval('figure.chart', (figs) =>
      figs.map((f) => {
        const img = f.querySelector('img');
        const svg = f.querySelector('svg');
        return {
          id: f.id,
          title: f.querySelector('h4')?.textContent ?? '',
          caption: f.querySelector('figcaption')?.textContent ?? '',
          naturalWidth: img ? img.naturalWidth : 0,
          complete: img ? img.complete : false,
          svgChildren: svg ? svg.childElementCount : 0,
        };
      }),
    );
    assert.deepEqual(
      charts.map((c) => c.id),
      ['chart-batching-throughput', 'chart-batching-p99', 'chart-batching-fixed-cost', 'chart-stub-histogram'],
    );
    for (const c of charts) {
      assert.ok(c.title.length > 0 && c.caption.length > 0, `${c.id} has a title and caption`);
      assert.ok((c.complete && c.naturalWidth > 0) || c.svgChildren > 0, `${c.id} rendered (naturalWidth ${c.naturalWidth})`);
    }
    assert.equal(await page.locator('.chart-failed').count(), 1, 'the broken chart is reported in the page');
    assert.equal(await page.locator('section.experiment').count(), 3);
    assert.equal(await page.locator('.headline').count(), 4, 'headline figures from batching and window');
    assert.match((await page.locator('#exp-window').textContent()) ?? '', /not registered in this build/);
    assert.match((await page.locator('#writeup').textContent()) ?? '', /23\.8×/);
    // The stub's markdown table became an HTML table.
    assert.equal(await page.locator('#exp-stub table').first().locator('tbody tr').count(), 4);

    await page.screenshot({ path: join(OUT, 'index.png'), fullPage: true });
    assert.deepEqual(errors, [], 'no console errors');
    assert.deepEqual(failed, [], 'no failed requests');
    assert.deepEqual(external, [], 'nothing fetched from the network');
  } finally {
    await browser.close();
  }
});
