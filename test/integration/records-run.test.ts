/**
 * Issue 18, the log side: `sluice run` from JetStream into PostgreSQL and from the embedded log
 * into a file, with records that are not the lab's (any JSON: objects with and without an id,
 * arrays, scalars, unicode). Killed with SIGKILL mid-stream and restarted, it commits every
 * record once, and `sluice reconcile` (the same id rule) finds 0 missing and 0 duplicated.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { headers } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { EmbeddedLogWriter, readCommitted } from '../../packages/sluice/src/sources/embedded-log.js';
import { connectNats, ensureStream } from '../../packages/sluice/src/sources/nats.js';
import { requireNats, requirePostgres, uniqueName } from '../helpers/services.js';

const N = 3000;

/** Record i: a mix of shapes nobody designed for Sluice. */
function record(i: number): string {
  switch (i % 6) {
    case 0: return JSON.stringify({ msg: `request ${i} served`, level: 'info', latency_ms: (i * 7) % 300 });
    case 1: return JSON.stringify({ id: `own-${i}`, event: { kind: 'login', user: `ü${i}` } });
    case 2: return JSON.stringify([i, 'two', { three: i }]);
    case 3: return JSON.stringify(`a bare string ${i} ✓`);
    case 4: return JSON.stringify({ nested: { deep: { er: [1, 2, { x: i }] } }, amount: `${i}.50` });
    default: return String(i * 1000 + 0.25);
  }
}

function sluice(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited, out: () => out, err: () => err };
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs until `progressed()`, SIGKILLs, restarts, runs until `drained()`, stops cleanly; returns the clean stop's stdout. */
async function killAndRestart(runArgs: string[], progressed: () => Promise<boolean>, drained: () => Promise<boolean>): Promise<string> {
  const first = sluice(['run', ...runArgs, '--max-items', '16', '--max-wait-ms', '1']);
  try {
    await until('progress before the kill', progressed);
  } finally {
    first.child.kill('SIGKILL');
  }
  assert.equal((await first.exited).signal, 'SIGKILL');
  const second = sluice(['run', ...runArgs]);
  try {
    // Ready first: when the first run had committed everything before its kill, `drained` holds
    // at once, and a SIGTERM before the handler is installed kills the process (exit code null).
    await until('the restarted run to be ready', () => /; ready$/m.test(second.out()));
    await until('the restarted run to drain the source', drained);
  } finally {
    second.child.kill('SIGTERM');
    setTimeout(() => second.child.kill('SIGKILL'), 30_000).unref();
  }
  const end = await second.exited;
  assert.equal(end.code, 0, second.err());
  const ledger = second.out().split('\n').find((l) => l.startsWith('ledger: '));
  assert.ok(ledger && / balanced$/.test(ledger), second.out());
  assert.match(ledger!, / dead_lettered=0 /);
  return second.out();
}

test('run: embedded log → file, any JSON, SIGKILL mid-stream and restart: every record once, reconcile ok', { timeout: 180_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-records-run-'));
  try {
    const log = join(dir, 'log.ndjson');
    const out = join(dir, 'out.ndjson');
    const w = await EmbeddedLogWriter.open(log);
    await w.append(Array.from({ length: N }, (_, i) => ({ id: `m${i}`, data: Buffer.from(record(i)) })), { sync: true });
    await w.close();
    const lines = async () => (await readFile(out, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    await killAndRestart(
      ['--source', log, '--sink', out],
      async () => (await lines()).length > 300,
      async () => (await readCommitted(`${log}.committed`)).offset === N,
    );
    // Each record stored exactly as it was in the log, once.
    const stored = await lines();
    assert.equal(stored.length, N);
    assert.deepEqual([...stored].sort(), Array.from({ length: N }, (_, i) => record(i)).sort());
    const rc = sluice(['reconcile', '--source', log, '--sink', out]);
    const r = await rc.exited;
    assert.equal(r.code, 0, rc.out() + rc.err());
    assert.match(rc.out(), new RegExp(`produced=${N} committed=${N} .*missing=0 duplicated=0 .* ok`));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('run: JetStream → PostgreSQL, any JSON with and without message ids, SIGKILL mid-stream and restart: reconcile ok', { timeout: 180_000 }, async (t) => {
  const dbUrl = await requirePostgres(t);
  const natsUrl = dbUrl ? await requireNats(t) : null;
  if (!dbUrl || !natsUrl) return;
  const name = uniqueName('rec_run');
  const stream = name.toUpperCase();
  const table = name;
  const nc = await connectNats(natsUrl);
  const db = new pg.Client({ connectionString: dbUrl });
  await db.connect();
  const jsm = await jetstreamManager(nc);
  try {
    await ensureStream(jsm, stream, [`${stream}.in`]);
    const js = jetstream(nc);
    // Half with a publisher's Nats-Msg-Id, half without (their id is a content hash of the body).
    for (let i = 0; i < N; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, N - i) }, (_, k) => {
          const j = i + k;
          const h = headers();
          if (j % 2 === 0) h.set('Nats-Msg-Id', `pub-${j}`);
          return js.publish(`${stream}.in`, Buffer.from(record(j)), j % 2 === 0 ? { headers: h } : undefined);
        }),
      );
    }
    const source = `${natsUrl}/${stream}/worker`;
    const rows = async () => Number((await db.query(`SELECT count(*) FROM "${table}"`).catch(() => ({ rows: [{ count: 0 }] }))).rows[0].count);
    const pending = async () => {
      const info = await jsm.consumers.info(stream, 'worker').catch(() => null);
      return info ? info.num_pending + info.num_ack_pending : Infinity;
    };
    // A short ack wait: the messages the killed run held come back in seconds, not 30.
    await killAndRestart(['--source', source, '--sink', dbUrl, '--table', table, '--ack-wait-ms', '3000'], async () => (await rows()) > 300, async () => (await pending()) === 0);
    assert.equal(await rows(), N);
    const rc = sluice(['reconcile', '--source', source, '--sink', dbUrl, '--table', table]);
    const r = await rc.exited;
    assert.equal(r.code, 0, rc.out() + rc.err());
    assert.match(rc.out(), new RegExp(`produced=${N} committed=${N} .*missing=0 duplicated=0 .* ok`));
  } finally {
    await jsm.streams.delete(stream).catch(() => {});
    await db.query(`DROP TABLE IF EXISTS "${table}"; DROP TABLE IF EXISTS "${table}_dlq"`);
    await db.end();
    await nc.close();
  }
});
