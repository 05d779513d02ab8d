/**
 * PostgresSink with the generic record model (any JSON value; id = env.id or the sha256 of
 * the bytes as received): the default table, an existing user table with a column mapping,
 * mismatches refused at start, idempotence of the default mode under a redelivered batch, and
 * a poison record split out by the real splitAndRetry into a dead-letter queue. The ledger
 * balances in every pipeline run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { PostgresSink, type PostgresSinkOptions, type PostgresWriteMode } from '../../packages/sluice/src/sinks/postgres.js';
import { ErrorCode, SluiceError } from '../../packages/sluice/src/core/errors.js';
import { envelope, type Envelope } from '../../packages/sluice/src/core/types.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { MemoryDeadLetters, splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import { requirePostgres, uniqueName } from '../helpers/services.js';

/** An envelope as a source makes it: the line's bytes as received, the parsed value, an id when the source has one. */
function rec(line: string, id?: string): Envelope<unknown> {
  const raw = Buffer.from(line);
  return envelope(JSON.parse(line) as unknown, { bytes: raw.length, intendedAtMs: 0, raw, id });
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

async function withDb(t: import('node:test').TestContext, fn: (url: string, admin: pg.Client, table: string) => Promise<void>): Promise<void> {
  const url = await requirePostgres(t);
  if (!url) return;
  const admin = new pg.Client(url);
  await admin.connect();
  const table = uniqueName('pgg');
  try {
    await fn(url, admin, table);
  } finally {
    await admin.query(`DROP TABLE IF EXISTS "${table}"`).catch(() => {});
    await admin.end();
  }
}

async function withSink(url: string, opts: Partial<PostgresSinkOptions> & { table: string }, fn: (sink: PostgresSink) => Promise<void>): Promise<void> {
  const sink = new PostgresSink({ connectionString: url, ...opts });
  try {
    await sink.open();
    await fn(sink);
  } finally {
    await sink.close();
  }
}

/** Runs records through a Pipeline with splitAndRetry into `sink`; returns the stats and the DLQ. */
async function pipe(sink: PostgresSink, batches: Envelope<unknown>[][]) {
  const dlq = new MemoryDeadLetters<unknown>();
  const handler = splitAndRetry<unknown>(sink, { dlq, retry: { budget: 3, baseMs: 1, maxMs: 5, jitter: 0 } });
  const p = new Pipeline<unknown>({ sink, handler, window: { maxItems: 64, maxWaitMs: 2, maxInFlight: 2 } });
  for (const b of batches) for (const e of b) await p.put(e);
  await p.close();
  const st = p.stats();
  assert.equal(st.ledger.balanced, true, JSON.stringify(st.ledger));
  assert.equal(st.ledger.accepted, st.ledger.committed + st.ledger.dropped + st.ledger.deadLettered + st.ledger.inFlight);
  return { st, dlq };
}

const LINES = [
  '{"msg":"hello","level":"info"}',
  '{"id":"a-1","msg":"with an id field, but no id configured"}',
  '{"nested":{"deep":{"x":[1,2,{"y":null}]}},"unicode":"é ✓ 日本 🚀","tab":"a\\tb","bs":"c:\\\\path"}',
  '{"n":"12345678901234567890","f":"1.50"}',
  '[1,"two",{"three":3}]',
  '"just a string"',
  '42',
];

for (const mode of ['copy', 'staged', 'insert', 'json', 'append'] as PostgresWriteMode[])
  test(`postgres generic (${mode}): the default table is created, any JSON value is one row, its document as received, its id env.id or the sha256 of its bytes`, async (t) => {
    await withDb(t, async (url, admin, table) => {
      await withSink(url, { table, mode }, async (sink) => {
        const cols = await admin.query(
          `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
          [table],
        );
        assert.deepEqual(
          cols.rows.map((r) => [r.column_name, r.data_type, r.is_nullable]),
          [['id', 'text', 'NO'], ['received_at', 'timestamp with time zone', 'NO'], ['doc', 'jsonb', 'NO']],
        );
        assert.match(String(cols.rows[1].column_default), /now\(\)/);
        const envs = LINES.map((l, i) => rec(l, i === 0 ? 'src-0' : undefined));
        await sink.write(envs);
        assert.equal(sink.fixedCostOps(), 1);
        const rows = (await admin.query(`SELECT id, doc FROM "${table}"`)).rows as { id: string; doc: unknown }[];
        assert.equal(rows.length, LINES.length);
        const byId = new Map(rows.map((r) => [r.id, r.doc]));
        // The envelope's id wins (source message id); otherwise the content hash, even when
        // the record has an `id` field (the id field is the CLI's --id-field choice, made upstream).
        assert.deepEqual(byId.get('src-0'), JSON.parse(LINES[0]));
        for (let i = 1; i < LINES.length; i++) assert.deepEqual(byId.get(sha256(LINES[i])), JSON.parse(LINES[i]), LINES[i]);
      });
    });
  });

test('postgres generic (default mode): a redelivered batch neither fails nor duplicates; with content-hash ids the same bytes are one row; ledger balanced', async (t) => {
  await withDb(t, async (url, admin, table) => {
    await withSink(url, { table }, async (sink) => {
      assert.equal(sink.mode, 'copy');
      const batch = Array.from({ length: 200 }, (_, i) => rec(JSON.stringify({ i, msg: `line ${i}` }), `m-${i}`));
      // The first delivery, then the same batch again (a lost acknowledgement), then an
      // overlapping one: committed three times over, stored once each.
      const r = await pipe(sink, [batch, batch, [...batch.slice(150), ...Array.from({ length: 50 }, (_, i) => rec(`{"i":${200 + i}}`, `m-${200 + i}`))]]);
      assert.equal(r.st.ledger.committed, 500);
      assert.equal(r.st.ledger.deadLettered, 0);
      assert.equal(r.dlq.letters.length, 0);
      assert.equal(await sink.countRows(), 250);
      assert.ok(sink.conflictCount() >= 1, 'a redelivered batch met stored ids and went through the staged path');
      // No id at all: the same bytes twice are one row.
      await sink.write([rec('{"same":"bytes"}'), rec('{"same":"bytes"}')]);
      await sink.write([rec('{"same":"bytes"}')]);
      assert.equal((await admin.query(`SELECT count(*)::int AS n FROM "${table}" WHERE id = $1`, [sha256('{"same":"bytes"}')])).rows[0].n, 1);
    });
  });
});

test('postgres generic: an existing user table with a column mapping (dotted paths, a custom id column, no document column) is used as it is', async (t) => {
  await withDb(t, async (url, admin, table) => {
    await admin.query(
      `CREATE TABLE "${table}" (event_id text PRIMARY KEY, level int NOT NULL, status smallint, ts timestamptz, tags jsonb, host varchar(16),
        note text DEFAULT 'none', ingested_at timestamptz NOT NULL DEFAULT now(), big bigint GENERATED ALWAYS AS (level * 10) STORED)`,
    );
    const before = (await admin.query(`SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, [table])).rows;
    for (const mode of ['copy', 'staged', 'insert', 'json'] as PostgresWriteMode[]) {
      await admin.query(`TRUNCATE "${table}"`);
      await withSink(
        url,
        { table, mode, idColumn: 'event_id', columns: { level: 'level', status: 'http.status', ts: 'time', tags: 'tags', host: 'host.name' } },
        async (sink) => {
          await sink.write([
            rec('{"level":3,"http":{"status":404},"time":"2024-01-02T03:04:05Z","tags":["a","b"],"host":{"name":"web-1"}}', 'e1'),
            rec('{"level":"5","tags":"plain","extra":{"ignored":true}}', 'e2'),
          ]);
          const rows = (await admin.query(`SELECT event_id, level, status, ts, tags, host, note, big FROM "${table}" ORDER BY event_id`)).rows;
          assert.equal(rows.length, 2, mode);
          assert.deepEqual(
            { ...rows[0], ts: (rows[0].ts as Date).toISOString() },
            { event_id: 'e1', level: 3, status: 404, ts: '2024-01-02T03:04:05.000Z', tags: ['a', 'b'], host: 'web-1', note: 'none', big: '30' },
            mode,
          );
          // A string number into an int column parses; a string into jsonb is a JSON string; a missing field is NULL.
          assert.deepEqual(rows[1], { event_id: 'e2', level: 5, status: null, ts: null, tags: 'plain', host: null, note: 'none', big: '50' }, mode);
          assert.deepEqual((await sink.ids()).sort(), ['e1', 'e2']);
        },
      );
    }
    const after = (await admin.query(`SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, [table])).rows;
    assert.deepEqual(after, before, 'the table was not altered');
  });
});

test('postgres generic: a mapping type error dead-letters only that record (split-and-retry, real constraints); ledger balanced', async (t) => {
  await withDb(t, async (url, admin, table) => {
    await admin.query(`CREATE TABLE "${table}" (id text PRIMARY KEY, level int, host varchar(8), doc jsonb NOT NULL)`);
    for (const mode of ['copy', 'staged', 'json'] as PostgresWriteMode[]) {
      await admin.query(`TRUNCATE "${table}"`);
      await withSink(url, { table, mode, columns: { level: 'level', host: 'host' } }, async (sink) => {
        const good = Array.from({ length: 100 }, (_, i) => rec(JSON.stringify({ level: i, host: 'h' }), `g${i}`));
        const bad = [rec('{"level":"abc","host":"h"}', 'bad-type'), rec('{"level":1,"host":"far-too-long-a-host"}', 'bad-length')];
        const batch = [...good.slice(0, 30), bad[0], ...good.slice(30, 70), bad[1], ...good.slice(70)];
        const r = await pipe(sink, [batch]);
        assert.deepEqual(r.dlq.ids().sort(), ['bad-length', 'bad-type'], mode);
        assert.deepEqual(
          r.dlq.letters.map((l) => (l.error as { sinkCode?: string }).sinkCode).sort(),
          ['22001', '22P02'],
          mode,
        );
        assert.equal(r.st.ledger.committed, 100, mode);
        assert.equal(r.st.ledger.deadLettered, 2, mode);
        assert.equal(await sink.countRows(), 100, mode);
      });
    }
  });
});

test('postgres generic: a table the sink cannot fill is one SLUICE_INVALID_OPTION at start naming the table and the column', async (t) => {
  await withDb(t, async (url, admin, table) => {
    const expectMismatch = async (ddl: string | null, opts: Partial<PostgresSinkOptions>, column: string, why: RegExp) => {
      await admin.query(`DROP TABLE IF EXISTS "${table}"`);
      if (ddl) await admin.query(ddl.replace(' T ', ` "${table}" `));
      const sink = new PostgresSink({ connectionString: url, table, ...opts });
      try {
        await assert.rejects(sink.open(), (e: unknown) => {
          assert.ok(e instanceof SluiceError, String(e));
          assert.equal(e.code, ErrorCode.InvalidOption);
          assert.ok(e.message.includes(table) && e.message.includes(column), e.message);
          assert.match(e.message, why);
          assert.equal(e.details.column, column);
          return true;
        });
      } finally {
        await sink.close();
      }
      if (ddl) {
        const still = (await admin.query(`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = $1`, [table])).rows[0].n;
        assert.ok(still > 0, 'the table is left as it was');
      }
    };
    await expectMismatch('CREATE TABLE T (key text PRIMARY KEY, doc jsonb)', {}, 'id', /no such column/);
    await expectMismatch('CREATE TABLE T (id text, doc jsonb)', {}, 'id', /unique index/);
    await expectMismatch('CREATE TABLE T (id text, doc jsonb, UNIQUE (id, doc))', {}, 'id', /unique index/);
    await expectMismatch('CREATE TABLE T (id text PRIMARY KEY, doc jsonb)', { columns: { level: 'level' } }, 'level', /no such column/);
    await expectMismatch('CREATE TABLE T (id text PRIMARY KEY, doc jsonb, tenant text NOT NULL)', {}, 'tenant', /NOT NULL without a default/);
    await expectMismatch('CREATE TABLE T (id text PRIMARY KEY, body jsonb)', { docColumn: 'payload' }, 'payload', /no such column/);
    await expectMismatch(null, { columns: { level: 'level' } }, 'level', /does not exist/);
    // append needs no unique index (it is not idempotent anyway).
    await admin.query(`DROP TABLE IF EXISTS "${table}"`);
    await admin.query(`CREATE TABLE "${table}" (id text, doc jsonb)`);
    await withSink(url, { table, mode: 'append' }, async (sink) => {
      await sink.write([rec('{"a":1}', 'x')]);
      assert.equal(await sink.countRows(), 1);
    });
  });
});

test('postgres generic: rowStatement (dlq revalidation) applies the same id rule, mapping and casts', async (t) => {
  await withDb(t, async (url, admin, table) => {
    await admin.query(`CREATE TABLE "${table}" (id text PRIMARY KEY, level int, doc jsonb NOT NULL)`);
    await withSink(url, { table, columns: { level: 'level' } }, async (sink) => {
      const row = await sink.rowStatement();
      await admin.query('BEGIN');
      await admin.query(row.text, row.values(rec('{"level":7}')));
      await assert.rejects(admin.query(row.text, row.values(rec('{"level":"x"}'))), (e: unknown) => (e as { code?: string }).code === '22P02');
      await admin.query('ROLLBACK');
      await admin.query(row.text, row.values(rec('{"level":7}')));
      assert.deepEqual((await admin.query(`SELECT id, level FROM "${table}"`)).rows, [{ id: sha256('{"level":7}'), level: 7 }]);
    });
  });
});

test('postgres generic (copy, append): batches large enough to reuse the COPY buffer store every row exactly, after a larger batch, a conflict fallback and a refused batch', async (t) => {
  await withDb(t, async (url, admin, table) => {
    for (const mode of ['copy', 'append'] as PostgresWriteMode[]) {
      await admin.query(`DROP TABLE IF EXISTS "${table}"`);
      await withSink(url, { table, mode, maxConnections: 1 }, async (sink) => {
        // ≈ 350 bytes a row: 400 rows ≈ 140 KB, above the size from which buffers are kept.
        const pad = 'x'.repeat(300);
        const make = (from: number, n: number) =>
          Array.from({ length: n }, (_, k) => {
            const i = from + k;
            // Non-ASCII in some ids and documents: the ASCII fast path must hand over to UTF-8.
            return rec(JSON.stringify({ i, s: i % 7 === 0 ? `é ✓ 日本 ${pad}` : pad }), i % 5 === 0 ? `id-é-${i}` : `id-${i}`);
          });
        const batches = [make(0, 400), make(400, 120), make(520, 400)];
        await sink.write(batches[0]);
        await sink.write(batches[1]); // a smaller batch into the larger reused buffer: no stale tail
        if (mode === 'copy') await sink.write(batches[1]); // redelivered: conflict, staged, stored once
        else await assert.rejects(sink.write(batches[1]), (e: { sinkCode?: string }) => e.sinkCode === '23505');
        await sink.write(batches[2]);
        const rows = (await admin.query(`SELECT id, doc::text AS doc FROM "${table}"`)).rows as { id: string; doc: string }[];
        assert.equal(rows.length, 920, mode);
        const want = new Map(batches.flat().map((e) => [e.id!, JSON.stringify(JSON.parse(e.raw!.toString()))]));
        for (const r of rows) assert.equal(JSON.stringify(JSON.parse(r.doc)), want.get(r.id), `${mode} ${r.id}`);
        if (mode === 'copy') assert.equal(sink.conflictCount(), 1);
      });
    }
  });
});

test('postgres generic: workers starting together on a table that does not exist yet all open it (the loser of the CREATE race is not an error)', async (t) => {
  await withDb(t, async (url, admin, table) => {
    // Several rounds: the race (`type "…" already exists`, 42710) is won or lost by timing;
    // without the fix this failed in about half of the runs of this test here.
    for (let round = 0; round < 10; round++) {
      await admin.query(`DROP TABLE IF EXISTS "${table}"`);
      const sinks = Array.from({ length: 8 }, () => new PostgresSink({ connectionString: url, table }));
      try {
        const opened = await Promise.allSettled(sinks.map((s) => s.open()));
        const failed = opened.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason?.message));
        assert.deepEqual(failed, [], `round ${round}`);
      } finally {
        await Promise.all(sinks.map((s) => s.close().catch(() => {})));
      }
    }
  });
});
