import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PostgresSink, classifyPgError, POSTGRES_WRITE_MODES, POSTGRES_DEFAULTS } from '../../packages/sluice/src/sinks/postgres.js';
import { ErrorCode, SinkError, SluiceError } from '../../packages/sluice/src/core/errors.js';
import { RecordFactory, type EventRecord } from '../../packages/lab/src/records/records.js';
import { envelope, type Envelope } from '../../packages/sluice/src/core/types.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { requirePostgres, uniqueName } from '../helpers/services.js';
import { openEventTableSink } from '../../packages/lab/src/sinks.js';

const factory = new RecordFactory({ seed: 11 });
/**
 * The idempotent write paths, on the lab's EventRecord table (created by the lab with its CHECK
 * and length constraints, mapped column by column, no document column): what the constraint
 * tests below need. The generic record model has its own file (postgres-generic.test.ts).
 * `auto` only chooses between json and copy (its own test below).
 */
const PATHS = ['copy', 'staged', 'insert', 'json'] as const;
type Mode = (typeof PATHS)[number] | 'append';

function batchOf(from: number, n: number): Envelope<EventRecord>[] {
  return Array.from({ length: n }, (_, i) => factory.make(from + i, 0));
}

/** A record identical to a generated one but with one field replaced. */
function tampered(i: number, patch: Record<string, unknown>): Envelope<EventRecord> {
  const base = factory.make(i, 0);
  const value = { ...base.value, ...patch } as EventRecord;
  return envelope(value, { bytes: base.bytes, intendedAtMs: 0, id: value.id });
}

async function withSink(
  t: import('node:test').TestContext,
  mode: Mode,
  fn: (sink: PostgresSink, url: string) => Promise<void>,
): Promise<void> {
  const url = await requirePostgres(t);
  if (!url) return;
  const sink = await openEventTableSink({ connectionString: url, table: uniqueName(`pg_${mode}`), mode });
  try {
    await fn(sink, url);
  } finally {
    await sink.dropTable().catch(() => {});
    await sink.close();
  }
}

async function assertRejectsWith(p: Promise<unknown>, failureClass: 'item' | 'transient', sinkCode: string): Promise<SinkError> {
  let caught: unknown;
  await p.catch((e) => (caught = e));
  assert.ok(caught instanceof SinkError, `expected a SinkError, got ${String(caught)}`);
  assert.equal(caught.failureClass, failureClass);
  assert.equal(caught.sinkCode, sinkCode);
  assert.equal(caught.code, failureClass === 'item' ? ErrorCode.SinkItem : ErrorCode.SinkTransient);
  return caught;
}

