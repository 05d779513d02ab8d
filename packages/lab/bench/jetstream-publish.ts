/**
 * JetStream publish sink: one message per batch versus one message per item (async acks),
 * same records, same batches of 500, on the NATS server at $NATS_URL (default
 * nats://127.0.0.1:4222). A stream of its own, deleted at the end. Prints the host first.
 *
 *   npx tsx bench/jetstream-publish.ts [--items 20000] [--batch 500]
 */
import os from 'node:os';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { randomBytes } from 'node:crypto';
import { JetStreamPublishSink } from 'sluice';

import type { CodecName, JetStreamPublishMode } from 'sluice';
import { RecordFactory } from '../src/records/records.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const items = arg('items', 20_000);
const batchSize = arg('batch', 500);
const url = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
console.log(`host: ${os.cpus().length} × ${os.cpus()[0]?.model}, node ${process.version}; nats ${url}; ${items} items, batches of ${batchSize}`);

const nc = await connect({ servers: url });
const jsm = await jetstreamManager(nc);
const stream = `sluice_bench_${randomBytes(4).toString('hex')}`;
await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], max_bytes: 512 * 1024 * 1024 });
const factory = new RecordFactory({ seed: 1 });
try {
  const variants: { mode: JetStreamPublishMode; codec: CodecName; batch: number; items: number }[] = [
    { mode: 'batch', codec: 'none', batch: 1, items: Math.min(items, 2000) },
    { mode: 'batch', codec: 'none', batch: batchSize, items },
    { mode: 'batch', codec: 'gzip', batch: batchSize, items },
    { mode: 'item', codec: 'none', batch: batchSize, items },
  ];
  for (const [k, v] of variants.entries()) {
    const sink = new JetStreamPublishSink({ nc, subject: `${stream}.v${k}`, mode: v.mode, codec: v.codec });
    const before = nc.stats();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < v.items; i += v.batch) await sink.write(Array.from({ length: Math.min(v.batch, v.items - i) }, (_, j) => factory.make(k * 1e7 + i + j, t0)));
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(c0);
    const after = nc.stats();
    const s = sink.stats();
    console.log(
      JSON.stringify({
        mode: v.mode,
        codec: v.codec,
        batch: v.batch,
        items: s.items,
        itemsPerSec: Math.round((s.items / ms) * 1000),
        msPerBatch: Math.round((ms / s.batches) * 1000) / 1000,
        publishes: s.publishes,
        clientCpuUsPerItem: Math.round(((cpu.user + cpu.system) / s.items) * 100) / 100,
        connectionOutBytesPerItem: Math.round(((after.outBytes - before.outBytes) / s.items) * 10) / 10,
      }),
    );
  }
} finally {
  await jsm.streams.delete(stream);
  await nc.close();
}
