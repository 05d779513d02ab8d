import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireNats, uniqueName } from '../helpers/services.js';
import { connectNats } from '../../packages/sluice/src/sources/nats.js';
import { JetStreamProducer, JetStreamSource } from '../../packages/sluice/src/sources/jetstream.js';
import { IdempotentMemorySink } from '../../packages/sluice/src/sinks/doubles.js';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Envelope } from '../../packages/sluice/src/core/types.js';

/** Commits by id, slowly: each write takes `delayMs`, so records wait in the queue. */
class SlowIdempotentSink extends IdempotentMemorySink<unknown> {
  constructor(private readonly delayMs: number) {
    super();
  }
  override async write(batch: readonly Envelope<unknown>[]): Promise<void> {
    await new Promise((r) => setTimeout(r, this.delayMs));
    await super.write(batch);
  }
}

/**
 * A source on a stream of its own (`prefix` + a unique suffix) and a connection that gives up
 * at once when NATS is gone; both closed, and the stream deleted, whatever the body does.
 */
async function withSource(
  t: import('node:test').TestContext,
  prefix: string,
  opts: Omit<Parameters<typeof JetStreamSource.open<unknown>>[0], 'nc' | 'stream'>,
  body: (src: JetStreamSource<unknown>, nc: NatsConnection, stream: string) => Promise<void>,
): Promise<void> {
  const natsUrl = await requireNats(t);
  if (!natsUrl) return;
  const stream = uniqueName(prefix).toUpperCase();
  const nc = await connectNats(natsUrl, 3_000, null);
  let src: JetStreamSource<unknown> | null = null;
  try {
    src = await JetStreamSource.open<unknown>({ nc, stream, ...opts });
    await body(src, nc, stream);
  } finally {
    if (src) {
      await src.close();
      await src.destroy();
    }
    await nc.close();
  }
}

