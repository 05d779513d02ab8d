/**
 * Case 4 — overload: an open-loop producer (constant arrivals, each item stamped with its
 * intended time) offers twice what the sink can take, for a fixed period, then the
 * contender drains. Sluice keeps its bounded `block` queue: the producer waits, and what it
 * could not send by the deadline is counted (`notSent`), never hidden. The queue holds four
 * windows (2,048 items, ≈ 20 ms of the sink's capacity), the bound one configures for
 * overload: a deeper queue only adds latency when the sink is the bottleneck. `sluice-10k`
 * runs the 10,000-item queue of cases 1–3 beside it: measured in one run, RSS
 * growth 19.7–21.4 MB and p99 enqueue→ack 126–132 ms against 7.2–11.7 MB and 30–31 ms with
 * 2,048 (queued items that live ≈ 100 ms survive scavenges and are promoted, and old-space
 * garbage waits for a major GC; what either holds after GC: 1.9 and 0.6–0.7 MB).
 * The peers run as they come: unbounded (hand, RxJS, Bottleneck) or dropping past their
 * queue (OpenTelemetry's default maxQueueSize 2,048).
 *
 * The sink is SlowSink: each write costs `--fixed-cost` ms paid by a timer (no CPU), like
 * a round-trip to a remote database, calibrated in the same run (`--calibrate`); capacity
 * = 512 / fixedCost. A sink this slow keeps the unbounded peers' backlog to a few hundred
 * thousand items on a shared machine while still showing how it grows.
 *
 *   node dist/bench/case4-overload.js --calibrate --fixed-cost 5
 *   node --expose-gc dist/bench/case4-overload.js --contender sluice --rate 200000 --duration 4000 --fixed-cost 5
 */
import { SlowSink } from 'sluice/testing';
import { calibrateSink } from '../src/calibrate.js';
import { constantArrivals, runOpenLoop, type OfferTarget } from 'sluice/testing';
import { MAX_ITEMS, SLUICE_QUEUE_ITEMS, makeContender } from './lib/contenders.js';
import { AckSink, emit, main, measure, num, parseArgs, peakRssMb, rssMb, settle } from './lib/harness.js';
import { BenchItem } from './lib/item.js';

/** Sluice's queue bound in this case (items): four windows. */
export const OVERLOAD_QUEUE_ITEMS = 4 * MAX_ITEMS;

main(async () => {
  const a = parseArgs();
  const fixedCostMs = num(a, 'fixed-cost', 5);
  if (a.calibrate) {
    const cal = await calibrateSink(new SlowSink<number>({ fixedCostMs }), (i) => new BenchItem(i, 0), num(a, 'samples', 60), 5);
    const capacityPerSec = Math.round((MAX_ITEMS / cal.fixedCostMs) * 1000);
    process.stdout.write(JSON.stringify({ fixedCostMs: cal.fixedCostMs, p90Ms: cal.p90Ms, capacityPerSec }) + '\n');
    return;
  }
  const name = a.contender ?? 'sluice';
  const contender = name === 'sluice-10k' ? 'sluice' : name;
  const queueItems = name === 'sluice-10k' ? SLUICE_QUEUE_ITEMS : num(a, 'queue-items', OVERLOAD_QUEUE_ITEMS);
  const rate = num(a, 'rate', 200_000);
  const durationMs = num(a, 'duration', 4000);
  const ack = new AckSink(new SlowSink<number>({ fixedCostMs }), { latency: true, enqueueLatency: true });
  const c = makeContender<BenchItem>(contender, ack, { stampEnqueue: true, sluiceQueueItems: queueItems });
  const target: OfferTarget<number> = {
    offer: (env) => (c.offer(env as BenchItem) ? 'accepted' : 'full'),
    put: (env) => c.wait(env as BenchItem).then(() => 'accepted' as const),
  };
  settle();
  const baseRssMb = rssMb();
  const baseHeap = process.memoryUsage().heapUsed;
  const m = measure();
  m.start();
  const run = await runOpenLoop<number>({
    schedule: constantArrivals(rate),
    durationMs,
    make: (i, t) => new BenchItem(i, t),
    target,
  });
  // What the contender really holds when the producer stops: heap after a full GC, over the
  // baseline (peak RSS also counts garbage V8 has not collected yet). One GC pause, same for all.
  settle();
  const heldMb = (process.memoryUsage().heapUsed - baseHeap) / 2 ** 20;
  const producedAt = performance.now();
  await c.close();
  const t = m.stop(ack.acked);
  emit({
    case: 'overload',
    contender: name,
    items: ack.acked,
    ...t,
    peakRssMb: peakRssMb(),
    baseRssMb,
    latencyMs: ack.latency!.summary(),
    lost: run.accepted - ack.acked,
    extra: {
      enqueueLatencyMs: ack.enqueueLatency!.summary(),
      heldMb: Math.round(heldMb * 10) / 10,
      offeredRate: rate,
      fixedCostMs,
      offered: run.offered,
      accepted: run.accepted,
      notSent: run.notSent,
      blockedMs: Math.round(run.blockedMs),
      maxEmitLagMs: Math.round(run.maxEmitLagMs),
      drainMs: Math.round(performance.now() - producedAt),
      bound: contender === 'sluice' ? { queueItems, inFlightItems: MAX_ITEMS } : 'none',
      ...c.extra(),
    },
  });
});
