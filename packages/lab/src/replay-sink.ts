/**
 * The replay sink (docs/window.md, *The replay sink*): a sink whose per-write cost is drawn,
 * seeded, from what the lab measured on the real sink at the start of the run — stall
 * episodes included — so that policy comparisons (AIMD against statics, window against window)
 * give the same verdict whatever the disk does during the comparison itself.
 *
 * The measurement (`recordWriteTrace`) is a time series: single-item writes back to back on
 * the real sink for a few seconds, each with its start and its cost. A replayed write starting
 * at replay time t looks up the recorded write in progress at (t + a seeded offset) modulo the
 * trace's length: if that write was a stall (over STALL_FACTOR × the median), the replayed one
 * lasts until the stall ends, as a write issued into a stall episode would; otherwise it costs
 * the recorded write's cost. Either way it then adds the per-item cost of the cost model for
 * the batch's other items. Stall episodes thus arrive at the rate and with the lengths they
 * had on the real disk, and a comparison's variants all replay the same sequence from the same
 * seed.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Envelope, FixedCostKind, Sink } from 'sluice';
import type { CostModel } from 'sluice';
import { seededRng } from 'sluice';

export interface WriteTrace {
  /** Start of each recorded write, ms from the first. */
  atMs: number[];
  costMs: number[];
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  /** Writes over STALL_FACTOR × the median, and their total time (ms). */
  stalls: number;
  stallMs: number;
  durationMs: number;
}

/** A recorded write over this many times the median is a stall: a replayed write issued inside it waits for its end. */
export const STALL_FACTOR = 4;

export async function recordWriteTrace<T>(sink: Sink<T>, make: (i: number) => Envelope<T>, durationMs: number): Promise<WriteTrace> {
  const atMs: number[] = [];
  const costMs: number[] = [];
  const t0 = performance.now();
  for (let i = 0; performance.now() - t0 < durationMs; i++) {
    const e = make(i);
    const s = performance.now();
    await sink.write([e]);
    atMs.push(s - t0);
    costMs.push(performance.now() - s);
  }
  return summarise(atMs, costMs, performance.now() - t0);
}

export function summarise(atMs: number[], costMs: number[], durationMs: number): WriteTrace {
  const sorted = [...costMs].sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
  const medianMs = q(0.5);
  const stall = costMs.filter((c) => c > STALL_FACTOR * medianMs);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { atMs, costMs, medianMs: r(medianMs), p99Ms: r(q(0.99)), maxMs: r(sorted[sorted.length - 1] ?? 0), stalls: stall.length, stallMs: r(stall.reduce((a, b) => a + b, 0)), durationMs: r(durationMs) };
}

/** The recorded cost of a write issued at `tMs` of trace time (see the module comment). */
export function replayedCostMs(trace: WriteTrace, tMs: number): number {
  const n = trace.atMs.length;
  if (n === 0) return 0;
  const t = ((tMs % trace.durationMs) + trace.durationMs) % trace.durationMs;
  // The last recorded write that started at or before t.
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (trace.atMs[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  const c = trace.costMs[lo];
  if (c > STALL_FACTOR * trace.medianMs) return Math.max(trace.medianMs, trace.atMs[lo] + c - t);
  return c;
}

export class ReplaySink<T> implements Sink<T> {
  readonly name = 'replay';
  readonly fixedCostKind: FixedCostKind;
  private ops = 0;
  private t0 = -1;
  private readonly offsetMs: number;
  private stored = 0;

  constructor(
    private readonly trace: WriteTrace,
    private readonly cost: CostModel,
    seed: number,
    kind: FixedCostKind = 'fsync',
  ) {
    this.fixedCostKind = kind;
    this.offsetMs = seededRng(seed)() * trace.durationMs;
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    const now = performance.now();
    if (this.t0 < 0) this.t0 = now;
    const ms = replayedCostMs(this.trace, now - this.t0 + this.offsetMs) + this.cost.perItemMs * Math.max(0, batch.length - 1);
    this.ops++;
    await waitMs(ms);
    this.stored += batch.length;
  }

  fixedCostOps(): number {
    return this.ops;
  }

  /** Items "stored": what the writes returned for. */
  storedCount(): number {
    return this.stored;
  }

  reset(): void {
    this.stored = 0;
    this.t0 = -1;
  }

  async close(): Promise<void> {}
}

/**
 * Waits `ms` without blocking the event loop: a timer for all but the last 1.5 ms (timers fire
 * on a 1 ms grid, late on a busy loop), then yields with setImmediate until the deadline, so
 * sub-millisecond costs are not rounded up to a timer tick.
 */
async function waitMs(ms: number): Promise<void> {
  const end = performance.now() + ms;
  if (ms > 1.5) await sleep(ms - 1.5);
  while (performance.now() < end) await new Promise<void>((r) => setImmediate(r));
}
