/**
 * What every bench child shares: argument parsing, the acknowledging sink wrapper that
 * counts what the sink acked (and, for peers, records latency the same way Sluice's
 * PipelineMetrics does), the producers, and the one JSON line a child prints.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { LatencyHistogram, type LatencySummary } from 'sluice';
import type { Envelope, FixedCostKind, Sink } from 'sluice';
import type { Enqueued } from './item.js';

// ------------------------------------------------------------------ arguments

export function parseArgs(argv = process.argv.slice(2)): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[a.slice(2)] = argv[++i];
    else out[a.slice(2)] = 'true';
  }
  return out;
}

export function num(args: Record<string, string>, name: string, dflt: number): number {
  const v = args[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

// ------------------------------------------------------------------ the acking sink

/**
 * Wraps the case's real sink (or nothing: the no-op sink of case 1). Counts items acked,
 * i.e. whose `write` resolved. `latency` records enqueue-to-ack per item, once per batch
 * clock read, exactly as PipelineMetrics.onCommitted does for Sluice — so it is switched
 * off for Sluice in cases 1–3 (its own PipelineMetrics records) and on for the peers.
 */
export class AckSink implements Sink<unknown> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;
  acked = 0;
  batches = 0;
  /** From each item's `intendedAtMs` (producer's stamp) to its ack. */
  readonly latency: LatencyHistogram | null;
  /** From each item's `enqueuedAtMs` (when the contender took it: `stampEnqueued`) to its ack: case 4. */
  readonly enqueueLatency: LatencyHistogram | null;
  private target = Infinity;
  private reached: (() => void) | null = null;

  constructor(
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the wrapped sink's item type is the case's business
    private readonly inner: Sink<any> | null,
    opts: { latency: boolean; enqueueLatency?: boolean },
  ) {
    this.name = inner ? `ack(${inner.name})` : 'noop';
    this.fixedCostKind = inner?.fixedCostKind ?? 'none';
    this.latency = opts.latency ? new LatencyHistogram() : null;
    this.enqueueLatency = opts.enqueueLatency ? new LatencyHistogram() : null;
  }

  async write(batch: readonly Envelope<unknown>[]): Promise<void> {
    if (this.inner !== null) await this.inner.write(batch);
    this.ack(batch);
  }

  private ack(batch: readonly Envelope<unknown>[]): void {
    const n = batch.length;
    this.acked += n;
    this.batches++;
    if (this.latency !== null || this.enqueueLatency !== null) {
      const now = performance.now();
      const h = this.latency;
      if (h !== null) for (let i = 0; i < n; i++) h.recordMs(now - batch[i].intendedAtMs);
      const e = this.enqueueLatency;
      if (e !== null) for (let i = 0; i < n; i++) e.recordMs(now - (batch[i] as unknown as Enqueued).enqueuedAtMs);
    }
    if (this.acked >= this.target && this.reached !== null) {
      const r = this.reached;
      this.reached = null;
      this.target = Infinity;
      r();
    }
  }

  /** Resolves once `n` items in total have been acked; rejects after `timeoutMs`. */
  waitAcked(n: number, timeoutMs = 60_000): Promise<void> {
    if (this.acked >= n) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`only ${this.acked} of ${n} items acked after ${timeoutMs} ms`)), timeoutMs);
      this.target = n;
      this.reached = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  fixedCostOps(): number {
    return this.inner?.fixedCostOps() ?? this.batches;
  }

  async close(): Promise<void> {
    await this.inner?.close();
  }
}

// ------------------------------------------------------------------ contenders

/**
 * A contender as the producers see it. `offer` returns false only when the contender
 * pushes back (Sluice's `block` policy with a full queue); the producer then awaits `wait`.
 */
export interface Contender<I> {
  readonly name: string;
  offer(item: I): boolean;
  wait(item: I): Promise<void>;
  /** Resolves when every accepted item is acked or dropped. */
  close(): Promise<void>;
  /** Enqueue-to-ack latency as the contender's own metrics see it (Sluice), else null: use the AckSink's. */
  latency(): LatencyHistogram | null;
  /** Anything worth keeping in the JSON (ledger, drops, batch counts). */
  extra(): Record<string, unknown>;
}

