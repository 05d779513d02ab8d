/**
 * Pipeline options: every default in one place, with its unit in its name, validated
 * once at construction with a message that names the bad value and what would be valid.
 */
import { invalidOption } from './errors.js';

export type OverflowPolicy = 'block' | 'drop-newest' | 'drop-oldest' | 'spill';
export const OVERFLOW_POLICIES: readonly OverflowPolicy[] = ['block', 'drop-newest', 'drop-oldest', 'spill'];

export interface WindowOptions {
  /** Flush when the batch holds this many items. @default 512 */
  maxItems: number;
  /** Flush before the batch would exceed this many bytes. @default 1 MiB */
  maxBytes: number;
  /**
   * Flush when the batch's oldest item has waited this long (an absolute deadline set by
   * the first item, not an idle timer that each new item pushes back). 0 = flush at once.
   * @default 5
   */
  maxWaitMs: number;
  /** Batches written concurrently. @default 1 */
  maxInFlight: number;
}

export interface QueueOptions {
  /** Items waiting for a batch, at most. @default 10_000 */
  maxItems: number;
  /** Bytes waiting for a batch, at most. @default 16 MiB */
  maxBytes: number;
  /** What happens when the queue is full. @default 'block' */
  policy: OverflowPolicy;
  /** `block`: how long a producer may wait for space before SLUICE_QUEUE_FULL. @default 30_000 */
  blockTimeoutMs: number;
}

export const WINDOW_DEFAULTS: Readonly<WindowOptions> = Object.freeze({
  maxItems: 512,
  maxBytes: 1024 * 1024,
  maxWaitMs: 5,
  maxInFlight: 1,
});

export const QUEUE_DEFAULTS: Readonly<QueueOptions> = Object.freeze({
  maxItems: 10_000,
  maxBytes: 16 * 1024 * 1024,
  policy: 'block' as OverflowPolicy,
  blockTimeoutMs: 30_000,
});

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalidOption(name, v, 'an integer ≥ 1');
  return v;
}

function nonNegative(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw invalidOption(name, v, 'a finite number ≥ 0');
  return v;
}

export function resolveWindow(partial: Partial<WindowOptions> = {}): WindowOptions {
  const o = { ...WINDOW_DEFAULTS, ...stripUndefined(partial) };
  return {
    maxItems: positiveInt('maxItems', o.maxItems),
    maxBytes: positiveInt('maxBytes', o.maxBytes),
    maxWaitMs: nonNegative('maxWaitMs', o.maxWaitMs),
    maxInFlight: positiveInt('maxInFlight', o.maxInFlight),
  };
}

export function resolveQueue(partial: Partial<QueueOptions> = {}, window: WindowOptions): QueueOptions {
  const o = { ...QUEUE_DEFAULTS, ...stripUndefined(partial) };
  if (!OVERFLOW_POLICIES.includes(o.policy)) throw invalidOption('policy', o.policy, `one of ${OVERFLOW_POLICIES.join(', ')}`);
  const q: QueueOptions = {
    maxItems: positiveInt('queue.maxItems', o.maxItems),
    maxBytes: positiveInt('queue.maxBytes', o.maxBytes),
    policy: o.policy,
    blockTimeoutMs: nonNegative('blockTimeoutMs', o.blockTimeoutMs),
  };
  // A queue smaller than the window could never trigger a size flush.
  if (q.maxItems < window.maxItems)
    throw invalidOption('queue.maxItems', q.maxItems, `an integer ≥ maxItems (${window.maxItems}), or the window could never fill`);
  if (q.maxBytes < window.maxBytes)
    throw invalidOption('queue.maxBytes', q.maxBytes, `an integer ≥ maxBytes (${window.maxBytes}), or the window could never fill`);
  return q;
}

export function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
