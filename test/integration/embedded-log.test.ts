import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedLogSource, EmbeddedLogWriter, readCommitted, readLog } from '../../packages/sluice/src/sources/embedded-log.js';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
import { IdempotentMemorySink, PoisonedSink } from '../../packages/sluice/src/sinks/doubles.js';
import { splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import { FileDeadLetterStore } from '../../packages/sluice/src/dlq/file.js';
import { deadLetterWriter } from '../../packages/sluice/src/dlq/store.js';
import type { PipelineObserver } from '../../packages/sluice/src/core/types.js';

const rec = (i: number) => ({ id: `r${i}`, data: Buffer.from(JSON.stringify({ id: `r${i}`, n: i })) });

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-log-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('embedded log: offsets, out-of-order acks advance the committed offset contiguously, lag', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    const w = await EmbeddedLogWriter.open(path);
    assert.equal(await w.append([0, 1, 2, 3, 4].map(rec)), 0);
    assert.equal(w.size(), 5);
    await w.close();
    const src = await EmbeddedLogSource.open<unknown>({ path, stopAtEnd: true });
    const got: any[] = [];
    await src.run({ offer: (e) => (got.push(e), 'accepted'), put: async () => 'accepted' });
    assert.deepEqual(got.map((e) => e.offset), [0, 1, 2, 3, 4]);
    assert.equal(await src.lag(), 5);
    src.ack([got[2], got[3]]); // out of order: above a hole
    assert.equal(src.committed(), 0);
    assert.equal(await src.lag(), 5);
    src.ack([got[0]]);
    assert.equal(src.committed(), 1);
    src.ack([got[1]]);
    assert.equal(src.committed(), 4, 'the hole filled: 0..3 acknowledged');
    assert.equal(await src.lag(), 1);
    await src.close();
    assert.equal((await readCommitted(`${path}.committed`)).offset, 4);
    // a restart resumes at the committed offset
    const again = await EmbeddedLogSource.open<unknown>({ path, stopAtEnd: true });
    const rest: any[] = [];
    await again.run({ offer: (e) => (rest.push(e), 'accepted'), put: async () => 'accepted' });
    assert.deepEqual(rest.map((e) => e.id), ['r4']);
    await again.close();
    // torn last line from a crashed writer is cut off, offsets continue
    await (await import('node:fs/promises')).appendFile(path, '{"o":5,"id":"torn');
    const w2 = await EmbeddedLogWriter.open(path);
    assert.equal(w2.size(), 5);
    await w2.append([rec(5)]);
    await w2.close();
    assert.deepEqual((await readLog(path)).map((r) => r.offset), [0, 1, 2, 3, 4, 5]);
  });
});

test('crash between commit and ack: redelivered on restart, the idempotent sink absorbs duplicates, nothing lost', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    const N = 1000;
    const w = await EmbeddedLogWriter.open(path);
    await w.append(Array.from({ length: N }, (_, i) => rec(i)), { sync: true });
    await w.close();
    const sink = new IdempotentMemorySink<unknown>();

    // Run 1: the sink commits everything, but acks stop after 300 records (the "crash").
    const src1 = await EmbeddedLogSource.open<unknown>({ path, stopAtEnd: true });
    let ackBudget = 300;
    const realObserver = src1.observer();
    (src1 as any).observer = (): PipelineObserver<unknown> => ({
      onCommitted: (batch) => {
        const n = Math.min(ackBudget, batch.length);
        ackBudget -= n;
        if (n > 0) realObserver.onCommitted!(batch.slice(0, n), 0);
      },
    });
    const run1 = new Ingest({ source: src1, sink, window: { maxItems: 50, maxWaitMs: 1 } });
    await run1.reading;
    const l1 = await run1.stop();
    assert.ok(l1.balanced);
    assert.equal(l1.committed, N);
    assert.equal(sink.byId.size, N);
    await src1.close();
    const committedAfterCrash = (await readCommitted(`${path}.committed`)).offset;
    assert.equal(committedAfterCrash, 300);

    // Run 2: restart from the committed offset; 700 redelivered, absorbed by id.
    const src2 = await EmbeddedLogSource.open<unknown>({ path, stopAtEnd: true });
    assert.equal(await src2.lag(), N - 300);
    const run2 = new Ingest({ source: src2, sink, window: { maxItems: 50, maxWaitMs: 1 } });
    await run2.reading;
    const l2 = await run2.stop();
    assert.ok(l2.balanced);
    assert.equal(l2.accepted, N - 300);
    assert.equal(sink.duplicatesAbsorbed, N - 300);
    assert.equal(sink.byId.size, N, 'each record exactly once');
    assert.equal(await src2.lag(), 0);
    await src2.close();
    assert.equal((await readCommitted(`${path}.committed`)).offset, N);
  });
});

