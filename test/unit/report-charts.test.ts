import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chartFileStem, colorFor, colorScale, logDomain, logTicks, renderChart, themed } from '../../packages/lab/src/charts.js';
import { batching } from '../../packages/lab/src/experiments/batching.js';
import { batchingResult } from '../helpers/report-fixtures.js';

test('one colour per variant name, stable across charts', () => {
  assert.equal(colorFor('batched'), colorFor('batched'));
  assert.notEqual(colorFor('batched'), colorFor('unbatched'));
  assert.equal(colorFor('some-new-variant'), colorFor('some-new-variant'));
  assert.deepEqual(colorScale(['unbatched', 'batched', 'batched']), { domain: ['unbatched', 'batched'], range: [colorFor('unbatched'), colorFor('batched')] });
});

test('log ticks: 1-2-5 over a few decades, powers of ten beyond; domain snaps to ticks', () => {
  assert.deepEqual(logTicks(3, 40), [1, 2, 5, 10, 20, 50, 100]);
  assert.deepEqual(logTicks(0.001, 100), [0.001, 0.01, 0.1, 1, 10, 100]);
  assert.deepEqual(logDomain(7.5, 95), [5, 100]);
  assert.deepEqual(logDomain(7.5, 2105), [1, 10000]);
  assert.deepEqual(logTicks(0, 10), []);
});

test('the theme sits under the author\'s config', () => {
  const s = themed({ mark: 'point', config: { axis: { labelFontSize: 20 } } });
  const axis = (s.config as { axis: Record<string, unknown> }).axis;
  assert.equal(axis.labelFontSize, 20);
  assert.equal(axis.titleFontWeight, 'normal');
  assert.equal(chartFileStem('a b/c'), 'a-b-c');
});

test('batching charts: three charts with unit-bearing axes, the SLO as a rule, rendered to SVG and PNG', async () => {
  const charts = batching.charts!(batchingResult());
  assert.deepEqual(charts.map((c) => c.id), ['batching-throughput', 'batching-p99', 'batching-fixed-cost']);
  for (const c of charts) {
    assert.ok(c.title && c.caption, 'title and caption');
    const spec = JSON.stringify(c.spec);
    assert.match(spec, /offered load \(items\/s/);
  }
  assert.match(JSON.stringify(charts[0].spec), /items\/s, log scale/);
  assert.match(JSON.stringify(charts[1].spec), /\(ms, log scale\)/);
  assert.match(JSON.stringify(charts[1].spec), /"type":"rule"/);
  assert.match(JSON.stringify(charts[1].spec), /SLO 20 ms/);

  const dir = await mkdtemp(join(tmpdir(), 'sluice-charts-'));
  try {
    const r = await renderChart(charts[1], dir);
    const svg = await readFile(join(dir, r.svgFile), 'utf8');
    const png = await readFile(join(dir, r.pngFile));
    assert.match(svg, /^<svg/);
    assert.ok(svg.includes('SLO 20 ms') && svg.includes('p99 end-to-end latency (ms, log scale)'));
    assert.deepEqual([...png.subarray(1, 4)].map((b) => String.fromCharCode(b)).join(''), 'PNG');
    assert.ok(r.width > 300 && r.height > 200);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('no runs, no charts', () => {
  const r = batchingResult();
  r.runs = [];
  assert.deepEqual(batching.charts!(r), []);
});
