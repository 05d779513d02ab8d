/**
 * Case 2 — one-connection fixed-cost sink: FileSink (one write + one fdatasync per batch),
 * one batch in flight, the same 512-item / 5 ms window and the same items as case 1.
 *
 * Contenders: sluice, hand, rxjs, otel, bottleneck, and two references measured in their
 * own process like the others:
 * - limit:      maxItems / fixedCost, fixedCost = calibrateSink()'s median single-item
 *               write + fdatasync (the issue's named baseline);
 * - sink-alone: the same FileSink fed ready-made 512-item batches back to back, no batcher
 *               (what the sink itself does when every batch is full: bytes cost something too).
 *
 *   node --expose-gc dist/bench/case2-fixed-cost.js --contender sluice --duration 2000 --warmup 500
 */
import { FileSink } from 'sluice';
import { calibrateSink } from '../src/calibrate.js';
import { MAX_ITEMS } from './lib/contenders.js';
import { emit, main, measure, num, parseArgs, peakRssMb, rssMb, settle } from './lib/harness.js';
import { BenchItem } from './lib/item.js';
import { cleanTmp, tmpFile } from './lib/tmp.js';
import { throughputRun } from './lib/throughput.js';

async function fileSink(tag: string): Promise<FileSink<number>> {
  return new FileSink<number>({ path: tmpFile(tag) }).open();
}

async function limit(samples: number): Promise<void> {
  const sink = await fileSink('limit');
  const cal = await calibrateSink(sink, (i) => new BenchItem(i, 0), samples);
  await sink.close();
  emit({
    case: 'fixed-cost',
    contender: 'limit',
    items: 0,
    seconds: 0,
    itemsPerSec: (MAX_ITEMS / cal.fixedCostMs) * 1000,
    cpuUsPerItem: 0,
    peakRssMb: peakRssMb(),
    baseRssMb: rssMb(),
    latencyMs: null,
    lost: 0,
    extra: { fixedCostMs: cal.fixedCostMs, p90Ms: cal.p90Ms, samples: cal.samples, maxItems: MAX_ITEMS },
  });
}

async function sinkAlone(durationMs: number, warmupMs: number): Promise<void> {
  const batch = Array.from({ length: MAX_ITEMS }, (_, i) => new BenchItem(i, 0));
  const run = async (ms: number) => {
    const sink = await fileSink('alone');
    const t0 = performance.now();
    let items = 0;
    while (performance.now() - t0 < ms) {
      await sink.write(batch);
      items += batch.length;
    }
    await sink.close();
    return items;
  };
  if (warmupMs > 0) await run(warmupMs);
  settle();
  const baseRssMb = rssMb();
  const m = measure();
  m.start();
  const items = await run(durationMs);
  const r = m.stop(items);
  emit({ case: 'fixed-cost', contender: 'sink-alone', items, ...r, peakRssMb: peakRssMb(), baseRssMb, latencyMs: null, lost: 0, extra: {} });
}

main(async () => {
  const a = parseArgs();
  const contender = a.contender ?? 'sluice';
  const durationMs = num(a, 'duration', 2000);
  const warmupMs = num(a, 'warmup', 500);
  try {
    if (contender === 'limit') return await limit(num(a, 'samples', 300));
    if (contender === 'sink-alone') return await sinkAlone(durationMs, warmupMs);
    const r = await throughputRun({
      caseName: 'fixed-cost',
      contender,
      durationMs,
      warmupMs,
      sink: () => fileSink(contender),
      // Peers never push back: without a cap a producer faster than fdatasync would grow
      // their backlog until the process dies. 16,384 outstanding items is more room than
      // Sluice's own bound (10,000 queued + 512 in flight), so Sluice gets no help from it.
      cap: 16_384,
      otelMaxQueueSize: 16_384 + 1024,
      slice: a.slice ? num(a, 'slice', 1000) : undefined,
    });
    emit(r);
  } finally {
    await cleanTmp();
  }
});
