/**
 * Reliability test doubles, shipped on purpose (tests and the lab use them alike):
 * - PoisonedSink: rejects, with an item-level SinkError, any batch holding a poisoned id;
 *   commits everything else (idempotently, by id) and counts every call it receives.
 * - FlakySink: fails the next `failures` calls with a transient SinkError, then delegates.
 * - IdempotentMemorySink: keeps one copy per id and counts the duplicates it absorbed.
 */
import { performance } from 'node:perf_hooks';
import { SinkError } from '../core/errors.js';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';

export class IdempotentMemorySink<T = unknown> implements Sink<T> {
  readonly name: string = 'memory-idempotent';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly byId = new Map<string, Envelope<T>>();
  /** Calls received (failed ones included). */
  calls = 0;
  duplicatesAbsorbed = 0;
  protected ops = 0;

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    this.calls++;
    this.ops++;
    for (const e of batch) {
      const id = e.id ?? `seq:${e.seq}`;
      if (this.byId.has(id)) this.duplicatesAbsorbed++;
      else this.byId.set(id, e);
    }
  }

  ids(): string[] {
    return [...this.byId.keys()];
  }

  fixedCostOps(): number {
    return this.ops;
  }

  async close(): Promise<void> {}
}

export class PoisonedSink<T = unknown> extends IdempotentMemorySink<T> {
  override readonly name: string = 'poisoned';
  /** Sizes of every batch received, in call order. */
  readonly callSizes: number[] = [];

  constructor(readonly poisoned: Set<string> = new Set()) {
    super();
  }

  override async write(batch: readonly Envelope<T>[]): Promise<void> {
    this.callSizes.push(batch.length);
    const bad = batch.findIndex((e) => e.id !== undefined && this.poisoned.has(e.id));
    if (bad >= 0) {
      this.calls++;
      throw new SinkError('item', `record ${batch[bad].id} violates a constraint`, { sinkCode: 'POISON', details: { index: bad } });
    }
    await super.write(batch);
  }
}

export class FlakySink<T = unknown> implements Sink<T> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;
  calls = 0;
  /** Batch sizes of the calls that failed. */
  readonly failedSizes: number[] = [];

  constructor(
    readonly inner: Sink<T>,
    /** Calls to fail (transient) before delegating; set again at any time. */
    public failures = 1,
    private readonly sinkCode = 'ECONNRESET',
  ) {
    this.name = `flaky(${inner.name})`;
    this.fixedCostKind = inner.fixedCostKind;
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    this.calls++;
    if (this.failures > 0) {
      this.failures--;
      this.failedSizes.push(batch.length);
      throw new SinkError('transient', `connection reset (flaky sink)`, { sinkCode: this.sinkCode });
    }
    await this.inner.write(batch);
  }

  fixedCostOps(): number {
    return this.inner.fixedCostOps();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Counts the calls really made to a sink (failed ones included); everything else delegates. */
export class CallCountingSink<T = unknown> implements Sink<T> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;
  calls = 0;
  failedCalls = 0;
  /** Duration of every call (ms), successful and failed, in call order. */
  readonly callMs: number[] = [];

  constructor(readonly inner: Sink<T>) {
    this.name = inner.name;
    this.fixedCostKind = inner.fixedCostKind;
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    this.calls++;
    const t0 = performance.now();
    try {
      await this.inner.write(batch);
    } catch (e) {
      this.failedCalls++;
      throw e;
    } finally {
      this.callMs.push(performance.now() - t0);
    }
  }

  fixedCostOps(): number {
    return this.inner.fixedCostOps();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
