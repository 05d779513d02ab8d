import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { requireNats, uniqueName } from '../helpers/services.js';
import { JetStreamPublishSink } from '../../packages/sluice/src/sinks/jetstream-publish.js';
import { createCodec } from '../../packages/sluice/src/codec/compress.js';
import { ndjsonBatch } from '../../packages/sluice/src/sinks/serialize.js';
import { RecordFactory } from '../../packages/lab/src/records/records.js';
import { SinkError } from '../../packages/sluice/src/core/errors.js';

const factory = new RecordFactory({ seed: 13 });
const batchOf = (start: number, n: number) => Array.from({ length: n }, (_, i) => factory.make(start + i, 0));

async function withStream(url: string, fn: (nc: NatsConnection, jsm: JetStreamManager, stream: string, subject: string) => Promise<void>) {
  const nc = await connect({ servers: url });
  const jsm = await jetstreamManager(nc);
  const stream = uniqueName('jspub');
  const subject = `${stream}.in`;
  await jsm.streams.add({ name: stream, subjects: [subject], max_bytes: 64 * 1024 * 1024 });
  try {
    await fn(nc, jsm, stream, subject);
  } finally {
    await jsm.streams.delete(stream).catch(() => undefined);
    await nc.close();
  }
}

test('batch mode: one message per batch, content = the NDJSON batch, gzip-compressed with its header', async (t) => {
  const url = await requireNats(t);
  if (!url) return;
  await withStream(url, async (nc, jsm, stream, subject) => {
    const sink = new JetStreamPublishSink({ nc, subject, codec: 'gzip' });
    const batches = [batchOf(0, 1), batchOf(1, 300), batchOf(301, 17)];
    for (const b of batches) await sink.write(b);
    assert.equal(sink.fixedCostOps(), 3);
    assert.equal(sink.stats().acks, 3);
    assert.equal(sink.stats().items, 318);
    const info = await jsm.streams.info(stream);
    assert.equal(info.state.messages, 3);
    const gz = createCodec('gzip');
    for (let i = 0; i < batches.length; i++) {
      const m = await jsm.streams.getMessage(stream, { seq: info.state.first_seq + i });
      assert.ok(m);
      assert.equal(m.header?.get('Content-Encoding'), 'gzip');
      assert.equal(m.header?.get('Sluice-Items'), String(batches[i].length));
      assert.deepEqual(await gz.decompress(Buffer.from(m.data)), ndjsonBatch(batches[i]));
    }
  });
});

test('batch mode: a retried batch is de-duplicated by its message id', async (t) => {
  const url = await requireNats(t);
  if (!url) return;
  await withStream(url, async (nc, jsm, stream, subject) => {
    const sink = new JetStreamPublishSink({ nc, subject });
    const b = batchOf(1000, 5);
    await sink.write(b);
    await sink.write(b);
    assert.equal(sink.fixedCostOps(), 2, 'two publishes really made');
    assert.equal((await jsm.streams.info(stream)).state.messages, 1, 'one stored');
  });
});

test('item mode: one message per item with async acks; retry stores nothing twice', async (t) => {
  const url = await requireNats(t);
  if (!url) return;
  await withStream(url, async (nc, jsm, stream, subject) => {
    const sink = new JetStreamPublishSink({ nc, subject, mode: 'item' });
    const b = batchOf(2000, 250);
    await sink.write(b);
    await sink.write(b.slice(0, 100));
    assert.equal(sink.fixedCostOps(), 350);
    assert.equal(sink.stats().acks, 350);
    const info = await jsm.streams.info(stream);
    assert.equal(info.state.messages, 250);
    const first = await jsm.streams.getMessage(stream, { seq: info.state.first_seq });
    assert.deepEqual(Buffer.from(first!.data), b[0].raw);
  });
});

test('a subject with no stream fails transient; a message over max_payload is item-level', async (t) => {
  const url = await requireNats(t);
  if (!url) return;
  const nc = await connect({ servers: url });
  try {
    const nowhere = new JetStreamPublishSink({ nc, subject: `${uniqueName('nostream')}.in`, timeoutMs: 1000 });
    await assert.rejects(nowhere.write(batchOf(0, 1)), (e) => e instanceof SinkError && e.failureClass === 'transient');
    const max = nc.info?.max_payload ?? 1024 * 1024;
    const big = new JetStreamPublishSink({ nc, subject: `${uniqueName('big')}.in`, timeoutMs: 1000 });
    const n = Math.ceil((max + 1) / 300);
    await assert.rejects(big.write(batchOf(0, n)), (e) => {
      assert.ok(e instanceof SinkError, String(e));
      assert.equal(e.failureClass, 'item', e.message);
      return true;
    });
  } finally {
    await nc.close();
  }
});

test('options are validated', async () => {
  const nc = {} as NatsConnection;
  assert.throws(() => new JetStreamPublishSink({ nc, subject: 'a.*' }), /subject/);
  assert.throws(() => new JetStreamPublishSink({ nc, subject: 'a', mode: 'item', codec: 'gzip' }), /codec/);
});
