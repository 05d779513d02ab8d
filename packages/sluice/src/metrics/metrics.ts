/**
 * One metrics registry per pipeline: it observes the pipeline (it is a PipelineObserver)
 * and reads the sink's own count of fixed-cost operations. Per-item work is one
 * histogram record at commit; everything else is per batch. It observes no acceptance:
 * bytes in are the pipeline ledger's count (`attach()` the pipeline).
 */
import type { Envelope, FlushInfo, FlushReason, PipelineObserver, Sink } from '../core/types.js';
import type { Pipeline } from '../core/pipeline.js';
import type { LedgerSnapshot } from '../core/ledger.js';
import { CountHistogram, LatencyHistogram, type CountSummary, type LatencySummary } from './histogram.js';

export interface MetricsSnapshot {
  latencyMs: LatencySummary;
  batchSize: CountSummary & { histogram: [number, number][] };
  batchWaitMs: LatencySummary;
  flushReasons: Record<FlushReason, number>;
  droppedByReason: Record<string, number>;
  deadLettered: number;
  committed: number;
  bytesIn: number;
  fixedCostOps: number;
  fixedCostKind: string;
  fixedCostOpsPerItem: number;
  queueItems: number;
  queueBytes: number;
  ledger: LedgerSnapshot | null;
}

export class PipelineMetrics<T = unknown> implements PipelineObserver<T> {
  readonly latency = new LatencyHistogram();
  readonly batchSize = new CountHistogram();
  readonly batchWait = new LatencyHistogram();
  readonly flushReasons: Record<FlushReason, number> = { size: 0, bytes: 0, time: 0, drain: 0 };
  readonly dropped = new Map<string, number>();
  committed = 0;
  deadLettered = 0;
  /** Items in the batches cut so far (the batch-size histogram's sum). */
  batchItems = 0;
  /** Items committed with a latency above this (ms) count in `sloBreaches`. */
  sloBreaches = 0;
  private pipeline: Pipeline<T> | null = null;

  constructor(
    private readonly sink: Pick<Sink<T>, 'fixedCostOps' | 'fixedCostKind'> | null = null,
    private readonly sloMs = Infinity,
  ) {}

  /** Lets the snapshot include queue depth, the ledger and the bytes in. */
  attach(p: Pipeline<T>): this {
    this.pipeline = p;
    return this;
  }

  /** Bytes accepted by the attached pipeline (0 before `attach()`). */
  get bytesIn(): number {
    return this.pipeline?.ledger.bytesIn ?? 0;
  }

  onFlush(info: FlushInfo): void {
    this.flushReasons[info.reason]++;
    this.batchSize.record(info.items);
    this.batchItems += info.items;
    this.batchWait.recordMs(info.waitMs);
  }

  onCommitted(batch: readonly Envelope<T>[], nowMs: number): void {
    this.committed += batch.length;
    const slo = this.sloMs;
    for (let i = 0; i < batch.length; i++) {
      const ms = nowMs - batch[i].intendedAtMs;
      this.latency.recordMs(ms);
      if (ms > slo) this.sloBreaches++;
    }
  }

  onDeadLettered(items: readonly Envelope<T>[]): void {
    this.deadLettered += items.length;
  }

  onDropped(items: readonly Envelope<T>[] | number, reason: string): void {
    const n = typeof items === 'number' ? items : items.length;
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + n);
  }

  snapshot(extraBuckets: number[] = []): MetricsSnapshot {
    const st = this.pipeline?.stats();
    const ops = this.sink?.fixedCostOps() ?? 0;
    return {
      latencyMs: this.latency.summary(),
      batchSize: { ...this.batchSize.summary(), histogram: this.batchSize.buckets(extraBuckets) },
      batchWaitMs: this.batchWait.summary(),
      flushReasons: { ...this.flushReasons },
      droppedByReason: Object.fromEntries(this.dropped),
      deadLettered: this.deadLettered,
      committed: this.committed,
      bytesIn: this.bytesIn,
      fixedCostOps: ops,
      fixedCostKind: this.sink?.fixedCostKind ?? 'none',
      fixedCostOpsPerItem: this.committed > 0 ? ops / this.committed : 0,
      queueItems: st?.queueItems ?? 0,
      queueBytes: st?.queueBytes ?? 0,
      ledger: st?.ledger ?? null,
    };
  }
}
