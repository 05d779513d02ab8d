/**
 * Issue 18's first user, end to end: `sluice serve --sink postgres://… --table T`, then POST
 * arbitrary JSON lines. Each line is one row of the default table (id, received_at, doc); a
 * re-POST stores nothing twice; a `--columns` mapping whose type a record breaks dead-letters
 * that record only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startServe } from '../helpers/serve-cli.js';
import { requirePostgres, uniqueName } from '../helpers/services.js';


async function post(url: string, body: string) {
  const res = await fetch(`${url}/ingest`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson' } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/**
 * One `sluice serve` into a fresh table of its own: the table is made by `setup` (or by serve
 * itself), the body gets the server's base URL and a client on the same database; then serve
 * is stopped with SIGTERM and must exit 0 with a balanced ledger, and the tables are dropped.
 */
async function withServe(
  t: import('node:test').TestContext,
  prefix: string,
  args: (url: string, table: string) => string[],
  body: (base: string, db: pg.Client, table: string) => Promise<void>,
  setup?: (db: pg.Client, table: string) => Promise<unknown>,
) {
  const url = await requirePostgres(t);
  if (!url) return;
  const table = uniqueName(prefix);
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    await setup?.(db, table);
    const s = startServe([...args(url, table), '--data-dir', `/tmp/${table}`]);
    try {
      await body(await s.ready, db, table);
    } finally {
      s.child.kill('SIGTERM');
      setTimeout(() => s.child.kill('SIGKILL'), 20_000).unref();
      assert.equal(await s.exited, 0, s.err());
      assert.match(s.out(), /ledger .*balanced/);
    }
  } finally {
    await db.query(`DROP TABLE IF EXISTS "${table}"; DROP TABLE IF EXISTS "${table}_dlq"`);
    await db.end();
  }
}

const LINES = [
  '{"msg":"hello","level":"info"}',
  '{"id":"u-1","msg":"with an id"}',
  '{"nested":{"deep":{"er":[1,2,{"x":"y"}]}},"level":"warn"}',
  '{"msg":"ünïcödé ✓ 日本語 😀","level":"info"}',
  '{"amount":"12.50","count":"7","level":"error"}',
  '[1,"two",{"three":3}]',
  '"a bare string"',
  '42',
];