test('JetStream source: messages held longer than the ack wait are claimed in progress, not redelivered', async (t) => {
  // 40 records, 5 per write, 300 ms a write: the last ones wait ≈ 2.4 s in the queue, twice
  // the 1.2 s ack wait. Without in-progress acks the server redelivers them while they wait.
  const ackWaitMs = 1_200;
  const N = 40;
  await withSource(t, 'jssrc', { consumer: 'held', ackWaitMs }, async (src, nc, stream) => {
    await new JetStreamProducer(nc, stream).publish(Array.from({ length: N }, (_, i) => ({ id: `r${i}`, data: Buffer.from(JSON.stringify({ i })) })));
    const sink = new SlowIdempotentSink(300);
    const ingest = new Ingest<unknown>({ source: src, sink, window: { maxItems: 5, maxWaitMs: 1, maxInFlight: 1 } });
    const t0 = Date.now();
    while (sink.byId.size < N) {
      if (Date.now() - t0 > 30_000) throw new Error(`timed out: ${sink.byId.size} of ${N} committed`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const elapsed = Date.now() - t0;
    // Let one more ack wait pass: a message the server considered abandoned would come back now.
    await new Promise((r) => setTimeout(r, ackWaitMs + 500));
    const ledger = await ingest.stop();
    const st = src.stats();
    assert.ok(elapsed > ackWaitMs, `the run must outlast the ack wait to test anything (took ${elapsed} ms)`);
    assert.ok(st.inProgressSignals > 0, 'in-progress acks were sent');
    assert.equal(st.redelivered, 0, 'no message redelivered');
    assert.equal(sink.duplicatesAbsorbed, 0, 'no record written twice');
    assert.equal(sink.calls, N / 5);
    assert.ok(ledger.balanced, JSON.stringify(ledger));
    assert.equal(ledger.accepted, N);
    assert.equal(ledger.committed, N);
    assert.equal(st.held, 0, 'nothing held after the drain');
    assert.equal(await src.lag(), 0);
  });
});

test('JetStream source: an undecodable message is counted and dead-lettered with its reason (never a silent null), then acked', async (t) => {
  const { MemoryDeadLetters } = await import('../../packages/sluice/src/core/reliability.js');
  const dlq = new MemoryDeadLetters<unknown>();
  await withSource(t, 'jsbad', { consumer: 'c', deadLetters: dlq }, async (src, nc, stream) => {
    await new JetStreamProducer(nc, stream).publish([
      { id: 'good1', data: Buffer.from('{"a":1}') },
      { id: 'bad', data: Buffer.from('{not json') },
      { id: 'good2', data: Buffer.from('{"a":2}') },
    ]);
    const offered: Envelope<unknown>[] = [];
    const s = src;
    const running = s.run({ offer: (e) => (offered.push(e), 'accepted'), put: async () => 'accepted' });
    const t0 = Date.now();
    while (offered.length < 2 || dlq.letters.length < 1) {
      if (Date.now() - t0 > 10_000) throw new Error(`timed out: ${offered.length} offered, ${dlq.letters.length} dead-lettered`);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(offered.map((e) => e.id), ['good1', 'good2'], 'the undecodable one is never offered');
    assert.ok(offered.every((e) => e.value !== null));
    assert.equal(dlq.letters[0].env.id, 'bad');
    assert.equal(dlq.letters[0].env.raw?.toString(), '{not json');
    assert.equal((dlq.letters[0].error as { sinkCode?: string }).sinkCode, 'DECODE');
    assert.match(String((dlq.letters[0].error as Error).message), /undecodable message bad/);
    assert.equal(s.stats().undecodable, 1);
    assert.equal(s.stats().undecodableDeadLettered, 1);
    s.ack(offered);
    await s.flushAcks();
    const t1 = Date.now();
    while ((await s.lag()) !== 0) {
      if (Date.now() - t1 > 5_000) throw new Error('not all acked');
      await new Promise((r) => setTimeout(r, 50));
    }
    s.stop();
    await running;
  });
});

test('JetStream source: a redelivery of a message still held is absorbed (counted apart, not accepted twice) and acked with it', async (t) => {
  const ackWaitMs = 800;
  await withSource(t, 'jsredeliv', { consumer: 'c', ackWaitMs }, async (src, nc, stream) => {
    await new JetStreamProducer(nc, stream).publish([0, 1, 2].map((i) => ({ id: `r${i}`, data: Buffer.from(JSON.stringify({ i })) })));
    const offered: Envelope<unknown>[] = [];
    let noted = 0;
    const s = src;
    const running = s.run({ offer: (e) => (offered.push(e), 'accepted'), put: async () => 'accepted', noteRedelivered: (n) => void (noted += n) });
    while (offered.length < 3) await new Promise((r) => setTimeout(r, 20));
    // Stop claiming the held messages (as if in-progress acks were lost in an outage): the server redelivers them.
    (s as unknown as { stopHeartbeat(): void }).stopHeartbeat();
    const t0 = Date.now();
    while (s.stats().redeliveriesAbsorbed < 3) {
      if (Date.now() - t0 > 10_000) throw new Error(`timed out: ${JSON.stringify(s.stats())}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(offered.length, 3, 'each record offered once');
    assert.equal(noted, s.stats().redeliveriesAbsorbed, 'the ledger hears of each redelivery');
    s.ack(offered);
    await s.flushAcks();
    await new Promise((r) => setTimeout(r, ackWaitMs + 400));
    assert.equal(offered.length, 3, 'acking the first delivery settled the redelivered ones too');
    assert.equal(await s.lag(), 0);
    s.stop();
    await running;
  });
});

test('JetStream source: a record delivered again as a first delivery (a broker that lost its consumer state, a record published twice) is not accepted twice', async (t) => {
  await withSource(t, 'jsagain', { consumer: 'c' }, async (src, nc, stream) => {
    const producer = new JetStreamProducer(nc, stream);
    const rec = (id: string) => ({ id, data: Buffer.from(JSON.stringify({ id })) });
    const offered: Envelope<unknown>[] = [];
    let noted = 0;
    const s = src;
    const running = s.run({ offer: (e) => (offered.push(e), 'accepted'), put: async () => 'accepted', noteRedelivered: (n) => void (noted += n) });
    const until = async (what: string, ok: () => boolean) => {
      for (const t0 = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 20))) {
        if (Date.now() - t0 > 10_000) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s.stats())}`);
      }
    };
    await producer.publish([rec('a'), rec('b')]);
    await until('a, b', () => offered.length === 2);
    s.ack(offered);
    // Each a new stream sequence and a first delivery (redelivered: false): only the id says it
    // is the same record. 'a' was acked: acked again at once. 'c' is held: it rides along.
    await producer.publish([rec('a'), rec('c')]);
    await until('c', () => offered.length === 3);
    await producer.publish([rec('c')]);
    await until('both absorbed', () => s.stats().redeliveriesAbsorbed === 2);
    assert.deepEqual(offered.map((e) => e.id), ['a', 'b', 'c'], 'each record offered once');
    assert.equal(s.stats().redelivered, 0, 'the server marked none of them as a redelivery');
    assert.equal(noted, 2, 'the ledger hears of both');
    s.ack(offered.slice(2));
    await s.flushAcks();
    await until('all acked', () => s.stats().acked === 3);
    assert.equal(await s.lag(), 0, 'every stream message acked, the second copies too');
    s.stop();
    await running;
  });
});
