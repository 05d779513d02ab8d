/**
 * Runs one pipeline configuration against one open-loop load and returns the figures every
 * experiment reports. The sink's own fixed-cost counter is read before and after, so the
 * operations counted are the calls really made during this run.
 */
import v8 from 'node:v8';
import { PerformanceObserver, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { runInNewContext } from 'node:vm';
import { Pipeline, type PipelineStats } from 'sluice';
import type { BatchHandler, Envelope, PipelineObserver, Sink } from 'sluice';
import type { QueueOptions, WindowOptions } from 'sluice';
import type { SpillStore } from 'sluice';
import { PipelineMetrics } from 'sluice';
import type { CountSummary, LatencySummary } from 'sluice';
import { runOpenLoop, type ArrivalSchedule, type OpenLoopResult } from 'sluice/testing';

export interface RunSpec<T> {
  sink: Sink<T>;
  window: Partial<WindowOptions>;
  queue?: Partial<QueueOptions>;
  handler?: BatchHandler<T>;
  spill?: SpillStore<T>;
  schedule: ArrivalSchedule;
  durationMs: number;
  make: (i: number, intendedAtMs: number) => Envelope<T>;
  sloMs: number;
  /** Nominal offered rate, reported as is. */
  offeredPerSec: number;
  observers?: PipelineObserver<T>[];
  /** Called every `sampleEveryMs` while the run lasts (producer and drain). */
  onSample?: (tMs: number, stats: PipelineStats, metrics: PipelineMetrics<T>) => void;
  sampleEveryMs?: number;
  onProgress?: (fraction: number) => void;
  /** Called with the pipeline once built (controllers attach here). */
  onPipeline?: (p: Pipeline<T>, m: PipelineMetrics<T>) => void;
}

export interface RunFigures {
  offeredPerSec: number;
  durationMs: number;
  /** From the first arrival to the end of the drain. */
  elapsedMs: number;
  offered: number;
  accepted: number;
  committed: number;
  dropped: number;
  droppedByReason: Record<string, number>;
  deadLettered: number;
  inFlight: number;
  rejected: number;
  notSent: number;
  producerBlockedMs: number;
  throughputPerSec: number;
  fixedCostOps: number;
  fixedCostOpsPerItem: number;
  fixedCostKind: string;
  latencyMs: LatencySummary;
  batchSize: CountSummary & { histogram: [number, number][] };
  batchWaitMs: LatencySummary;
  flushReasons: Record<string, number>;
  sloBreaches: number;
  ledgerBalanced: boolean;
  /** What stalled this process during the run: where a tail comes from (see RuntimeStalls). */
  stalls: RuntimeStalls;
}

/**
 * The stalls a latency tail is made of, measured during the run: garbage-collection pauses
 * (a `gc` PerformanceObserver), the event loop's worst delay (monitorEventLoopDelay, 10 ms
 * resolution), and the sink's slowest `write` (wall time of each call, fixed cost included).
 * A p99 a few ms over the wait plus the write is one of these; the lab reports them beside it.
 */
export interface RuntimeStalls {
  gcPauseMaxMs: number;
  gcPauseTotalMs: number;
  /** Mark-compact collections (the long ones). */
  majorGcs: number;
  eventLoopDelayMaxMs: number;
  /** Timed at the pipeline's default handler (`sink.write`); a run with its own `handler` reports 0. */
  sinkWriteMaxMs: number;
  /** Sink writes that took more than 5 ms. */
  sinkWritesOver5Ms: number;
}

const ELD_RESOLUTION_MS = 10;
const GC_MAJOR = 4; // perf_hooks.constants.NODE_PERFORMANCE_GC_MAJOR

/** Starts watching; `stop()` returns the figures. The sink returned times every `write`. */
function watchStalls<T>(sink: Sink<T>): { sink: Sink<T>; stop: () => RuntimeStalls } {
  const s: RuntimeStalls = { gcPauseMaxMs: 0, gcPauseTotalMs: 0, majorGcs: 0, eventLoopDelayMaxMs: 0, sinkWriteMaxMs: 0, sinkWritesOver5Ms: 0 };
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      s.gcPauseTotalMs += e.duration;
      if (e.duration > s.gcPauseMaxMs) s.gcPauseMaxMs = e.duration;
      if ((e as { detail?: { kind?: number } }).detail?.kind === GC_MAJOR) s.majorGcs++;
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
  eld.enable();
  const write = sink.write.bind(sink);
  const timed = async (batch: readonly Envelope<T>[]): Promise<void> => {
    const t0 = performance.now();
    try {
      await write(batch);
    } finally {
      const d = performance.now() - t0;
      if (d > s.sinkWriteMaxMs) s.sinkWriteMaxMs = d;
      if (d > 5) s.sinkWritesOver5Ms++;
    }
  };
  const proxied = new Proxy(sink, {
    get(target, prop) {
      if (prop === 'write') return timed;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return {
    sink: proxied,
    stop: () => {
      gc.disconnect();
      eld.disable();
      const r2 = (x: number) => Math.round(x * 100) / 100;
      return {
        gcPauseMaxMs: r2(s.gcPauseMaxMs),
        gcPauseTotalMs: r2(s.gcPauseTotalMs),
        majorGcs: s.majorGcs,
        // The histogram holds the interval between ticks (resolution included): the delay is what exceeds it.
        eventLoopDelayMaxMs: r2(Math.max(0, eld.max / 1e6 - ELD_RESOLUTION_MS)),
        sinkWriteMaxMs: r2(s.sinkWriteMaxMs),
        sinkWritesOver5Ms: s.sinkWritesOver5Ms,
      };
    },
  };
}

/**
 * A full garbage collection between runs, so that one run's garbage is not collected during
 * the next run and charged to its latency. Measured here with `lab batching --quick`: the
 * batched p99 at 0.5×C1 was 25.7–90.9 ms in three runs without it, 8.3 and 9.3 ms in two
 * runs with it. Nothing is collected *during* a run on purpose.
 */
let fullGc: (() => void) | null | undefined;
export function settleHeap(): void {
  if (fullGc === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      fullGc = runInNewContext('gc') as () => void;
    } catch {
      fullGc = null;
    }
  }
  fullGc?.();
}

export async function runPipeline<T>(spec: RunSpec<T>): Promise<RunFigures> {
  settleHeap();
  const metrics = new PipelineMetrics<T>(spec.sink, spec.sloMs);
  const opsBefore = spec.sink.fixedCostOps();
  const watch = watchStalls(spec.sink);
  let stalls: RuntimeStalls;
  const pipeline = new Pipeline<T>({
    sink: watch.sink,
    window: spec.window,
    queue: spec.queue,
    handler: spec.handler,
    spill: spec.spill,
    observers: [metrics, ...(spec.observers ?? [])],
  });
  metrics.attach(pipeline);
  spec.onPipeline?.(pipeline, metrics);
  const t0 = performance.now();
  let sampler: ReturnType<typeof setInterval> | undefined;
  if (spec.onSample) {
    const every = spec.sampleEveryMs ?? 250;
    sampler = setInterval(() => spec.onSample!(performance.now() - t0, pipeline.stats(), metrics), every);
  }
  let load: OpenLoopResult;
  try {
    load = await runOpenLoop({ schedule: spec.schedule, durationMs: spec.durationMs, make: spec.make, target: pipeline, onProgress: spec.onProgress });
    await pipeline.close();
  } finally {
    if (sampler) clearInterval(sampler);
    stalls = watch.stop();
  }
  if (spec.onSample) spec.onSample(performance.now() - t0, pipeline.stats(), metrics);
  const elapsedMs = performance.now() - load.startMs;
  const snap = metrics.snapshot([pipeline.window().maxItems]);
  const ledger = pipeline.stats().ledger;
  const ops = spec.sink.fixedCostOps() - opsBefore;
  return {
    offeredPerSec: spec.offeredPerSec,
    durationMs: spec.durationMs,
    elapsedMs: Math.round(elapsedMs),
    offered: load.offered,
    accepted: ledger.accepted,
    committed: ledger.committed,
    dropped: ledger.dropped,
    droppedByReason: ledger.droppedByReason,
    deadLettered: ledger.deadLettered,
    inFlight: ledger.inFlight,
    rejected: ledger.rejected,
    notSent: load.notSent,
    producerBlockedMs: Math.round(load.blockedMs),
    throughputPerSec: Math.round((ledger.committed / elapsedMs) * 1000),
    fixedCostOps: ops,
    fixedCostOpsPerItem: ledger.committed > 0 ? ops / ledger.committed : 0,
    fixedCostKind: spec.sink.fixedCostKind,
    latencyMs: snap.latencyMs,
    batchSize: snap.batchSize,
    batchWaitMs: snap.batchWaitMs,
    flushReasons: snap.flushReasons,
    sloBreaches: metrics.sloBreaches,
    ledgerBalanced: ledger.balanced,
    stalls,
  };
}
