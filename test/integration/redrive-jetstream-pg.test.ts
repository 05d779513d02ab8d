/**
 * Re-drive on the real components: a JetStream stream consumed into PostgreSQL (real
 * constraints) with a PostgreSQL DLQ. Bugs: `kind` longer than varchar(32) (fixed by a
 * migration), amount "€…" (fixed by the transform), negative amount (not fixable →
 * quarantined in a PostgreSQL table). Dry run first (migration rolled back), then the re-drive,
 * a second pass, a second re-drive that publishes nothing, and reconciliation. Also: a re-drive
 * whose publish was already done (cursor left at `planned`, as after a kill) publishes nothing twice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { jetstreamManager } from '@nats-io/jetstream';
import { splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import type { Sink } from '../../packages/sluice/src/core/types.js';
import { EVENT_TABLE_MAPPING, openEventTableSink } from '../../packages/lab/src/sinks.js';
import { PostgresDeadLetterStore } from '../../packages/sluice/src/dlq/postgres.js';
import { deadLetterWriter } from '../../packages/sluice/src/dlq/store.js';
import { openConsumableDlq } from '../../packages/sluice/src/dlq/access.js';
import { loadTransform, openMainStream, PostgresRevalidator, redrive, type RedriveCursor } from '../../packages/sluice/src/dlq/redrive.js';
import { reconcileIds, sourceIds } from '../../packages/sluice/src/dlq/reconcile.js';
import { ensureJetStream, JetStreamProducer, JetStreamSource } from '../../packages/sluice/src/sources/jetstream.js';
import { connectNats } from '../../packages/sluice/src/sources/nats.js';
import { RecordFactory } from '../../packages/lab/src/records/records.js';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
import { FIX_TRANSFORM_SOURCE } from '../../packages/lab/src/experiments/redrive.js';
import { requireNats, requirePostgres, uniqueName } from '../helpers/services.js';

test('JetStream + PostgreSQL: migrate + transform, dry run, re-drive twice, quarantine, reconcile', { timeout: 60_000 }, async (t) => {
  const dbUrl = await requirePostgres(t);
  const natsUrl = await requireNats(t);
  if (!dbUrl || !natsUrl) return;
  const name = uniqueName('redrive');
  const stream = name.toUpperCase();
  const dir = await mkdtemp(join(tmpdir(), 'sluice-redrive-js-'));
  const nc = await connectNats(natsUrl);
  const sink = await openEventTableSink({ connectionString: dbUrl, table: name });
  const store = new PostgresDeadLetterStore(dbUrl, `${name}_dlq`);
  const dlq = await openConsumableDlq({ dlq: dbUrl, table: `${name}_dlq` });
  const quarantine = await openConsumableDlq({ dlq: dbUrl, table: `${name}_q` });
  const rv = new PostgresRevalidator(dbUrl, name, { docColumn: EVENT_TABLE_MAPPING.docColumn, columns: { ...EVENT_TABLE_MAPPING.columns } });
  const admin = new pg.Client({ connectionString: dbUrl });
  await admin.connect();
  try {
    const f = new RecordFactory({ seed: 3, idPrefix: 'j' });
    const recs = Array.from({ length: 120 }, (_, i) => {
      const e = f.make(i, 0);
      const v = { ...e.value } as Record<string, unknown>;
      if (i % 10 === 1) v.kind = 'k'.repeat(40);
      else if (i % 10 === 2) v.amount = `€${Number(v.amount).toFixed(2)}`;
      else if (i % 40 === 3) v.amount = -2;
      else return { id: e.id!, data: e.raw! };
      return { id: e.id!, data: Buffer.from(JSON.stringify(v)) };
    });
    await ensureJetStream(await jetstreamManager(nc), { stream, consumer: 'c', ackWaitMs: 60_000 });
    await new JetStreamProducer(nc, stream).publish(recs);

    const pass = async () => {
      const source = await JetStreamSource.open<unknown>({ nc, stream, consumer: 'c', ackWaitMs: 60_000 });
      const ingest = new Ingest<unknown>({
        source,
        sink: sink as unknown as Sink<unknown>,
        handler: splitAndRetry(sink as unknown as Sink<unknown>, { dlq: deadLetterWriter(store, { pipeline: 't', sink: 'postgres', source: source.name }), retry: { budget: 2, baseMs: 1, maxMs: 5 } }),
        window: { maxItems: 64, maxWaitMs: 2 },
      });
      const deadline = performance.now() + 20_000;
      while ((await source.lag()) > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const ledger = await ingest.stop();
      await source.close();
      assert.ok(ledger.balanced);
      return ledger;
    };
    await pass();
    assert.equal((await dlq.pending()).length, 12 + 12 + 3);

    const fix = join(dir, 'fix.mjs');
    await writeFile(fix, FIX_TRANSFORM_SOURCE);
    const migrationSql = `ALTER TABLE "${name}" ALTER COLUMN kind TYPE varchar(64)`;
    const cursorPath = join(dir, 'cursor.json');
    const o = {
      dlq,
      openTarget: (e: Parameters<typeof openMainStream>[1]) => openMainStream(`${natsUrl}/${stream}`, e, { nc }),
      revalidator: rv,
      transform: await loadTransform(fix),
      migrationSql,
      onFail: 'quarantine' as const,
      quarantine,
      cursorPath,
    };
    const kindLen = async () => (await admin.query(`SELECT character_maximum_length AS n FROM information_schema.columns WHERE table_name = $1 AND column_name = 'kind'`, [name])).rows[0].n;

    const dry = await redrive({ ...o, dryRun: true });
    assert.deepEqual([dry.pass, dry.fail], [24, 3], 'the migration and transform would fix 24, the negative amounts fail');
    assert.equal(await kindLen(), 32, 'dry run: migration rolled back');
    assert.equal((await dlq.pending()).length, 27);

    const jsm = await jetstreamManager(nc);
    const lastSeq = async () => (await jsm.streams.info(stream)).state.last_seq;
    const r1 = await redrive({ ...o, onProgress: () => {} });
    assert.deepEqual([r1.published, r1.quarantined, r1.resolved, r1.migrated], [24, 3, 27, true]);
    assert.equal(await kindLen(), 64);
    assert.equal(await lastSeq(), 144);

    await pass();
    const r2 = await redrive({ ...o, migrationSql: null });
    assert.deepEqual([r2.pending, r2.published], [0, 0], 'the second re-drive has nothing to do');

    const rows = await sink.ids();
    const rec = reconcileIds(await sourceIds(`${natsUrl}/${stream}`, nc), rows, (await dlq.pending()).map((e) => e.id), (await quarantine.pending()).map((e) => e.id));
    assert.deepEqual([rec.produced, rec.committed, rec.quarantined, rec.missing, rec.duplicated], [120, 117, 3, 0, 0], JSON.stringify(rec));
    const q = await quarantine.pending();
    assert.ok(q.every((e) => e.sinkCode === '23514' && /check constraint/.test(e.message)), 'quarantined with the reason');

    // Resume after a "kill" at `planned` whose publish had completed: nothing published twice.
    const fake: RedriveCursor = {
      v: 1, startedAt: new Date().toISOString(), dlq: dlq.describe, target: `jetstream:${stream}`, positionBefore: 120, returnAt: new Date().toISOString(),
      onFail: 'quarantine', transform: null, migrationSha256: null, phase: 'planned', items: [],
    };
    const before = await lastSeq();
    const published = (await sourceIds(`${natsUrl}/${stream}`, nc)).slice(120);
    fake.items = published.slice(0, 5).map((id) => ({
      key: `${id}|x|1`,
      entry: { v: 1, id, source: `jetstream:${stream}/c`, offset: null, pipeline: 't', sink: 'postgres', errorClass: 'item', code: 'SLUICE_SINK_ITEM', sinkCode: null, message: '', attempts: 1, firstFailureAt: new Date().toISOString(), deadLetteredAt: new Date().toISOString(), data: Buffer.from('{}').toString('base64') },
      action: 'publish',
      data: Buffer.from('{}').toString('base64'),
    }));
    await writeFile(cursorPath, JSON.stringify(fake));
    const r3 = await redrive(o);
    assert.deepEqual([r3.resumed, r3.published, r3.alreadyPublished], [true, 0, 5]);
    assert.equal(await lastSeq(), before, 'nothing published twice');
  } finally {
    await admin.end();
    await rv.close();
    await quarantine.close();
    await dlq.close();
    await store.dropTable().catch(() => {});
    await store.close();
    await admin.end().catch(() => {});
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    await c.query(`DROP TABLE IF EXISTS "${name}_q"`);
    await c.end();
    await sink.dropTable();
    await sink.close();
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
    await rm(dir, { recursive: true, force: true });
  }
});