test('poison on the log: split-and-retry dead-letters durably (file DLQ) before the offset passes it', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    const w = await EmbeddedLogWriter.open(path);
    await w.append(Array.from({ length: 500 }, (_, i) => rec(i)));
    await w.close();
    const poison = new Set(['r7', 'r250', 'r251', 'r499']);
    const sink = new PoisonedSink<unknown>(poison);
    const store = await new FileDeadLetterStore(join(dir, 'dlq.jsonl')).open();
    const src = await EmbeddedLogSource.open<unknown>({ path, stopAtEnd: true });
    const handler = splitAndRetry(sink, { dlq: deadLetterWriter(store, { pipeline: 'p', sink: sink.name, source: src.name }), retry: { baseMs: 0, maxMs: 0 } });
    const ing = new Ingest({ source: src, sink, handler, window: { maxItems: 64, maxWaitMs: 1, maxInFlight: 2 } });
    await ing.reading;
    const l = await ing.stop();
    assert.ok(l.balanced);
    assert.equal(l.committed, 496);
    assert.equal(l.deadLettered, 4);
    const entries = await store.list();
    assert.deepEqual(entries.map((e) => e.id).sort(), [...poison].sort());
    for (const e of entries) {
      assert.equal(e.errorClass, 'item');
      assert.equal(e.code, 'SLUICE_SINK_ITEM');
      assert.equal(e.sinkCode, 'POISON');
      assert.equal(e.source, src.name);
      assert.equal(e.offset, Number(e.id.slice(1)));
      assert.equal(JSON.parse(Buffer.from(e.data, 'base64').toString()).id, e.id);
      assert.ok(e.attempts >= 2 && e.firstFailureAt <= e.deadLetteredAt);
    }
    assert.equal(src.committed(), 500);
    await src.close();
    await store.close();
    assert.equal(JSON.parse(await readFile(`${path}.committed`, 'utf8')).offset, 500);
  });
});

test('embedded log: a failed offset persist is caught, counted, reported and surfaced by flushAcks (no unhandled rejection); the next persist recovers', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    const w = await EmbeddedLogWriter.open(path);
    await w.append([0, 1, 2].map(rec));
    await w.close();
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      // The committed file lives in a directory that does not exist yet: the persist fails (ENOENT).
      const committedPath = join(dir, 'later', 'log.committed');
      const reported: unknown[] = [];
      const src = await EmbeddedLogSource.open<unknown>({ path, committedPath, stopAtEnd: true, onError: (e) => void reported.push(e) });
      const got: any[] = [];
      await src.run({ offer: (e) => (got.push(e), 'accepted'), put: async () => 'accepted' });
      src.ack(got);
      await assert.rejects(src.flushAcks(), (e: any) => e.code === 'SLUICE_SOURCE_UNAVAILABLE' && /committed offset 3/.test(e.message));
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(unhandled.length, 0, 'no unhandled rejection');
      assert.ok(reported.length >= 1);
      assert.ok((src.stats().persistFailures ?? 0) >= 1);
      assert.equal(src.persistedOffset(), 0);
      // The directory appears: the next flush persists the offset and clears the error.
      const { mkdir } = await import('node:fs/promises');
      await mkdir(join(dir, 'later'));
      await src.flushAcks();
      assert.equal(src.persistedOffset(), 3);
      assert.equal((await readCommitted(committedPath)).offset, 3);
      await src.close();
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
