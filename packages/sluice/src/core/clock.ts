/**
 * Time, injected. Everything timer-driven takes a Clock so that unit tests drive a
 * FakeClock and never patch globals. Times are milliseconds on a monotonic base
 * (fractional, from `performance.now()` for the system clock): never mix them with
 * `Date.now()`.
 */
import { performance } from 'node:perf_hooks';

export type TimerHandle = { readonly __timer: true } | ReturnType<typeof setTimeout>;

export interface Clock {
  /** Monotonic milliseconds (fractional). */
  now(): number;
  setTimer(fn: () => void, delayMs: number): TimerHandle;
  clearTimer(handle: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  // Node's timers tick in whole milliseconds and may fire up to 1 ms before a fractional
  // deadline; rounding up means a deadline timer never fires early and has to be re-armed.
  setTimer: (fn, delayMs) => setTimeout(fn, Math.max(0, Math.ceil(delayMs))),
  clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Converts a monotonic clock reading to epoch milliseconds (for records and logs). */
export function epochMsOf(monotonicMs: number): number {
  return performance.timeOrigin + monotonicMs;
}

/** Converts epoch milliseconds (a record's timestamp, `Date.now()`) to the monotonic base `intendedAtMs` uses. */
export function monotonicOf(epochMs: number): number {
  return epochMs - performance.timeOrigin;
}

interface FakeTimer {
  id: number;
  at: number;
  fn: () => void;
}

/**
 * A clock that moves only when told. `advance(ms)` fires due timers in deadline order,
 * each with `now()` equal to its own deadline, exactly as a real clock would have.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: FakeTimer[] = [];

  constructor(startMs = 0) {
    this.t = startMs;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, delayMs: number): TimerHandle {
    const timer = { id: ++this.seq, at: this.t + Math.max(0, delayMs), fn };
    this.timers.push(timer);
    return { __timer: true, id: timer.id } as unknown as TimerHandle;
  }

  clearTimer(handle: TimerHandle): void {
    const id = (handle as unknown as { id: number }).id;
    this.timers = this.timers.filter((t) => t.id !== id);
  }

  /** Number of timers armed and not yet fired. */
  pendingTimers(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      let next: FakeTimer | undefined;
      for (const t of this.timers) if (t.at <= target && (!next || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t;
      if (!next) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = target;
  }
}
