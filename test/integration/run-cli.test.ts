import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedLogWriter, readCommitted } from '../../packages/sluice/src/sources/embedded-log.js';
import { PoisonInput } from '../../packages/lab/src/records/poison.js';
import { findSharedData } from '../../packages/lab/src/runner.js';
import { EVENT_RECORD_JSON_SCHEMA } from '../../packages/lab/src/records/event-schema.js';

function startRun(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  return { child, exited, out: () => out, err: () => err };
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const lines = async (p: string) => (await readFile(p, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
const field = (s: string, k: string) => Number(new RegExp(`${k}=(\\d+)`).exec(s)?.[1]);

test('sluice run on the embedded log: tails, dead-letters poison, SIGTERM drains and prints the ledger', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-run-'));
  const log = join(dir, 'log.ndjson');
  const sink = join(dir, 'out.ndjson');
  let run: ReturnType<typeof startRun> | null = null;
  try {
    const input = new PoisonInput({ every: 100, sink: 'file', sharedDataDir: findSharedData() });
    const w = await EmbeddedLogWriter.open(log);
    await w.append(Array.from({ length: 1000 }, (_, i) => input.make(i, Date.now()).rec), { sync: true });
    // The record shape is the user's to state: a JSON Schema file, as any user would pass it.
    const schema = join(dir, 'event-record.schema.json');
    await writeFile(schema, JSON.stringify(EVENT_RECORD_JSON_SCHEMA));
    run = startRun(['--source', log, '--sink', sink, '--schema', schema, '--metrics-port', '0', '--max-wait-ms', '2']);
    await until('ready', () => run!.out().includes('ready'));
    await until('offset 1000', async () => (await readCommitted(`${log}.committed`)).offset === 1000);
    // still tailing: records appended while it runs are consumed too
    await w.append(Array.from({ length: 500 }, (_, i) => input.make(1000 + i, Date.now()).rec), { sync: true });
    await w.close();
    await until('offset 1500', async () => (await readCommitted(`${log}.committed`)).offset === 1500);
    const url = /(http:\/\/\S+\/metrics)/.exec(run.out())![1];
    const metrics = await (await fetch(url)).text();
    assert.match(metrics, /^sluice_source_lag\{[^}]*\} 0$/m);
    assert.match(metrics, /^sluice_items_dead_lettered_total\{[^}]*\} 15$/m);
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0, run.err());
    const ledger = run.out().split('\n').find((l) => l.startsWith('ledger: '))!;
    assert.ok(ledger, run.out());
    assert.match(ledger, / balanced$/);
    assert.equal(field(ledger, 'accepted'), 1500);
    assert.equal(field(ledger, 'committed'), 1485);
    assert.equal(field(ledger, 'dead_lettered'), 15);
    assert.equal(field(ledger, 'in_flight'), 0);
    assert.match(run.out(), /committed_offset=1500/);
    assert.equal((await readCommitted(`${log}.committed`)).offset, 1500);
    assert.equal(await lines(sink), 1485);
    assert.equal(await lines(`${sink}.dlq.jsonl`), 15);
  } finally {
    if (run && run.child.exitCode === null) run.child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});

test('sluice run: SIGTERM mid-stream stops fetching, drains, and acks exactly what it handled', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-run-'));
  const log = join(dir, 'log.ndjson');
  const sink = join(dir, 'out.ndjson');
  try {
    const input = new PoisonInput({ every: 1000, sink: 'file' });
    const w = await EmbeddedLogWriter.open(log);
    await w.append(Array.from({ length: 50_000 }, (_, i) => input.make(i, Date.now()).rec));
    await w.close();
    const run = startRun(['--source', log, '--sink', sink, '--max-items', '16', '--max-wait-ms', '0']);
    await until('ready', () => run.out().includes('ready'));
    await until('some progress', async () => (await readCommitted(`${log}.committed`)).offset > 100);
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0, run.err());
    const ledger = run.out().split('\n').find((l) => l.startsWith('ledger: '))!;
    assert.match(ledger, / balanced$/);
    const accepted = field(ledger, 'accepted');
    const committed = field(ledger, 'committed');
    const dead = field(ledger, 'dead_lettered');
    assert.ok(accepted < 50_000, 'stopped before the end of the log');
    assert.equal(field(ledger, 'in_flight'), 0);
    assert.equal(committed + dead, accepted, 'everything accepted was handled before exit');
    const off = (await readCommitted(`${log}.committed`)).offset;
    assert.equal(off, accepted, 'the committed offset covers exactly what was handled');
    assert.equal(await lines(sink), committed);
    assert.equal(await lines(`${sink}.dlq.jsonl`), dead);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sluice run: a bad config file is one clear line and exit 2', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-run-'));
  try {
    const cfg = join(dir, 'bad.json');
    await writeFile(cfg, JSON.stringify({ source: join(dir, 'log'), sink: join(dir, 'out'), window: { maxItems: 0 } }));
    const run = startRun(['--config', cfg]);
    assert.equal(await run.exited, 2);
    const err = run.err().trim();
    assert.equal(err.split('\n').length, 1, err);
    assert.match(err, /invalid config .*bad\.json: window\.maxItems: .*\[SLUICE_INVALID_OPTION\]/);
    await writeFile(cfg, JSON.stringify({ source: join(dir, 'log'), sink: join(dir, 'out'), bogus: 1 }));
    const run2 = startRun(['--config', cfg]);
    assert.equal(await run2.exited, 2);
    assert.match(run2.err(), /bogus/);
    await writeFile(cfg, JSON.stringify({ source: join(dir, 'log'), sink: 'postgres://root@127.0.0.1:5432/test', pgMode: 'upsert' }));
    const run3 = startRun(['--config', cfg]);
    assert.equal(await run3.exited, 2);
    assert.match(run3.err(), /pgMode: .*append/);
    // A schema file that is missing or not a JSON Schema: one line, exit 2, before anything opens.
    await writeFile(cfg, JSON.stringify({ source: join(dir, 'log'), sink: join(dir, 'out'), schema: join(dir, 'nope.json') }));
    const run4 = startRun(['--config', cfg]);
    assert.equal(await run4.exited, 2);
    assert.match(run4.err().trim(), /^sluice: invalid option --schema=.*nope\.json.*\[SLUICE_INVALID_OPTION\]$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
