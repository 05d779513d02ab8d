import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadResults } from '../../packages/lab/src/report.js';
import { WINDOW_HISTORY_FILE } from '../../packages/lab/src/experiments/window.js';
import { windowResult } from '../helpers/report-fixtures.js';

test('loadResults: reads the envelopes, leaves the window history out silently, and names any other file it skips', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-report-load-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'results'));
  await writeFile(join(dir, 'results', 'window.json'), JSON.stringify(windowResult()));
  await writeFile(join(dir, 'results', WINDOW_HISTORY_FILE), JSON.stringify([{ createdAt: '2026-01-01T00:00:00.000Z', quick: false }]));
  await writeFile(join(dir, 'results', 'stray.json'), '{"not": "an envelope"}');
  const lines: string[] = [];
  const results = await loadResults(dir, { log: (l) => lines.push(l) });
  assert.deepEqual(results.map((r) => r.experiment), ['window']);
  assert.deepEqual(lines, ['report: skipped results/stray.json: not a result envelope (no "experiment")']);
});
