/**
 * The contracts every part of Sluice speaks. See docs/architecture.md.
 */
import { performance } from 'node:perf_hooks';
import { invalidOption } from './errors.js';

/** What one item costs the sink: the operation paid once per batch. */
export type FixedCostKind = 'fsync' | 'commit' | 'round-trip' | 'none';

/** Why a batch was cut from the queue. */
export type FlushReason = 'size' | 'bytes' | 'time' | 'drain';
export const FLUSH_REASONS: readonly FlushReason[] = ['size', 'bytes', 'time', 'drain'];

/**
 * One item travelling through the pipeline.
 *
 * `intendedAtMs` is when the item *should* have arrived (open-loop schedule or the
 * source's own timestamp), on the pipeline clock's monotonic base. End-to-end latency
 * is measured from it, never from when the producer got round to offering the item, so
 * a stalled producer cannot hide latency (no coordinated omission).
 */
export interface Envelope<T = unknown> {
  value: T;
  /** Size used for the byte bounds of the queue and the batch window. */
  bytes: number;
  intendedAtMs: number;
  /** Stable id: the idempotence key in sinks and the reconciliation key. */
  id?: string;
  /** Serialized form, when the producer already has it (NDJSON line without newline). */
  raw?: Buffer;
  /** Source position (log offset, JetStream sequence) for acknowledgement. */
  offset?: number;
  /** Opaque source context (e.g. a JetStream message to ack). */
  meta?: unknown;
  /**
   * What the front door knew of the record besides its bytes, e.g. `{ index }` for an
   * Elasticsearch `_bulk` record. A sink may store them: the PostgreSQL sink maps `@index` to a
   * column (`--columns es_index=@index`).
   */
  attrs?: Readonly<Record<string, string>>;
  /**
   * Set by the pipeline at acceptance: monotonic ms, never later than the real acceptance.
   * An item that opens a batch (accepted into an empty queue) and an item accepted into the
   * spill store get a fresh clock reading; an item queued behind others gets the pipeline's
   * latest reading (taken at the last batch opening, cut, completion or timer), so the
   * per-item path reads no clock. The head's stamp starts its batch's deadline.
   */
  acceptedAtMs: number;
  /** Set by the pipeline at acceptance: acceptance order. */
  seq: number;
}

/**
 * Above this, an `intendedAtMs` is an epoch reading (`Date.now()` ≈ 1.7e12), not the
 * monotonic base the pipeline measures latency on (`performance.now()`: ms since the process
 * started). 1e11 ms is three years of uptime.
 */
const MAX_MONOTONIC_MS = 1e11;

export interface EnvelopeInit {
  /**
   * Size for the queue's and the window's byte bounds. @default `raw.length`, else the UTF-8
   * length of the value's JSON
   */
  bytes?: number;
  /**
   * When the item should have arrived, on the pipeline clock's monotonic base
   * (`performance.now()` for the default clock, never `Date.now()`; convert an epoch time with
   * `monotonicOf(epochMs)`). Latency is measured from it. @default `performance.now()`
   */
  intendedAtMs?: number;
  id?: string;
  raw?: Buffer;
  offset?: number;
  meta?: unknown;
  attrs?: Readonly<Record<string, string>>;
}

/** Builds an envelope with the pipeline-owned fields initialised (one hidden class). */
export function envelope<T>(value: T, init: EnvelopeInit = {}): Envelope<T> {
  const intendedAtMs = init.intendedAtMs ?? performance.now();
  if (!(intendedAtMs < MAX_MONOTONIC_MS))
    throw invalidOption(
      'intendedAtMs',
      init.intendedAtMs,
      'a monotonic reading (performance.now(), ms since the process started), not an epoch time such as Date.now(); convert one with monotonicOf(epochMs)',
    );
  return {
    value,
    bytes: init.bytes ?? (init.raw ? init.raw.length : Buffer.byteLength(JSON.stringify(value) ?? 'null')),
    intendedAtMs,
    id: init.id,
    raw: init.raw,
    offset: init.offset,
    meta: init.meta,
    attrs: init.attrs,
    acceptedAtMs: 0,
    seq: 0,
  };
}

/**
 * A sink makes a whole batch durable in one fixed-cost operation, or throws
 * (preferably a SinkError saying whether the failure is transient or caused by an
 * item). It knows nothing of windows, retries or dead letters, and counts the
 * fixed-cost operations it really performs.
 */
export interface Sink<T = unknown> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;
  write(batch: readonly Envelope<T>[]): Promise<void>;
  /** Fixed-cost operations really performed so far (fdatasync calls, commits, round-trips). */
  fixedCostOps(): number;
  close(): Promise<void>;
}

/** What became of a batch once the handler is done with it. Every item lands in exactly one list. */
export interface BatchOutcome<T = unknown> {
  committed: readonly Envelope<T>[];
  deadLettered: readonly Envelope<T>[];
  dropped: readonly Envelope<T>[];
  /** Reason recorded for `dropped` items. */
  dropReason?: string;
  /** The error that caused dead letters or drops, if any. */
  error?: unknown;
}

/**
 * Turns a batch into an outcome. The default handler writes once and drops the batch
 * (counted, reason `sink-failed`) when the sink throws; the reliability decorators
 * (retry with backoff, split-and-retry, dead-lettering) are handlers too.
 */
export interface BatchHandler<T = unknown> {
  handle(batch: readonly Envelope<T>[]): Promise<BatchOutcome<T>>;
}

export interface FlushInfo {
  reason: FlushReason;
  items: number;
  bytes: number;
  /**
   * How long the batch's oldest item waited in the queue before the cut, from its
   * `acceptedAtMs`: exact when it opened its batch, never shorter than the real wait otherwise.
   */
  waitMs: number;
}

/** Hooks for metrics, sources (acks) and the lab. All optional, all synchronous. */
export interface PipelineObserver<T = unknown> {
  onAccepted?(env: Envelope<T>): void;
  onFlush?(info: FlushInfo, nowMs: number): void;
  onCommitted?(batch: readonly Envelope<T>[], nowMs: number): void;
  onDeadLettered?(items: readonly Envelope<T>[], nowMs: number, error: unknown): void;
  onDropped?(items: readonly Envelope<T>[] | number, reason: string, nowMs: number): void;
  onError?(error: unknown): void;
}