test('serve → PostgreSQL: any JSON line is one row of the default table; a re-POST stores nothing twice', { timeout: 120_000 }, async (t) => {
  await withServe(
    t,
    'serve_any',
    (url, table) => ['--sink', url, '--table', table],
    async (base, db, table) => {
      const r = await post(base, LINES.join('\n') + '\n');
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.committed, LINES.length);
      const cols = (await db.query<{ column_name: string }>(`SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, [table])).rows.map((x) => x.column_name);
      assert.deepEqual(cols, ['id', 'received_at', 'doc']);
      const rows = (await db.query<{ id: string; doc: unknown }>(`SELECT id, doc FROM "${table}"`)).rows;
      assert.equal(rows.length, LINES.length);
      // Each document is the line as posted (jsonb orders keys its own way; the content is the same).
      const canonical = (v: unknown): string =>
        v !== null && typeof v === 'object' && !Array.isArray(v)
          ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`
          : Array.isArray(v) ? `[${v.map(canonical).join(',')}]` : JSON.stringify(v);
      assert.deepEqual(rows.map((x) => canonical(x.doc)).sort(), LINES.map((l) => canonical(JSON.parse(l))).sort());
      // Without --id-field the id is a content hash: the same lines again add nothing.
      const again = await post(base, LINES.join('\n') + '\n');
      assert.equal(again.status, 200);
      assert.equal(Number((await db.query(`SELECT count(*) FROM "${table}"`)).rows[0].count), LINES.length);
    },
  );
});

test('serve → PostgreSQL with --id-field: a re-POST with changed content under the same ids stores no duplicate', { timeout: 120_000 }, async (t) => {
  await withServe(
    t,
    'serve_idf',
    (url, table) => ['--sink', url, '--table', table, '--id-field', 'event.id'],
    async (base, db, table) => {
      const body = (n: number, tag: string) => Array.from({ length: n }, (_, i) => JSON.stringify({ event: { id: `ev-${i}` }, tag })).join('\n') + '\n';
      assert.equal((await post(base, body(50, 'first'))).status, 200);
      // A client retry whose lines differ in bytes (a retry counter, a re-serialisation) but not in id.
      assert.equal((await post(base, body(50, 'retry'))).status, 200);
      const rows = (await db.query<{ id: string; tag: string }>(`SELECT id, doc->>'tag' AS tag FROM "${table}" ORDER BY id`)).rows;
      assert.equal(rows.length, 50);
      assert.ok(rows.every((x) => x.tag === 'first'), 'the first write of each id stands');
      assert.deepEqual(rows.map((x) => x.id).sort(), Array.from({ length: 50 }, (_, i) => `ev-${i}`).sort());
    },
  );
});

test('serve → an existing user table with --columns: a value the column type refuses dead-letters only that record', { timeout: 120_000 }, async (t) => {
  await withServe(
    t,
    'serve_cols',
    (url, table) => ['--sink', url, '--table', table, '--columns', 'level=level,code=http.status'],
    async (base, db, table) => {
      const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ level: i % 2 ? 'info' : 'warn', http: { status: i === 17 ? 'not-a-number' : 200 + i }, i }));
      const r = await post(base, lines.join('\n') + '\n');
      assert.equal(r.status, 207, JSON.stringify(r.json));
      assert.equal(r.json.committed, 39);
      assert.equal(r.json.deadLettered, 1);
      const errs = r.json.errors as { line: number; reason: string }[];
      assert.deepEqual(errs.map((e) => [e.line, e.reason]), [[18, 'dead-lettered']]);
      const rows = (await db.query<{ level: string; code: number | null; i: string }>(`SELECT level, code, doc->>'i' AS i FROM "${table}" ORDER BY (doc->>'i')::int`)).rows;
      assert.equal(rows.length, 39);
      assert.ok(!rows.some((x) => x.i === '17'));
      assert.equal(rows.find((x) => x.i === '3')!.code, 203);
      const dead = (await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM "${table}_dlq"`)).rows[0].n;
      assert.equal(dead, '1');
    },
    (db, table) => db.query(`CREATE TABLE "${table}" (id text PRIMARY KEY, level text NOT NULL, code int, doc jsonb NOT NULL)`),
  );
});

test('serve → an existing table it cannot write is one clear error at start, and the table is left as it was', { timeout: 60_000 }, async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const table = uniqueName('serve_bad');
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  await db.query(`CREATE TABLE "${table}" (id text PRIMARY KEY, must_fill text NOT NULL)`);
  try {
    const s = startServe(['--sink', url, '--table', table, '--data-dir', `/tmp/${table}`]);
    s.ready.catch(() => {}); // it must not start
    const code = await s.exited;
    assert.notEqual(code, 0);
    const err = s.err().trim();
    assert.equal(err.split('\n').length, 1, err);
    assert.match(err, new RegExp(`${table}.*must_fill`));
    const cols = (await db.query(`SELECT column_name FROM information_schema.columns WHERE table_name = $1`, [table])).rows.length;
    assert.equal(cols, 2, 'never ALTERed');
  } finally {
    await db.query(`DROP TABLE IF EXISTS "${table}"; DROP TABLE IF EXISTS "${table}_dlq"`);
    await db.end();
  }
});

test('serve → PostgreSQL through _bulk with the Elasticsearch client: _index in a column (@index), 409 for a create of a stored id, reconcile by table', { timeout: 120_000 }, async (t) => {
  await withServe(
    t,
    'serve_es',
    (url, table) => ['--sink', url, '--table', table, '--columns', 'es_index=@index'],
    async (base, db, table) => {
      const { Client } = await import('@elastic/elasticsearch');
      const client = new Client({ node: base });
      const n = 2000;
      const stats = await client.helpers.bulk({
        datasource: Array.from({ length: n }, (_, i) => ({ key: `k-${i}`, msg: `hello ${i}` })),
        onDocument: (doc) => ({ create: { _index: doc.key.endsWith('7') ? 'logs-b' : 'logs-a', _id: doc.key } }),
        flushBytes: 16 * 1024,
        concurrency: 2,
      });
      assert.equal(stats.successful, n);
      assert.equal(stats.failed, 0);
      const again = await client.bulk({ operations: [{ create: { _index: 'logs-a', _id: 'k-1' } }, { key: 'k-1', msg: 'again' }] });
      assert.equal(again.items[0].create!.status, 409);
      await client.close();
      const rows = (await db.query<{ id: string; es_index: string; msg: string }>(`SELECT id, es_index, doc->>'msg' AS msg FROM "${table}"`)).rows;
      assert.equal(rows.length, n, 'every document once');
      assert.equal(new Set(rows.map((r) => r.id)).size, n);
      assert.ok(rows.every((r) => r.es_index === (r.id.endsWith('7') ? 'logs-b' : 'logs-a')), 'each row keeps its _index');
      assert.equal(rows.find((r) => r.id === 'k-1')!.msg, 'hello 1', 'the 409 did not overwrite');
    },
    (db, table) => db.query(`CREATE TABLE "${table}" (id text PRIMARY KEY, es_index text NOT NULL, doc jsonb NOT NULL)`),
  );
});
