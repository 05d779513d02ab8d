import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireNats, uniqueName } from '../helpers/services.js';
import { connectNats } from '../../packages/sluice/src/sources/nats.js';
import { JetStreamProducer, JetStreamSource } from '../../packages/sluice/src/sources/jetstream.js';
import { IdempotentMemorySink } from '../../packages/sluice/src/sinks/doubles.js';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
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

test('JetStream source: messages held longer than the ack wait are claimed in progress, not redelivered', async (t) => {
  const natsUrl = await requireNats(t);
  if (!natsUrl) return;
  const stream = uniqueName('jssrc').toUpperCase();
  const nc = await connectNats(natsUrl);
  let src: JetStreamSource<unknown> | null = null;
  try {
    // 40 records, 5 per write, 300 ms a write: the last ones wait ≈ 2.4 s in the queue, twice
    // the 1.2 s ack wait. Without in-progress acks the server redelivers them while they wait.
    const ackWaitMs = 1_200;
    const N = 40;
    src = await JetStreamSource.open<unknown>({ nc, stream, consumer: 'held', ackWaitMs });
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
  } finally {
    if (src) {
      await src.close();
      await src.destroy();
    }
    await nc.close();
  }
});
