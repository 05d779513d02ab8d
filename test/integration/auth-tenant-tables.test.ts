/**
 * A token may name its tenant's own table (issue 26): `sluice serve --sink postgres://… --tokens`
 * routes each tenant's records to its table, the rest to `--table`, under one pipeline and one
 * ledger. Every table is reconciled against the ids its tenant sent (the product's reconcile:
 * nothing missing, nothing from another tenant); a record only its tenant's table refuses is
 * dead-lettered alone, its entry naming that table; a reload naming a table serve did not open
 * is refused and changes nothing; a table with a file sink is one error at start.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startServe as serve } from '../helpers/serve-cli.js';
import { requireNats, requirePostgres, uniqueName } from '../helpers/services.js';
import { connectNats, manager } from '../../packages/sluice/src/sources/nats.js';
import { writeTokens } from '../helpers/certs.js';
import { spawnSync } from 'node:child_process';
import { hashToken, parseTokensFile } from '../../packages/sluice/src/sources/auth.js';
import { reconcileIds, sinkIds } from '../../packages/sluice/src/dlq/reconcile.js';
import { openDeadLetterStore } from '../../packages/sluice/src/dlq/access.js';

const T = { a: 'tenant-a-table-token-0123456789abcdef', b: 'tenant-b-table-token-0123456789abcdef', plain: 'tenant-plain-token-0123456789abcdef0' };


const lines = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ key: `${prefix}-${i}` })).join('\n') + '\n';
const keys = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

test('serve → PostgreSQL with per-token tables: each tenant’s records land only in its table, the rest in --table; one ledger', { timeout: 120_000 }, async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const base = uniqueName('tt_default');
  const ta = uniqueName('tt_a');
  const tb = uniqueName('tt_b');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tenant-tables-'));
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  // Tenant b's table exists already, with a rule of its own: a record it refuses is b's dead letter alone.
  await db.query(`CREATE TABLE "${tb}" (id text PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now(), doc jsonb CHECK (doc->>'key' NOT LIKE 'bad-%'))`);
  const tokensFile = writeTokens(dir, [
    { name: 'tenant-a', token: T.a, routes: ['ingest', 'bulk'], table: ta },
    { name: 'tenant-b', token: T.b, routes: ['ingest'], table: tb },
    { name: 'tenant-plain', token: T.plain, routes: ['ingest'] },
  ]);
  const s = serve(['--sink', url, '--table', base, '--tokens', tokensFile, '--id-field', 'key', '--data-dir', dir]);
  try {
    const srv = await s.ready;
    // The log names each tenant's table; stdout's listening line the tables opened.
    assert.match(s.err(), new RegExp(`auth: 3 tenants from \\S+ \\(tenant-a → ${ta}, tenant-b → ${tb}, tenant-plain\\)`));
    assert.match(s.out(), new RegExp(`per tenant: table ${ta}, table ${tb}`));
    const post = (token: string, body: string) => fetch(`${srv}/ingest`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${token}` } });
    for (const [token, prefix] of [[T.a, 'a'], [T.b, 'b'], [T.plain, 'p']] as const) {
      const r = await post(token, lines(prefix, 300));
      assert.equal(r.status, 200, await r.text());
    }
    // The same bad key from a (its table has no such rule: committed) and from b (dead-lettered).
    for (const [token, status] of [[T.a, 200], [T.b, 207]] as const) {
      const r = await post(token, lines('bad', 1) + lines(token === T.a ? 'a-ok' : 'b-ok', 2));
      assert.equal(r.status, status, await r.text());
    }
    // Tenant a through _bulk: a create of an id stored in b's table is b's business, not a's: 201.
    const bulk = await fetch(`${srv}/logs/_bulk`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${T.a}` },
      body: [{ create: { _id: 'b-0' } }, { key: 'a-bulk-0' }, { create: { _id: 'a-bulk-1' } }, { key: 'a-bulk-1' }].map((x) => JSON.stringify(x)).join('\n') + '\n',
    });
    const bj = (await bulk.json()) as { errors: boolean; items: { create: { status: number } }[] };
    assert.deepEqual(bj.items.map((i) => i.create.status), [201, 201], JSON.stringify(bj));
    // A reload naming a table serve did not open is refused; the running tokens stay.
    writeTokens(dir, [{ name: 'tenant-a', token: T.a, routes: ['ingest'], table: 'not_opened_at_start' }]);
    s.child.kill('SIGHUP');
    for (const t0 = Date.now(); !/reload refused/.test(s.err()) && Date.now() - t0 < 10_000; ) await new Promise((r) => setTimeout(r, 50));
    assert.match(s.err(), /reload refused.*not_opened_at_start/);
    assert.equal((await post(T.b, lines('b2', 10))).status, 200, 'the previous tokens still hold');
    // Reconcile each table against what its tenant sent: every id committed there or dead-lettered, none from another tenant.
    const dlq = await openDeadLetterStore(url, { table: `${base}_dlq` });
    const letters = await dlq.list();
    await dlq.close();
    assert.deepEqual(letters.map((e) => [e.id, e.sink, e.errorClass]), [['bad-0', `postgres:${tb}`, 'item']]);
    const sent = {
      [ta]: [...keys('a', 300), 'bad-0', ...keys('a-ok', 2), 'a-bulk-0', 'a-bulk-1'],
      [tb]: [...keys('b', 300), 'bad-0', ...keys('b-ok', 2), ...keys('b2', 10)],
      [base]: keys('p', 300),
    };
    for (const [table, produced] of Object.entries(sent)) {
      const r = reconcileIds(produced, await sinkIds(url, table), letters.filter((e) => e.sink === `postgres:${table}`));
      const deadLettered = table === tb ? 1 : 0;
      assert.deepEqual(
        { ok: r.ok, committed: r.committed, deadLettered: r.deadLettered, missing: r.missing, duplicated: r.duplicated, unexpected: r.unexpected },
        { ok: true, committed: produced.length - deadLettered, deadLettered, missing: 0, duplicated: 0, unexpected: 0 },
        `${table}: ${JSON.stringify(r)}`,
      );
    }
    // append is not idempotent: a batch spanning tenants, rewritten whole on a retry, would duplicate rows.
    const appendMode = serve(['--sink', url, '--table', base, '--tokens', tokensFile, '--pg-mode', 'append', '--data-dir', dir]);
    appendMode.ready.catch(() => {});
    assert.notEqual(await appendMode.exited, 0);
    assert.match(appendMode.err(), /--pg-mode.*idempotent mode with per-tenant tables/);
    // A tenant's table that is the dead-letter table: one error at start.
    const intoDlq = serve(['--sink', url, '--table', base, '--tokens', writeTokens(dir, [{ name: 'tenant-a', token: T.a, routes: ['ingest'], table: `${base}_dlq` }], 'dlq-clash.json'), '--data-dir', dir]);
    intoDlq.ready.catch(() => {});
    assert.notEqual(await intoDlq.exited, 0);
    assert.match(intoDlq.err(), new RegExp(`table="${base}_dlq": expected another name than the dead-letter table`));
  } finally {
    s.child.kill('SIGTERM');
    setTimeout(() => s.child.kill('SIGKILL'), 20_000).unref();
    const code = await s.exited;
    await db.query(`DROP TABLE IF EXISTS "${base}"; DROP TABLE IF EXISTS "${base}_dlq"; DROP TABLE IF EXISTS "${ta}"; DROP TABLE IF EXISTS "${tb}"`);
    await db.end();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0, s.err());
    assert.match(s.out(), /ledger accepted=918 committed=917 dropped=0 dead_lettered=1 in_flight=0 .*balanced/);
  }
});

test('serve: a per-token table with the file sink, or a token naming both a table and a stream, is one error at start; sluice token new --table writes the entry', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tenant-tables-bad-'));
  try {
    const cli = ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', 'token', 'new', '--name', 'team-b', '--routes', 'otlp'];
    const made = spawnSync(process.execPath, [...cli, '--table', 'team_b_logs'], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const [made1] = parseTokensFile(JSON.stringify({ tokens: [JSON.parse(made.stderr)] }));
    assert.deepEqual([made1.name, made1.table, made1.hash], ['team-b', 'team_b_logs', hashToken(made.stdout.trim())]);
    const refused = spawnSync(process.execPath, [...cli, '--table', 'team b'], { encoding: 'utf8' });
    assert.equal(refused.status, 2);
    assert.equal(refused.stdout, '', 'no token printed for an entry serve would refuse');
    assert.match(refused.stderr, /^sluice: invalid option sluice token new: tokens\[0\]\.table="team b"[^\n]*\n$/);
    const tokensFile = writeTokens(dir, [{ name: 'tenant-a', token: T.a, routes: ['ingest'], table: 'a_table' }]);
    const s = serve(['--tokens', tokensFile, '--data-dir', dir]);
    s.ready.catch(() => {});
    assert.notEqual(await s.exited, 0);
    assert.equal(s.err().trim().split('\n').length, 1, s.err());
    assert.match(s.err(), /table.*a_table.*postgres/);
    const both = join(dir, 'both.json');
    writeFileSync(both, JSON.stringify({ tokens: [{ name: 'x', hash: 'sha256:' + '0'.repeat(64), routes: ['ingest'], table: 't', stream: 'S' }] }));
    const s2 = serve(['--tokens', both, '--data-dir', dir]);
    s2.ready.catch(() => {});
    assert.notEqual(await s2.exited, 0);
    assert.match(s2.err(), /stream.*absent when table is given/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve → JetStream with a per-token stream: the tenant’s records go to its stream, the rest to the server’s', { timeout: 120_000 }, async (t) => {
  const natsUrl = await requireNats(t);
  if (!natsUrl) return;
  const base = uniqueName('TTBASE').toUpperCase();
  const own = uniqueName('TTOWN').toUpperCase();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tenant-streams-'));
  const tokensFile = writeTokens(dir, [
    { name: 'tenant-a', token: T.a, routes: ['ingest'], stream: own },
    { name: 'tenant-plain', token: T.plain, routes: ['ingest'] },
  ]);
  const s = serve(['--sink', `${natsUrl.replace(/\/$/, '')}/${base}`, '--tokens', tokensFile, '--id-field', 'key', '--data-dir', dir]);
  const nc = await connectNats(natsUrl, 3_000, null);
  const jsm = await manager(nc);
  try {
    const srv = await s.ready;
    for (const [token, prefix, n] of [[T.a, 'a', 120], [T.plain, 'p', 80]] as const) {
      const r = await fetch(`${srv}/ingest`, { method: 'POST', body: lines(prefix, n), headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${token}` } });
      assert.equal(r.status, 200, await r.text());
    }
    assert.equal((await jsm.streams.info(own)).state.messages, 120);
    assert.equal((await jsm.streams.info(base)).state.messages, 80);
  } finally {
    s.child.kill('SIGTERM');
    setTimeout(() => s.child.kill('SIGKILL'), 20_000).unref();
    const code = await s.exited;
    for (const name of [base, own, `${base}_DLQ`]) await jsm.streams.delete(name).catch(() => {});
    await nc.close();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0, s.err());
    assert.match(s.out(), /ledger accepted=200 committed=200 .*balanced/);
  }
});
