/**
 * Case 6 — log to table: what `sluice run` does from JetStream into PostgreSQL (JetStreamSource →
 * Ingest (Pipeline + split-and-retry into a dead-letter queue) → PostgresSink, default mode,
 * acks after commit), against what the log alone gives:
 * - sluice:  the stream pre-filled with `--rows` records (RecordFactory's, published with their
 *            ids), then timed from the consumer's start until every record is committed;
 * - consume: the same stream read by the same JetStreamSource (pull consume, decode, envelope)
 *            into a target that acknowledges each message at once: no pipeline, no sink.
 * Raw COPY alone (case 3's `copy` / `copy-binary`, same record factory) is the other half of
 * the limit; bench/run.mjs measures it in the same run. The window is case 3's bulk window.
 *
 *   node --expose-gc dist/bench/case6-jetstream-pg.js --contender sluice --rows 100000
 *   node dist/bench/case6-jetstream-pg.js --probe
 */
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { PostgresSink } from 'sluice';
import { RecordFactory } from '../src/records/records.js';
import { JetStreamProducer, JetStreamSource } from 'sluice';
import { ensureJetStream } from 'sluice';
import { connectNats } from 'sluice';
import { Ingest } from 'sluice';
import { MemoryDeadLetters, splitAndRetry } from 'sluice';
import type { Envelope } from 'sluice';
import type { OfferResult } from 'sluice';
import { emit, main, measure, num, parseArgs, peakRssMb, rssMb, settle } from './lib/harness.js';

const PG_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
/** The bulk window case 6 was measured with (case 3's before its window sweep moved it to 2,048 items: docs/bench.md). */
const MAX_ITEMS = 4096;
const IN_FLIGHT = 2;

async function probe(): Promise<void> {
  try {
    const nc = await connectNats(NATS_URL);
    await nc.close();
    const s = new PostgresSink({ connectionString: PG_URL, table: `bench_probe_${process.pid}`, connectTimeoutMs: 2_000 });
    try {
      await s.open();
      await s.dropTable();
    } finally {
      await s.close();
    }
    process.stdout.write(JSON.stringify({ reachable: true }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ reachable: false, reason: (e as Error).message }) + '\n');
  }
}

async function fill(nc: NatsConnection, stream: string, rows: number): Promise<void> {
  const producer = new JetStreamProducer(nc, stream);
  const f = new RecordFactory({ idPrefix: 'r' });
  for (let i = 0; i < rows; i += 1000) {
    const chunk = [];
    for (let k = i; k < Math.min(rows, i + 1000); k++) {
      const e = f.make(k, 0);
      chunk.push({ id: e.id!, data: e.raw!, ts: Date.now() });
    }
    await producer.publish(chunk);
  }
}

/** Waits until `done()` holds, polling (the run's own progress is read, not driven). */
async function until(done: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = performance.now();
  while (!done()) {
    if (performance.now() - t0 > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

main(async () => {
  const a = parseArgs();
  if (a.probe) return probe();
  const contender = a.contender ?? 'sluice';
  if (contender !== 'sluice' && contender !== 'consume') throw new Error(`unknown contender ${contender}: sluice or consume`);
  const rows = num(a, 'rows', 100_000);
  const tag = `${process.pid}_${randomBytes(3).toString('hex')}`;
  const stream = `BENCH_C6_${tag.toUpperCase()}`;
  const nc = await connectNats(NATS_URL);
  const jsm = await jetstreamManager(nc);
  const sink = contender === 'sluice' ? new PostgresSink({ connectionString: PG_URL, table: `bench_c6_${tag}`, maxConnections: IN_FLIGHT }) : null;
  try {
    await ensureJetStream(jsm, { stream, consumer: 'bench', maxAckPending: 50_000 });
    await fill(nc, stream, rows);
    await sink?.open();
    const source = await JetStreamSource.open<unknown>({ nc, stream, consumer: 'bench', ackWaitMs: 120_000 });
    settle();
    const baseRssMb = rssMb();
    const m = measure();
    const startUs = Number(process.hrtime.bigint() / 1000n);
    m.start();
    let extra: Record<string, unknown> = {};
    let done = 0;
    if (sink) {
      const dlq = new MemoryDeadLetters<unknown>();
      const handler = splitAndRetry<unknown>(sink, { dlq });
      const ingest = new Ingest<unknown>({ source, sink, handler, name: 'bench', window: { maxItems: MAX_ITEMS, maxInFlight: IN_FLIGHT }, queue: { maxItems: 2 * MAX_ITEMS } });
      await until(() => ingest.stats().ledger.committed + ingest.stats().ledger.deadLettered >= rows, 170_000);
      const ledger = await ingest.stop();
      done = ledger.committed;
      const stored = await sink.countRows();
      if (stored !== rows) throw new Error(`sluice: ${stored} rows stored, ${rows} expected`);
      extra = { ledger, stored, mode: sink.mode, paths: sink.writesByPath(), maxItems: MAX_ITEMS, maxInFlight: IN_FLIGHT, deadLettered: dlq.letters.length };
    } else {
      // No pipeline: every envelope acknowledged as soon as it is offered.
      const target = {
        offer(env: Envelope<unknown>): OfferResult {
          source.ack([env]);
          done++;
          return 'accepted';
        },
        put(env: Envelope<unknown>): Promise<OfferResult> {
          return Promise.resolve(this.offer(env));
        },
      };
      const reading = source.run(target);
      await until(() => done >= rows, 170_000);
      source.stop();
      await reading.catch(() => {});
      await source.flushAcks();
    }
    const r = m.stop(done);
    const endUs = Number(process.hrtime.bigint() / 1000n);
    await source.close();
    emit({ case: 'log-to-table', contender, items: done, ...r, peakRssMb: peakRssMb(), baseRssMb, latencyMs: null, lost: rows - done, extra: { ...extra, windowUs: [startUs, endUs] } });
  } finally {
    await jsm.streams.delete(stream).catch(() => {});
    if (sink) {
      await sink.dropTable().catch(() => {});
      await sink.close();
    }
    await nc.close();
  }
});
