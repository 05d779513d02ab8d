/**
 * One closed-loop throughput run (cases 1 and 2): warm the contender's code up on a
 * throw-away instance, collect garbage, then push as fast as the contender accepts for
 * `durationMs`, drain, and measure items acked, wall time, CPU and RSS.
 */
import { performance } from 'node:perf_hooks';
import type { Sink } from 'sluice';
import { AckSink, closedLoop, measure, peakRssMb, rssMb, settle, type RunResult } from './harness.js';
import { makeContender } from './contenders.js';
import { BenchItem } from './item.js';

export interface ThroughputOptions {
  caseName: string;
  contender: string;
  durationMs: number;
  warmupMs: number;
  /** Builds a fresh real sink (null: the no-op sink). */
  sink: () => Promise<Sink<unknown> | null>;
  cap: number;
  otelMaxQueueSize: number;
  /** Producer slice (items between two yields). @default 1000 */
  slice?: number;
}

const make = (i: number, stamp: number) => new BenchItem(i, stamp);

export async function throughputRun(o: ThroughputOptions): Promise<RunResult> {
  // Sluice records latency in its own PipelineMetrics; the peers' is recorded by the AckSink
  // the same way (one HDR record per item at ack); `hand-bare` records nothing.
  const recordLatency = o.contender !== 'sluice' && o.contender !== 'hand-bare';
  const copts = { otelMaxQueueSize: o.otelMaxQueueSize };
  if (o.warmupMs > 0) {
    const wsink = new AckSink(await o.sink(), { latency: recordLatency });
    const w = makeContender(o.contender, wsink, copts);
    await closedLoop(w, wsink, { make, durationMs: o.warmupMs, cap: o.cap, slice: o.slice });
    await w.close();
    await wsink.close();
  }
  const ack = new AckSink(await o.sink(), { latency: recordLatency });
  const c = makeContender(o.contender, ack, copts);
  settle();
  const baseRssMb = rssMb();
  const m = measure();
  // Monotonic µs, the clock V8's CPU profiles use: lets run.mjs keep only the measured window.
  const startUs = Number(process.hrtime.bigint() / 1000n);
  m.start();
  const run = await closedLoop(c, ack, { make, durationMs: o.durationMs, cap: o.cap, slice: o.slice });
  await c.close();
  const r = m.stop(ack.acked);
  const endUs = Number(process.hrtime.bigint() / 1000n);
  const peak = peakRssMb();
  await ack.close();
  const h = c.latency() ?? ack.latency;
  return {
    case: o.caseName,
    contender: o.contender,
    items: ack.acked,
    ...r,
    peakRssMb: peak,
    baseRssMb,
    latencyMs: h ? h.summary() : null,
    lost: run.offered - ack.acked,
    extra: { ...c.extra(), offered: run.offered, batches: ack.batches, drainMs: Math.round(performance.now() - run.producedMs), windowUs: [startUs, endUs] },
  };
}