for (const mode of PATHS) {
  test(`postgres sink (${mode}): rows land, one commit per batch, values round-trip`, async (t) => {
    await withSink(t, mode, async (sink, url) => {
      const a = batchOf(0, 50);
      const b = batchOf(50, 7);
      await sink.write(a);
      await sink.write(b);
      await sink.write([]); // an empty batch costs nothing
      assert.equal(sink.fixedCostOps(), 2);
      assert.equal(await sink.countRows(), 57);
      const ids = await sink.ids();
      assert.deepEqual(new Set(ids), new Set([...a, ...b].map((e) => e.id)));
      // Read a row back through a separate connection: every column as written.
      const c = new pg.Client(url);
      await c.connect();
      try {
        const r = await c.query(`SELECT id, ts::text AS ts, source, kind, amount::text AS amount, note, payload FROM "${sink.table}" WHERE id = $1`, [a[3].id]);
        const v = a[3].value;
        assert.equal(r.rows.length, 1);
        assert.equal(r.rows[0].ts, String(v.ts));
        assert.equal(r.rows[0].source, v.source);
        assert.equal(r.rows[0].kind, v.kind);
        assert.equal(Number(r.rows[0].amount), v.amount);
        assert.equal(r.rows[0].note, v.note);
        assert.deepEqual(r.rows[0].payload, v.payload);
        // The constraints are real (the poison issue relies on them).
        const cons = await c.query(`SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = $1::regclass`, [sink.table]);
        const defs = cons.rows.map((x) => x.def as string).join(' | ');
        assert.match(defs, /PRIMARY KEY \(id\)/);
        assert.match(defs, /CHECK \(\(amount >= /);
      } finally {
        await c.end();
      }
    });
  });

  test(`postgres sink (${mode}): re-writing the same batch neither fails nor duplicates`, async (t) => {
    await withSink(t, mode, async (sink) => {
      const a = batchOf(1000, 20);
      await sink.write(a);
      await sink.write(a);
      // A batch overlapping the first, and one holding the same id twice.
      await sink.write([...batchOf(1015, 10), factory.make(1024, 0)]);
      assert.equal(await sink.countRows(), 25);
      assert.equal(sink.fixedCostOps(), 3);
    });
  });

  test(`postgres sink (${mode}): a negative amount is an item-level error 23514, nothing of the batch lands`, async (t) => {
    await withSink(t, mode, async (sink) => {
      const bad = [...batchOf(2000, 5), tampered(2005, { amount: -1 }), ...batchOf(2006, 5)];
      const e = await assertRejectsWith(sink.write(bad), 'item', '23514');
      assert.equal(e.retryable, false);
      assert.equal(await sink.countRows(), 0);
      assert.equal(sink.fixedCostOps(), 0);
      // The sink (and its pooled connection) stays usable after the failure.
      await sink.write(batchOf(2000, 5));
      assert.equal(await sink.countRows(), 5);
      assert.equal(sink.fixedCostOps(), 1);
    });
  });

  test(`postgres sink (${mode}): an invalid number is an item-level error 22P02`, async (t) => {
    await withSink(t, mode, async (sink) => {
      await assertRejectsWith(sink.write([...batchOf(3000, 3), tampered(3003, { amount: '€12' })]), 'item', '22P02');
      // A kind longer than varchar(32): data exception 22001, item-level too.
      await assertRejectsWith(sink.write([tampered(3004, { kind: 'k'.repeat(40) })]), 'item', '22001');
      assert.equal(await sink.countRows(), 0);
    });
  });

  test(`postgres sink (${mode}): behind a pipeline, committed equals rows stored`, async (t) => {
    await withSink(t, mode, async (sink) => {
      const p = new Pipeline<EventRecord>({ sink, window: { maxItems: 64, maxWaitMs: 2, maxInFlight: 2 } });
      for (let i = 0; i < 500; i++) await p.put(factory.make(5000 + i, 0));
      await p.close();
      const st = p.stats();
      assert.equal(st.ledger.balanced, true);
      assert.equal(st.ledger.committed, 500);
      assert.equal(await sink.countRows(), 500);
      assert.equal(sink.fixedCostOps(), st.batches);
    });
  });
}

for (const mode of PATHS)
  test(`postgres sink (${mode}): an unreachable database is one SLUICE_SINK_UNAVAILABLE naming host and port, quickly`, async () => {
    const sink = new PostgresSink({ connectionString: 'postgres://root@127.0.0.1:1/test', table: uniqueName('pg_down'), mode, connectTimeoutMs: 2000 });
    const t0 = Date.now();
    try {
      await assert.rejects(sink.open(), (e: unknown) => {
        assert.ok(e instanceof SluiceError);
        assert.equal(e.code, ErrorCode.SinkUnavailable);
        assert.match(e.message, /127\.0\.0\.1:1\b/);
        return true;
      });
      // A write on a sink that never opened says the same, classified (transient, alerting), not a hang.
      await assert.rejects(sink.write(batchOf(0, 1)), (e: unknown) => {
        assert.ok(e instanceof SinkError);
        assert.equal(e.failureClass, 'transient');
        assert.equal(e.sinkCode, 'ECONNREFUSED');
        assert.equal(e.alerting, true);
        assert.match(e.message, /127\.0\.0\.1:1\b/);
        return true;
      });
    } finally {
      await sink.close();
    }
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

test('postgres sink: a database that does not exist is SLUICE_SINK_UNAVAILABLE with the server\'s reason', async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const u = new URL(url);
  u.pathname = '/' + uniqueName('nodb');
  const sink = new PostgresSink({ connectionString: u.toString(), table: 't' });
  try {
    await assert.rejects(sink.open(), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.SinkUnavailable && /3D000/.test(e.message));
  } finally {
    await sink.close();
  }
});

test('postgres sink: the default mode is copy, and every mode is listed', () => {
  assert.equal(POSTGRES_DEFAULTS.mode, 'copy');
  assert.deepEqual([...POSTGRES_WRITE_MODES].sort(), ['append', 'auto', 'copy', 'insert', 'json', 'staged']);
  assert.equal(new PostgresSink({ connectionString: 'postgres://x@127.0.0.1/db', table: 't' }).mode, 'copy');
});

test('postgres sink (auto): small batches go through one JSON statement, batches of copyMinRows or more through COPY', async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const sink = await openEventTableSink({ connectionString: url, table: uniqueName('pg_auto'), mode: 'auto', copyMinRows: 8, conflictBatches: 0 });
  try {
    await sink.write(batchOf(8000, 7));
    assert.deepEqual(sink.writesByPath(), { copy: 0, staged: 0, insert: 0, json: 1, append: 0 });
    await sink.write(batchOf(8007, 8));
    assert.deepEqual(sink.writesByPath(), { copy: 1, staged: 0, insert: 0, json: 1, append: 0 });
    await sink.write(batchOf(8000, 20)); // overlaps both: COPY meets stored ids, the staged path skips them
    assert.deepEqual(sink.writesByPath(), { copy: 2, staged: 1, insert: 0, json: 1, append: 0 });
    assert.equal(sink.conflictCount(), 1);
    assert.equal(await sink.countRows(), 20);
    assert.equal(sink.fixedCostOps(), 3);
    // The same item-level classification on both paths.
    await assertRejectsWith(sink.write([tampered(8100, { amount: -1 })]), 'item', '23514');
    await assertRejectsWith(sink.write([...batchOf(8101, 8), tampered(8109, { amount: -1 })]), 'item', '23514');
    await assertRejectsWith(sink.write([...batchOf(8110, 8), tampered(8118, { source: null })]), 'item', '23502');
    assert.equal(await sink.countRows(), 20);
  } finally {
    await sink.dropTable().catch(() => {});
    await sink.close();
  }
});

test('postgres sink (json): the producer\'s raw bytes are sent as they are; the envelope id stands in for a missing one; bad JSON is item-level', async (t) => {
  await withSink(t, 'json', async (sink) => {
    const withRaw = factory.make(9500, 0);
    assert.ok(withRaw.raw, 'the factory gives raw bytes');
    const noId = tampered(9501, {});
    delete (noId.value as Partial<EventRecord>).id;
    await sink.write([withRaw, noId]);
    assert.deepEqual(await sink.ids(), ['e9500', 'e9501']);
    const bad = envelope(factory.make(9502, 0).value, { bytes: 3, intendedAtMs: 0, id: 'e9502', raw: Buffer.from('{"id":') });
    await assertRejectsWith(sink.write([factory.make(9503, 0), bad]), 'item', '22P02');
    assert.equal(await sink.countRows(), 2);
    assert.deepEqual(sink.writesByPath(), { copy: 0, staged: 0, insert: 0, json: 2, append: 0 });
  });
});

test('postgres sink (append): COPY straight into the table, one commit per batch; a redelivered batch is an item-level 23505, nothing of it lands twice', async (t) => {
  await withSink(t, 'append', async (sink) => {
    await sink.write(batchOf(9600, 5));
    await sink.write(batchOf(9605, 5));
    assert.equal(await sink.countRows(), 10);
    assert.equal(sink.fixedCostOps(), 2);
    await assertRejectsWith(sink.write(batchOf(9608, 4)), 'item', '23505');
    await assertRejectsWith(sink.write([factory.make(9700, 0), tampered(9701, { amount: -1 })]), 'item', '23514');
    assert.equal(await sink.countRows(), 10);
    await sink.write(batchOf(9610, 2)); // the connection replaced after the failures works
    assert.equal(await sink.countRows(), 12);
    assert.deepEqual(sink.writesByPath(), { copy: 0, staged: 0, insert: 0, json: 0, append: 5 });
  });
});

test('postgres sink: every path stores the same values, odd ones included', async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const odd = (i: number) => [
    tampered(i, { payload: 'just a string' as never, note: 'tab\there\nnewline \\ backslash "quote" é ✓' }),
    tampered(i + 1, { payload: { nested: { a: [1, 2, null] }, s: 'x\ty' }, note: null as never }),
    tampered(i + 2, { note: undefined as never, amount: 0 }),
  ];
  const stored: unknown[][] = [];
  const modes = [...PATHS, 'append'] as const;
  for (const mode of modes) {
    const sink = await openEventTableSink({ connectionString: url, table: uniqueName(`pg_same_${mode}`), mode });
    try {
      await sink.write(odd(9000));
      const c = new pg.Client(url);
      await c.connect();
      try {
        const r = await c.query(`SELECT id, ts::text, source, kind, amount::text, note, payload FROM "${sink.table}" ORDER BY id`);
        stored.push(r.rows);
      } finally {
        await c.end();
      }
    } finally {
      await sink.dropTable().catch(() => {});
      await sink.close();
    }
  }
  assert.equal((stored[0] as { payload: unknown }[])[0].payload, 'just a string');
  assert.equal((stored[0] as { note: unknown }[])[0].note, 'tab\there\nnewline \\ backslash "quote" é ✓');
  assert.equal((stored[0] as { note: unknown }[])[1].note, null);
  for (let k = 1; k < stored.length; k++) assert.deepEqual(stored[k], stored[0], `${modes[k]} stores what ${modes[0]} stores`);
});

test('postgres sink: a pooled connection killed by the server does not crash the process; the next write reconnects', async (t) => {
  const url = await requirePostgres(t);
  if (!url) return;
  const sink = new PostgresSink({ connectionString: url, table: uniqueName('pg_kill'), maxConnections: 1 });
  const admin = new pg.Client(url);
  try {
    await sink.open();
    await sink.write(batchOf(7000, 3));
    await admin.connect();
    const killed = await admin.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'`,
      [sink.table],
    );
    assert.ok(killed.rows.length >= 1, 'the sink\'s idle connection was found and terminated');
    await new Promise((r) => setTimeout(r, 50));
    let error: unknown;
    try {
      await sink.write(batchOf(7003, 3));
    } catch (e) {
      error = e;
    }
    // Either the pool noticed the death and reconnected, or the write hit the dead
    // connection: then the error must be transient (retrying the batch is right).
    if (error !== undefined) {
      assert.ok(error instanceof SinkError && error.failureClass === 'transient', String(error));
      await sink.write(batchOf(7003, 3));
    }
    assert.equal(await sink.countRows(), 6);
  } finally {
    await admin.end().catch(() => {});
    await sink.dropTable().catch(() => {});
    await sink.close();
  }
});

