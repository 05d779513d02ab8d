import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireNats, requirePostgres, uniqueName } from '../helpers/services.js';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../packages/sluice/src/sources/nats.js';
import { JetStreamProducer, JetStreamSource } from '../../packages/sluice/src/sources/jetstream.js';
import { PoisonInput } from '../../packages/lab/src/records/poison.js';
import { openEventTableSink } from '../../packages/lab/src/sinks.js';
import { PostgresDeadLetterStore } from '../../packages/sluice/src/dlq/postgres.js';
import { JetStreamDeadLetterStore } from '../../packages/sluice/src/dlq/jetstream.js';
import { deadLetterWriter } from '../../packages/sluice/src/dlq/store.js';
import { splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
import type { EventRecord } from '../../packages/lab/src/records/records.js';
import type { PipelineObserver } from '../../packages/sluice/src/core/types.js';

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 15_000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('JetStream → split-and-retry → PostgreSQL: poison in the DLQ, the rest exactly once, redelivery absorbed', async (t) => {
  const dbUrl = await requirePostgres(t);
  const natsUrl = await requireNats(t);
  if (!dbUrl || !natsUrl) return;
  const name = uniqueName('poison');
  const stream = name.toUpperCase();
  const nc = await connectNats(natsUrl);
  const sink = await openEventTableSink({ connectionString: dbUrl, table: name });
  const dlqStore = new PostgresDeadLetterStore(dbUrl, `${name}_dlq`);
  const jsDlq = new JetStreamDeadLetterStore(nc, `${stream}_DLQ`);
  let src: JetStreamSource<EventRecord> | null = null;
  try {
    await sink.open();
    const input = new PoisonInput({ every: 100, sink: 'postgres', idPrefix: `${name}_` });
    const N = 600;
    const made = Array.from({ length: N }, (_, i) => input.make(i, Date.now()));
    const poisonIds = made.filter((m) => m.poison).map((m) => m.rec.id).sort();
    assert.equal(poisonIds.length, 6);
    // ack_wait generous for the first phase: a loaded host must not cause redeliveries here.
    src = await JetStreamSource.open<EventRecord>({ nc, stream, consumer: 'workers', ackWaitMs: 60_000 });
    await new JetStreamProducer(nc, stream).publish(made.map((m) => m.rec));
    assert.equal(await src.lag(), N);

    const handler = splitAndRetry(sink, { dlq: deadLetterWriter(dlqStore, { pipeline: 'it', sink: 'postgres', source: src.name }), retry: { baseMs: 1, maxMs: 10 } });
    const run1 = new Ingest<EventRecord>({ source: src, sink, handler, window: { maxItems: 128, maxWaitMs: 5 } });
    await until('lag 0', async () => (await src!.lag()) === 0);
    const l1 = await run1.stop();
    assert.ok(l1.balanced, JSON.stringify(l1));
    assert.equal(l1.accepted, N);
    assert.equal(l1.committed, N - 6);
    assert.equal(l1.deadLettered, 6);
    const ids = await sink.ids();
    assert.equal(ids.length, N - 6);
    assert.equal(new Set(ids).size, ids.length);
    for (const p of poisonIds) assert.ok(!ids.includes(p));
    const letters = await dlqStore.list();
    assert.deepEqual(letters.map((l) => l.id).sort(), poisonIds);
    assert.deepEqual(new Set(letters.map((l) => l.sinkCode)), new Set(['23514', '22001', '22P02', '23502']));
    assert.ok(letters.every((l) => l.errorClass === 'item' && l.source === src!.name && typeof l.offset === 'number'));
    assert.ok(handler.stats().isolations.every((i) => i.sinkCalls <= i.bound));

    // The JetStream DLQ store round-trips the same entries.
    await jsDlq.append(letters);
    assert.deepEqual((await jsDlq.list()).map((l) => l.id).sort(), poisonIds);

    // Crash between commit and ack: commit 200 more, never ack; the server redelivers after ack_wait (now 1 s).
    await (await jetstreamManager(nc)).consumers.update(stream, 'workers', { ack_wait: 1_000 * 1_000_000 });
    const more = Array.from({ length: 200 }, (_, i) => input.make(N + i, Date.now()));
    const goodMore = more.filter((m) => !m.poison).length;
    await new JetStreamProducer(nc, stream).publish(more.map((m) => m.rec));
    const crashing = await JetStreamSource.open<EventRecord>({ nc, stream, consumer: 'workers', ackWaitMs: 1_000 });
    (crashing as any).observer = (): PipelineObserver<EventRecord> => ({});
    const run2 = new Ingest<EventRecord>({ source: crashing, sink, handler, window: { maxItems: 128, maxWaitMs: 5 } });
    await until('200 handled', async () => run2.stats().ledger.committed + run2.stats().ledger.deadLettered >= 200);
    await run2.stop();
    // The process dies: its in-progress acks for the messages it still holds stop with it.
    await crashing.close();
    assert.equal(await sink.countRows(), N - 6 + goodMore);
    assert.ok((await src.lag()) > 0, 'nothing acked: still pending');
    src = await JetStreamSource.open<EventRecord>({ nc, stream, consumer: 'workers', ackWaitMs: 1_000 });
    const run3 = new Ingest<EventRecord>({ source: src, sink, handler, window: { maxItems: 128, maxWaitMs: 5 } });
    await until('redelivered and acked', async () => (await src!.lag()) === 0);
    const l3 = await run3.stop();
    assert.ok(l3.balanced);
    assert.ok(l3.accepted >= 200, `redelivered ${l3.accepted}`);
    assert.equal(await sink.countRows(), N - 6 + goodMore, 'duplicates absorbed by ON CONFLICT (id)');
  } finally {
    await src?.destroy().catch(() => {});
    await jsDlq.deleteStream().catch(() => {});
    await sink.dropTable().catch(() => {});
    await dlqStore.dropTable().catch(() => {});
    await sink.close();
    await dlqStore.close();
    await nc.close();
  }
});