// ------------------------------------------------------------------ producers

export interface ClosedLoopOptions<I> {
  make: (i: number, stampMs: number) => I;
  /** Stop producing after this long (ms)… */
  durationMs?: number;
  /** …or after this many items. */
  totalItems?: number;
  /**
   * Items made and offered between two yields to the event loop. The producer stamps the
   * slice once (`stampMs`, before any wait), so each item's latency runs from when the
   * producer *wanted* to produce its slice: one clock read per slice, not per item.
   * Deliberately not a multiple of the window (512), so no contender's batches line up
   * with the producer's slices by luck. @default 1000
   */
  slice?: number;
  /**
   * Items outstanding (offered, not yet acked) at most, enforced per slice by the harness
   * for contenders that never push back, so a sink slower than the producer bounds a
   * throughput run instead of exhausting memory. Sluice pushes back by itself first.
   */
  cap?: number;
}

export interface ProducedRun {
  offered: number;
  startMs: number;
  /** When the last item was offered. */
  producedMs: number;
}

/** A producer that pushes as fast as the contender accepts. */
export async function closedLoop<I>(c: Contender<I>, ack: AckSink, o: ClosedLoopOptions<I>): Promise<ProducedRun> {
  const slice = o.slice ?? 1000;
  const cap = o.cap ?? Infinity;
  const dur = o.durationMs ?? Infinity;
  const total = o.totalItems ?? Infinity;
  const make = o.make;
  const t0 = performance.now();
  let i = 0;
  for (;;) {
    const stamp = performance.now();
    if (stamp - t0 >= dur || i >= total) break;
    if (i - ack.acked >= cap) await ack.waitAcked(i - cap + 1);
    const end = Math.min(i + slice, total);
    while (i < end) {
      const item = make(i++, stamp);
      if (!c.offer(item)) await c.wait(item);
    }
    await yieldToLoop();
  }
  return { offered: i, startMs: t0, producedMs: performance.now() };
}

// ------------------------------------------------------------------ measuring

export interface Measure {
  start(): void;
  stop(items: number): { seconds: number; itemsPerSec: number; cpuUsPerItem: number; cpuUserMs: number; cpuSystemMs: number };
}

/** Wall and CPU (user + system, all threads: libuv's pool included) between start and stop. */
export function measure(): Measure {
  let t0 = 0;
  let c0: NodeJS.CpuUsage = { user: 0, system: 0 };
  return {
    start() {
      c0 = process.cpuUsage();
      t0 = performance.now();
    },
    stop(items: number) {
      const seconds = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      return {
        seconds,
        itemsPerSec: items / seconds,
        cpuUsPerItem: items > 0 ? (c.user + c.system) / items : 0,
        cpuUserMs: c.user / 1000,
        cpuSystemMs: c.system / 1000,
      };
    },
  };
}

export function settle(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) gc();
}

export function rssMb(): number {
  return process.memoryUsage.rss() / 2 ** 20;
}

/** Peak resident set size of this process so far (MB). */
export function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

export interface RunResult {
  case: string;
  contender: string;
  items: number;
  seconds: number;
  itemsPerSec: number;
  cpuUsPerItem: number;
  peakRssMb: number;
  /** RSS after warm-up and a GC, before the measured run: the runtime baseline. */
  baseRssMb: number;
  latencyMs: LatencySummary | null;
  /** Items offered but neither acked nor accepted-and-kept: dropped by the contender. */
  lost: number;
  extra: Record<string, unknown>;
}

/** The child's only stdout output: one JSON line for run.mjs. */
export function emit(r: RunResult): void {
  const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  process.stdout.write(
    JSON.stringify({
      ...r,
      seconds: round(r.seconds),
      itemsPerSec: Math.round(r.itemsPerSec),
      cpuUsPerItem: round(r.cpuUsPerItem, 4),
      peakRssMb: round(r.peakRssMb, 1),
      baseRssMb: round(r.baseRssMb, 1),
    }) + '\n',
  );
}

/** Runs a child's main, turning any failure into one line on stderr and exit code 1. */
export function main(fn: () => Promise<void>): void {
  fn().then(
    () => process.exit(0),
    (e) => {
      process.stderr.write(`bench child failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
