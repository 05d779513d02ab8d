/**
 * `sluice tune --quick` (issue 21) on the file sink and on PostgreSQL, with records that are not
 * the lab's (Zeek logs from the shared data when present, else a sample of mixed JSON values
 * built here): it recommends a window, validates it at the peak (3 runs, reported), writes
 * tune.json and the pages, removes its scratch file or table, and its config snippet is
 * accepted as is by `run --config` and `serve --config`.
 *
 * The SLO here is 100 ms, not 20: the test checks what the command does, not how fast this
 * shared 2-core machine is (its fdatasync alone reaches 20–70 ms under the other helpers'
 * load: tune.json's `stalls` of any run shows it). No timing is asserted.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import pg from 'pg';
import { requirePostgres, uniqueName } from '../helpers/services.js';
import { findSharedData } from '../../packages/lab/src/runner.js';

const SLO = 100;

function cli(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  return { child, exited, out: () => out, err: () => err };
}

async function until(what: string, cond: () => boolean, timeoutMs: number, detail: () => string) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}\n${detail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A record sample of `n` lines: a Zeek log from the shared data, else mixed JSON values. */
function sample(kind: 'dns' | 'syslog', n: number): string {
  const data = findSharedData();
  const gz = data ? join(data, 'payloads', 'zeek-wrccdc', `${kind}.json.gz`) : null;
  if (gz && existsSync(gz)) return gunzipSync(readFileSync(gz)).toString('utf8').split('\n').filter(Boolean).slice(0, n).join('\n') + '\n';
  const vals: unknown[] = [];
  for (let i = 0; i < n; i++)
    vals.push(i % 5 === 0 ? `plain string ${i}` : i % 5 === 1 ? [i, 'x'.repeat(i % 300), null] : { host: `h${i % 17}`, level: i % 3 ? 'info' : 'warn', msg: 'm'.repeat(50 + (i % 700)), nested: { a: { b: i } } });
  return vals.map((v) => JSON.stringify(v)).join('\n') + '\n';
}

interface TuneJson {
  verdict: string;
  cost: { fixedMs: number; perItemMs: number; perByteMs: number | null };
  capacity: { perSec: number };
  loads: { peakPerSec: number; lowPerSec: number };
  cells: { label: string; low: { balanced: boolean }[]; peak: { balanced: boolean }[] }[];
  choice: { chosen: string | null; runnerUp: string | null; reason: string; runnerUpLostOn: string };
  validation: { runs: { p99Ms: number; balanced: boolean }[]; medianP99Ms: number; held: boolean } | null;
  snippet: { window: { maxItems: number; maxWaitMs: number }; sloP99Ms: number } | null;
}

/**
 * A sink whose p99 write is within a quarter of the SLO can hold it: tune must recommend. One
 * slower than that (this shared machine's fdatasync under load reaches 90 ms) may not: then tune
 * must say so plainly, with the measured writes and stalls, recommend nothing and exit 1.
 * Either branch is asserted in full; which one applies is read off the sink's measured writes.
 */
async function tuneOutcome(t: TestContext, outDir: string, code: number, stdout: string): Promise<TuneJson | null> {
  const r = JSON.parse(await readFile(join(outDir, 'tune.json'), 'utf8')) as TuneJson & { stalls: { p99WriteMs: number; overSlo: number; writes: number }; summary: string };
  t.diagnostic(`verdict ${r.verdict}: ${r.summary} (p99 write ${r.stalls.p99WriteMs} ms, ${r.stalls.overSlo}/${r.stalls.writes} writes over the SLO)`);
  assert.match(stdout, /^writes: \d+ timed, \d+ longer than the SLO \(100 ms\); p99 write [\d.]+ ms, longest [\d.]+ ms$/m);
  if (r.verdict !== 'recommended' && r.stalls.p99WriteMs > SLO / 4) {
    assert.equal(code, 1);
    assert.ok(['sink-too-slow', 'sink-stalls', 'not-validated'].includes(r.verdict));
    assert.equal(r.snippet, null, 'nothing recommended that it cannot hold');
    assert.ok(!existsSync(join(outDir, 'tune.config.json')));
    assert.match(stdout, new RegExp(`^verdict: ${r.verdict}: `, 'm'));
    return null;
  }
  assert.equal(code, 0, stdout);
  return checkTune(outDir, stdout);
}

