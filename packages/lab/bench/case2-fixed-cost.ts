/**
 * Case 2 — one-connection fixed-cost sink: FileSink (one durable write per batch: O_DSYNC by default),
 * one batch in flight, the same 512-item / 5 ms window and the same items as case 1.
 *
 * Contenders: sluice, hand, rxjs, otel, bottleneck, and two references measured in their
 * own process like the others:
 * - limit:      maxItems / fixedCost, fixedCost = calibrateSink()'s median single-item
 *               durable write (the issue's named baseline);
 * - sink-alone: the same FileSink fed ready-made 512-item batches back to back, no batcher
 *               (what the sink itself does when every batch is full: bytes cost something too).
 * - sink-alone-fresh (information): the same, but each batch is 512 new items made while the
 *               previous batch is written: what making the items costs the sink alone.
 * - sink-alone-busy<N> (information): the sink alone, spinning N µs on the event loop right
 *               after it issues each write (the write still in the pool): what N µs of any
 *               process's own work per batch costs the sink when the machine has 2 cores and
 *               the kernel's write and flush need one of them too.
 *
 * The FileSink runs in its default `sync: 'dsync'` mode (one O_DSYNC write per batch). Any
 * contender name ending in `-fdatasync` (run.mjs runs `sluice-fdatasync` and
 * `sink-alone-fdatasync`, as information) is the same contender on `sync: 'fdatasync'` (a
 * write, then an fdatasync): the two durability mechanisms side by side in the same run.
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

type SyncMode = 'dsync' | 'fdatasync';

async function fileSink(tag: string, sync: SyncMode = 'dsync'): Promise<FileSink<number>> {
  return new FileSink<number>({ path: tmpFile(tag), sync }).open();
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

function spin(us: number): void {
  const t = performance.now();
  while ((performance.now() - t) * 1000 < us);
}

async function sinkAlone(contender: string, sync: SyncMode, fresh: boolean, busyUs: number, durationMs: number, warmupMs: number): Promise<void> {
  const reused = Array.from({ length: MAX_ITEMS }, (_, i) => new BenchItem(i, 0));
  let n = 0;
  const make = (): BenchItem[] => {
    if (!fresh) return reused;
    const stamp = performance.now();
    const b = new Array<BenchItem>(MAX_ITEMS);
    for (let k = 0; k < MAX_ITEMS; k++) b[k] = new BenchItem(n++, stamp);
    return b;
  };
  const run = async (ms: number) => {
    const sink = await fileSink('alone', sync);
    const t0 = performance.now();
    let items = 0;
    let next = make();
    while (performance.now() - t0 < ms) {
      // The next batch is made while this one is written: the best any batcher can do.
      const w = sink.write(next);
      items += next.length;
      next = make();
      if (busyUs > 0) spin(busyUs);
      await w;
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
  emit({ case: 'fixed-cost', contender, items, ...r, peakRssMb: peakRssMb(), baseRssMb, latencyMs: null, lost: 0, extra: { sync, fresh, busyUs } });
}

main(async () => {
  const a = parseArgs();
  const contender = a.contender ?? 'sluice';
  const sync: SyncMode = contender.endsWith('-fdatasync') ? 'fdatasync' : 'dsync';
  const base = contender.replace(/-fdatasync$/, '');
  const durationMs = num(a, 'duration', 2000);
  const warmupMs = num(a, 'warmup', 500);
  try {
    if (contender === 'limit') return await limit(num(a, 'samples', 300));
    const busy = /^sink-alone-busy(\d+)$/.exec(base);
    if (base === 'sink-alone' || base === 'sink-alone-fresh' || busy) {
      return await sinkAlone(contender, sync, base === 'sink-alone-fresh', busy ? Number(busy[1]) : 0, durationMs, warmupMs);
    }
    const r = await throughputRun({
      caseName: 'fixed-cost',
      contender: base,
      durationMs,
      warmupMs,
      sink: () => fileSink(contender, sync),
      // Peers never push back: without a cap a producer faster than fdatasync would grow
      // their backlog until the process dies. 16,384 outstanding items is more room than
      // Sluice's own bound (10,000 queued + 512 in flight), so Sluice gets no help from it.
      cap: 16_384,
      otelMaxQueueSize: 16_384 + 1024,
      slice: a.slice ? num(a, 'slice', 1000) : undefined,
    });
    emit({ ...r, contender, extra: { ...r.extra, sync } });
  } finally {
    await cleanTmp();
  }
});
