/**
 * Open-loop load. Arrivals follow a schedule fixed in advance (constant rate, Poisson, …);
 * each item is stamped with its *intended* arrival time. When the producer falls behind
 * (a blocked queue, a busy event loop), it catches up by emitting the overdue items with
 * their original stamps, so the latency it measures includes the stall: no coordinated
 * omission. The producer stops at the wall-clock deadline and reports what it never got
 * to send (`notSent`) rather than silently shrinking the load.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { systemClock, type Clock } from '../core/clock.js';
import { isSluiceError, invalidOption } from '../core/errors.js';
import { seededRng, type Rng } from '../core/random.js';
import type { OfferResult } from '../core/pipeline.js';
import type { Envelope } from '../core/types.js';

/** Intended arrival offsets (ms from the start), increasing; `null` when exhausted. */
export interface ArrivalSchedule {
  readonly description: string;
  next(): number | null;
}

export function constantArrivals(ratePerSec: number): ArrivalSchedule {
  if (!(ratePerSec > 0)) throw invalidOption('ratePerSec', ratePerSec, 'a number > 0');
  const gap = 1000 / ratePerSec;
  let i = 0;
  return { description: `constant ${ratePerSec}/s`, next: () => i++ * gap };
}

export function poissonArrivals(ratePerSec: number, rng: Rng = seededRng(7)): ArrivalSchedule {
  if (!(ratePerSec > 0)) throw invalidOption('ratePerSec', ratePerSec, 'a number > 0');
  const mean = 1000 / ratePerSec;
  let t = 0;
  return {
    description: `poisson ${ratePerSec}/s`,
    next: () => {
      t += -Math.log(1 - rng()) * mean;
      return t;
    },
  };
}

export interface OfferTarget<T> {
  offer(env: Envelope<T>): OfferResult;
  put(env: Envelope<T>): Promise<OfferResult>;
}

export interface OpenLoopOptions<T> {
  schedule: ArrivalSchedule;
  durationMs: number;
  make: (i: number, intendedAtMs: number) => Envelope<T>;
  target: OfferTarget<T>;
  clock?: Clock;
  /** Called about every 100 ms with the fraction of the duration elapsed. */
  onProgress?: (fraction: number) => void;
  /** Items emitted before yielding to the event loop, so sink I/O keeps flowing. @default 512 */
  sliceItems?: number;
}

export interface OpenLoopResult {
  /** Items handed to the pipeline. */
  offered: number;
  accepted: number;
  /** Accepted but dropped at once by the overflow policy. */
  dropped: number;
  /** Refused with an error (block timeout): never accepted. */
  rejected: number;
  /** Scheduled before the deadline but never emitted because the producer was stalled. */
  notSent: number;
  /** Largest gap between an item's intended time and its emission (ms). */
  maxEmitLagMs: number;
  /** Time the producer spent waiting on a blocked queue (ms). */
  blockedMs: number;
  startMs: number;
  endMs: number;
}

export async function runOpenLoop<T>(opts: OpenLoopOptions<T>): Promise<OpenLoopResult> {
  const clock = opts.clock ?? systemClock;
  const slice = opts.sliceItems ?? 512;
  const sleep = (ms: number) => new Promise<void>((r) => clock.setTimer(r, ms));
  const res: OpenLoopResult = { offered: 0, accepted: 0, dropped: 0, rejected: 0, notSent: 0, maxEmitLagMs: 0, blockedMs: 0, startMs: 0, endMs: 0 };
  const start = clock.now();
  res.startMs = start;
  const dur = opts.durationMs;
  let t = opts.schedule.next();
  let i = 0;
  let lastProgress = start;

  while (t !== null && t < dur) {
    const elapsed = clock.now() - start;
    if (elapsed >= dur) break; // wall-clock deadline: whatever is left was never sent
    if (t > elapsed) {
      await sleep(Math.min(t - elapsed, dur - elapsed));
      continue;
    }
    let n = 0;
    while (t !== null && t < dur && n < slice) {
      const now = clock.now() - start;
      if (t > now) break;
      const lag = now - t;
      if (lag > res.maxEmitLagMs) res.maxEmitLagMs = lag;
      const env = opts.make(i++, start + t);
      res.offered++;
      let r = opts.target.offer(env);
      if (r === 'full') {
        const b0 = clock.now();
        try {
          r = await opts.target.put(env);
        } catch (e) {
          if (!isSluiceError(e)) throw e;
          res.rejected++;
          r = 'full';
        }
        res.blockedMs += clock.now() - b0;
      }
      if (r === 'accepted') res.accepted++;
      else if (r === 'dropped') {
        res.accepted++;
        res.dropped++;
      }
      t = opts.schedule.next();
      n++;
    }
    if (opts.onProgress && clock.now() - lastProgress >= 100) {
      lastProgress = clock.now();
      opts.onProgress(Math.min(1, (lastProgress - start) / dur));
    }
    if (n >= slice) await yieldToLoop();
  }
  while (t !== null && t < dur) {
    res.notSent++;
    t = opts.schedule.next();
  }
  res.endMs = clock.now();
  opts.onProgress?.(1);
  return res;
}