async function checkTune(outDir: string, stdout: string): Promise<TuneJson> {
  const r = JSON.parse(await readFile(join(outDir, 'tune.json'), 'utf8')) as TuneJson;
  assert.equal(r.verdict, 'recommended', stdout);
  assert.ok(r.cost.fixedMs > 0, 'a write has a fixed cost');
  assert.ok(r.capacity.perSec > 0 && r.loads.peakPerSec > r.loads.lowPerSec);
  assert.ok(r.cells.length >= 4);
  for (const c of r.cells) for (const run of [...c.low, ...c.peak]) assert.ok(run.balanced, `accepted = committed + dropped + dead-lettered + in flight in every run (${c.label})`);
  // The recommendation validated itself at the peak, and says so.
  assert.ok(r.validation, 'validation ran');
  assert.equal(r.validation.runs.length, 3);
  assert.ok(r.validation.runs.every((v) => v.balanced));
  assert.ok(r.validation.held && r.validation.medianP99Ms <= SLO);
  assert.match(stdout, /^validation at the peak, 3 runs: p99 .* median .* ≤ SLO 100 ms: held$/m);
  assert.match(stdout, /^chosen: /m);
  assert.match(stdout, /^runner-up: /m);
  assert.ok(r.snippet && r.choice.chosen === `${r.snippet.window.maxItems} items / ${r.snippet.window.maxWaitMs} ms`);
  const html = await readFile(join(outDir, 'tune.html'), 'utf8');
  assert.match(html, /<svg /);
  assert.doesNotMatch(html, /<script|https?:\/\/(?!www\.w3\.org)/, 'no CDN, no script');
  assert.match(await readFile(join(outDir, 'tune.md'), 'utf8'), /## Config/);
  return r;
}

/** The snippet as is: `run --config` and `serve --config` start with its window and SLO. */
async function snippetAccepted(dir: string, config: string, extra: { run: string[]; serve: string[] }, win: { maxItems: number; maxWaitMs: number }) {
  await writeFile(join(dir, 'log.ndjson'), '');
  const run = cli(['run', '--config', config, '--source', join(dir, 'log.ndjson'), '--metrics-port', '0', ...extra.run]);
  try {
    await until('run ready', () => run.out().includes('ready'), 30_000, run.err);
    assert.match(run.out(), new RegExp(`window live for p99 ≤ ${SLO} ms`));
    const url = /(http:\/\/\S+\/metrics)/.exec(run.out())![1];
    const m = await (await fetch(url)).text();
    assert.match(m, new RegExp(`^sluice_window_max_items(\\{[^}]*\\})? ${win.maxItems}$`, 'm'));
    assert.match(m, new RegExp(`^sluice_window_max_wait_seconds(\\{[^}]*\\})? ${win.maxWaitMs / 1000}$`, 'm'));
  } finally {
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0, run.err());
  }
  const serve = cli(['serve', '--config', config, '--port', '0', '--data-dir', join(dir, 'serve'), ...extra.serve]);
  try {
    await until('serve listening', () => serve.out().includes('listening on'), 30_000, serve.err);
    assert.match(serve.out(), new RegExp(`window live for p99 ≤ ${SLO} ms from ${win.maxItems} items / ${win.maxWaitMs} ms`));
  } finally {
    serve.child.kill('SIGTERM');
    assert.equal(await serve.exited, 0, serve.err());
  }
}

test('sluice tune --quick on the file sink with a Zeek dns sample: recommends, validates, writes tune.json; the snippet runs as is', { timeout: 240_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-tune-file-'));
  try {
    const rec = join(dir, 'sample.ndjson');
    await writeFile(rec, sample('dns', 2000));
    const out = join(dir, 'out');
    const tn = cli(['tune', '--sink', join(dir, 'events.ndjson'), '--slo-p99-ms', String(SLO), '--record-sample', rec, '--quick', '--out', out]);
    const r = await tuneOutcome(t, out, await tn.exited, tn.out() + tn.err());
    // The scratch file went, and the user's file was never created.
    assert.deepEqual((await readdir(dir)).filter((f) => f.includes('sluice-tune') || f.startsWith('events')), []);
    // In a pipe: plain progress lines, no carriage returns.
    assert.match(tn.err(), /^sluice tune: cost model/m);
    assert.doesNotMatch(tn.err(), /\r/);
    if (r) await snippetAccepted(dir, join(out, 'tune.config.json'), { run: ['--sink', join(dir, 'run-out.ndjson')], serve: [] }, r.snippet!.window);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sluice tune --quick on PostgreSQL with a Zeek syslog sample into a table of the user\'s (columns mapped): scratch table LIKE it, dropped after', { timeout: 300_000 }, async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const table = uniqueName('tune');
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  const dir = await mkdtemp(join(tmpdir(), 'sluice-tune-pg-'));
  try {
    await db.query(`CREATE TABLE ${table} (id text PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now(), doc jsonb, path text, severity text)`);
    const rec = join(dir, 'sample.ndjson');
    await writeFile(rec, sample('syslog', 2000));
    const out = join(dir, 'out');
    const tn = cli(['tune', '--sink', url, '--table', table, '--columns', 'path=_path,severity=severity', '--slo-p99-ms', String(SLO), '--record-sample', rec, '--quick', '--out', out]);
    const r = await tuneOutcome(t, out, await tn.exited, tn.out() + tn.err());
    assert.match(tn.out(), new RegExp(`postgres table ${table}_sluice_tune_[0-9a-f]{8} \\(LIKE ${table}; dropped at the end\\)`));
    const left = await db.query(`SELECT tablename FROM pg_tables WHERE tablename LIKE $1`, [`${table}_sluice_tune_%`]);
    assert.equal(left.rowCount, 0, 'the scratch table is dropped');
    assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n, 0, "the user's table is not written");
    if (r)
      await snippetAccepted(
      dir,
      join(out, 'tune.config.json'),
      { run: ['--sink', url, '--table', table, '--columns', 'path=_path,severity=severity'], serve: ['--sink', url, '--table', table, '--columns', 'path=_path,severity=severity'] },
      r.snippet!.window,
    );
  } finally {
    await db.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await db.query(`DROP TABLE IF EXISTS ${table}_dlq`).catch(() => {});
    await db.end();
    await rm(dir, { recursive: true, force: true });
  }
});