test('postgres sink: bad options are SLUICE_INVALID_OPTION naming the option', () => {
  const url = 'postgres://root@127.0.0.1:5432/test';
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ connectionString: url, table: 'x; DROP TABLE y' }, /table/],
    [{ connectionString: 'mysql://x', table: 't' }, /connectionString/],
    [{ connectionString: url, table: 't', mode: 'upsert' }, /mode/],
    [{ connectionString: url, table: 't', maxConnections: 0 }, /maxConnections/],
    [{ connectionString: url, table: 't', copyMinRows: 0 }, /copyMinRows/],
    [{ connectionString: url, table: 't', conflictBatches: -1 }, /conflictBatches/],
    [{ connectionString: url, table: 't', idColumn: 'a b' }, /idColumn/],
    [{ connectionString: url, table: 't', docColumn: 'id' }, /docColumn/],
    [{ connectionString: url, table: 't', columns: { 'x;': 'a' } }, /columns/],
    [{ connectionString: url, table: 't', columns: { x: 'a..b' } }, /columns\.x/],
    [{ connectionString: url, table: 't', columns: { id: 'a' } }, /columns\.id/],
  ];
  for (const [opts, re] of bad)
    assert.throws(
      () => new PostgresSink(opts as never),
      (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.InvalidOption && re.test(e.message),
    );
});

