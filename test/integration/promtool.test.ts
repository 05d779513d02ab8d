/**
 * `promtool` (Debian `prometheus`) over what Sluice ships: `check rules` and `test rules` on
 * deploy/prometheus (each alert fires on a synthetic series that breaks it and stays quiet on
 * one that does not: deploy/prometheus/alerts.test.yml), and `check metrics` — Prometheus's
 * own parser and naming lint — over the exposition of a running `sluice serve`.
 *
 * Without promtool the test is skipped outside CI and fails in CI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inCI } from '../helpers/services.js';
import { startServer } from '../../packages/sluice/src/sources/http.js';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';

const PROMTOOL = process.env.PROMTOOL_PATH ?? '/usr/bin/promtool';

function requirePromtool(t: { skip(msg: string): void }): boolean {
  if (existsSync(PROMTOOL)) return true;
  const msg = `promtool not found at ${PROMTOOL} (apt-get install -y prometheus)`;
  if (inCI) throw new Error(`${msg}: required in CI`);
  t.skip(msg);
  return false;
}

function promtool(args: string[], input?: string) {
  const r = spawnSync(PROMTOOL, args, { input, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

test('promtool check rules: deploy/prometheus/alerts.yml', (t) => {
  if (!requirePromtool(t)) return;
  const r = promtool(['check', 'rules', 'deploy/prometheus/alerts.yml']);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS: 6 rules found/);
});

test('promtool test rules: every alert on synthetic series (deploy/prometheus/alerts.test.yml)', (t) => {
  if (!requirePromtool(t)) return;
  const r = promtool(['test', 'rules', 'deploy/prometheus/alerts.test.yml']);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS/);
});

test("promtool check metrics: a running serve's exposition parses and Sluice's series pass the naming lint", async (t) => {
  if (!requirePromtool(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'sluice-promtool-'));
  const server = await startServer({ sink: await new FileSink<unknown>({ path: join(dir, 'out.jsonl') }).open() });
  try {
    const body = Array.from({ length: 50 }, (_, i) => JSON.stringify({ i })).join('\n');
    assert.equal((await fetch(`${server.url}/ingest`, { method: 'POST', body })).status, 200);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const r = promtool(['check', 'metrics'], text);
    // Exit 3 = lint findings; anything else non-zero = the text did not parse.
    assert.ok(r.status === 0 || r.status === 3, `promtool could not parse the exposition:\n${r.out}`);
    const findings = r.out.split('\n').filter((l) => l.trim() !== '');
    const ours = findings.filter((l) => l.startsWith('sluice_'));
    assert.deepEqual(ours, [], 'lint findings on Sluice series');
    // The only other findings allowed: prom-client's default nodejs_active_*_total gauges
    // (named by prom-client, not by Sluice).
    for (const f of findings) assert.match(f, /^nodejs_active_\w+_total non-counter metrics should not have "_total" suffix$/);
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
