/**
 * Is the sink up? Sluice's Sink interface has no health call, and a retrying handler hides
 * failed attempts from the pipeline's observers (a batch is only reported once it commits or
 * gives up). So the answer is read where it happens: `watchSink(sink)` returns the same sink
 * with its `write` observed. Up means the last write attempt succeeded, or failed on an item
 * (the sink answered and refused a record: a poison record is not an outage); down means it
 * failed with a transient error (connection refused, timeout, ENOSPC…, classified as the
 * reliability decorators do: `classifyError`). Before the first write a sink counts as up: it
 * was opened.
 *
 * Cost: one try/await per batch write, nothing per item.
 */
import { classifyError } from '../core/reliability.js';
import type { Sink } from '../core/types.js';

export class SinkHealth {
  /** Whether the last write attempt reached a sink that answered. */
  up = true;
  writes = 0;
  /** Failed write attempts by class (`transient`, `item`, …). */
  readonly failures = new Map<string, number>();
  lastError: string | null = null;
  /** Epoch ms of the last write that succeeded (0: none yet). */
  lastOkAtMs = 0;

  ok(): void {
    this.writes++;
    this.up = true;
    this.lastOkAtMs = Date.now();
  }

  fail(error: unknown): void {
    this.writes++;
    const cls = classifyError(error);
    this.failures.set(cls, (this.failures.get(cls) ?? 0) + 1);
    this.up = cls !== 'transient';
    this.lastError = String((error as Error)?.message ?? error).slice(0, 200);
  }
}

const healthOf = new WeakMap<object, SinkHealth>();

/** The health watched on `sink` by `watchSink`, or null when it is not watched. */
export function sinkHealthOf(sink: object): SinkHealth | null {
  return healthOf.get(sink) ?? null;
}

/**
 * The same sink (a Proxy: every other property and method, `instanceof`, `fixedCostOps`,
 * pass through) whose writes are observed. Watching a watched sink returns it unchanged.
 */
export function watchSink<S extends Sink<any>>(sink: S): S {
  if (healthOf.has(sink)) return sink;
  const health = new SinkHealth();
  const write = async (batch: Parameters<S['write']>[0]) => {
    try {
      await sink.write(batch);
    } catch (e) {
      health.fail(e);
      throw e;
    }
    health.ok();
  };
  const proxy = new Proxy(sink, {
    get(target, prop) {
      if (prop === 'write') return write;
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  healthOf.set(proxy, health);
  return proxy;
}
