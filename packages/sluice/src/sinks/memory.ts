/**
 * Test doubles shipped on purpose, used by tests and by the lab alike.
 * - MemorySink: keeps every committed item, counts one "round-trip" per batch.
 * - SlowSink: a memory sink whose every write costs `fixedCostMs` (+ `perItemUs` per item).
 * - FlakySink / PoisonedSink live with the reliability code that needs them.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { invalidOption } from '../core/errors.js';

export class MemorySink<T = unknown> implements Sink<T> {
  readonly name: string = 'memory';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly batches: Envelope<T>[][] = [];
  private ops = 0;
  private items = 0;

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    this.ops++;
    this.items += batch.length;
    this.batches.push([...batch]);
  }

  /** Every committed item, in commit order. */
  all(): Envelope<T>[] {
    return this.batches.flat();
  }

  committedItems(): number {
    return this.items;
  }

  fixedCostOps(): number {
    return this.ops;
  }

  async close(): Promise<void> {}
}

export interface SlowSinkOptions {
  /** Cost of every write, paid once per batch (ms). @default 1 */
  fixedCostMs?: number;
  /** Additional cost per item in the batch (µs). @default 0 */
  perItemUs?: number;
  /** Keep the items (tests) or only count them (lab). @default false */
  keep?: boolean;
}

/** A sink with a configurable fixed cost per operation, paid with a timer (no CPU burned). */
export class SlowSink<T = unknown> implements Sink<T> {
  readonly name = 'slow';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly fixedCostMs: number;
  readonly perItemUs: number;
  readonly kept: Envelope<T>[] = [];
  private readonly keep: boolean;
  private ops = 0;
  private items = 0;

  constructor(opts: SlowSinkOptions = {}) {
    this.fixedCostMs = opts.fixedCostMs ?? 1;
    this.perItemUs = opts.perItemUs ?? 0;
    this.keep = opts.keep ?? false;
    if (!(this.fixedCostMs >= 0)) throw invalidOption('fixedCostMs', opts.fixedCostMs, 'a number ≥ 0');
    if (!(this.perItemUs >= 0)) throw invalidOption('perItemUs', opts.perItemUs, 'a number ≥ 0');
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    this.ops++;
    const ms = this.fixedCostMs + (this.perItemUs * batch.length) / 1000;
    if (ms > 0) await sleep(ms);
    this.items += batch.length;
    if (this.keep) for (const e of batch) this.kept.push(e);
  }

  committedItems(): number {
    return this.items;
  }

  fixedCostOps(): number {
    return this.ops;
  }

  async close(): Promise<void> {}
}