test('classifyPgError: SQLSTATE classes and connection errors', () => {
  const cases: [unknown, 'item' | 'transient', string, boolean][] = [
    [{ code: '23505', message: 'duplicate key' }, 'item', '23505', false],
    [{ code: '23514', message: 'check' }, 'item', '23514', false],
    [{ code: '22P02', message: 'invalid input syntax' }, 'item', '22P02', false],
    [{ code: '08006', message: 'connection failure' }, 'transient', '08006', false],
    [{ code: '40001', message: 'serialization failure' }, 'transient', '40001', false],
    [{ code: '40P01', message: 'deadlock' }, 'transient', '40P01', false],
    [{ code: '53100', message: 'disk full' }, 'transient', '53100', true],
    [{ code: '57P01', message: 'admin shutdown' }, 'transient', '57P01', false],
    [{ code: '57014', message: 'statement timeout' }, 'transient', '57014', false],
    [{ code: '42P01', message: 'relation does not exist' }, 'transient', '42P01', true],
    [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), 'transient', 'ECONNREFUSED', false],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'transient', 'ECONNRESET', false],
    [new Error('Connection terminated unexpectedly'), 'transient', 'ECONNCLOSED', false],
    [new Error('timeout exceeded when trying to connect'), 'transient', 'ETIMEDOUT', false],
  ];
  for (const [err, cls, code, alerting] of cases) {
    const e = classifyPgError(err);
    assert.equal(e.failureClass, cls, `${code}`);
    assert.equal(e.sinkCode, code);
    assert.equal(e.alerting, alerting, `${code} alerting`);
    assert.equal(e.retryable, cls === 'transient');
    assert.equal(e.cause, err);
  }
  const already = new SinkError('item', 'x', { sinkCode: 'VALIDATION' });
  assert.equal(classifyPgError(already), already);
});
