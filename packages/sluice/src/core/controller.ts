/**
 * Window controllers: close the loop between the observed end-to-end p99 and the window.
 *
 * A controller is a PipelineObserver (it sees every committed batch and every flush) that
 * moves the window through `pipeline.setWindow`. The batcher knows nothing about it: any
 * policy (static, AIMD, later a gradient or PID one) plugs in through `WindowController`.
 *
 * Core module: Node built-ins only, time from the injected clock, no timers (decisions are
 * taken on the observer calls, so a FakeClock drives them exactly in tests).
 */
import { systemClock, type Clock } from './clock.js';
import { invalidOption } from './errors.js';
import type { Envelope, FlushInfo, PipelineObserver } from './types.js';

/** What a controller moves: `Pipeline` satisfies it. */
export interface WindowTarget {
  setWindow(partial: { maxItems?: number; maxWaitMs?: number }): void;
  window(): { maxItems: number; maxWaitMs: number };
}

export type ControlDecision = 'start' | 'increase' | 'decrease' | 'hold';

/** Which knob limited the batches of a control period (from the flush reasons it saw). */
export type BindingKnob = 'size' | 'time' | 'both' | 'none';

/** One control decision, kept in the decision log. */
export interface WindowDecision {
  /** Ms since `attach`. */
  tMs: number;
  /** The window *after* the decision. */
  maxItems: number;
  maxWaitMs: number;
  /** p99 of end-to-end latency over the period that just ended (ms). */
  p99Ms: number;
  /**
   * The p99 the decision used (ms): over this period and the ones before it in the sliding
   * interval, up to `slidingPeriods` (see AimdOptions.slidingPeriods). Equals p99Ms for the
   * first period after the window shrank, and for controllers that do not slide.
   */
  decisionP99Ms?: number;
  /** How many periods `decisionP99Ms` covers. */
  periodsUsed?: number;
  /** Latency samples (committed items) in that period. */
  samples: number;
  /** Committed items per second over that period. */
  ratePerSec: number;
  /** Which knob bound the period's batches: size flushes or timer flushes. */
  bound: BindingKnob;
  /** Samples over the SLO in the decision's interval, and the count the binomial breach test allows (breachTest 'binomial'). */
  overSlo?: number;
  overSloAllowed?: number;
  decision: ControlDecision;
  reason: string;
}

export interface ControllerStats {
  kind: string;
  window: { maxItems: number; maxWaitMs: number };
  periods: number;
  increases: number;
  decreases: number;
  holds: number;
  lastP99Ms: number;
}

export interface WindowController<T = unknown> extends PipelineObserver<T> {
  readonly kind: string;
  /** Binds the controller to a pipeline (or any WindowTarget) and logs the starting window. */
  attach(target: WindowTarget): this;
  /** Every decision taken so far, oldest first (bounded: see `maxLog`). */
  decisions(): readonly WindowDecision[];
  stats(): ControllerStats;
}

// ------------------------------------------------------------------ interval histogram

/**
 * A small log-linear latency histogram (HDR-style: 128 sub-buckets per power of two,
 * ≤ 0.8% relative error, 1 µs .. 71 min), cheap to reset every control period. It lives
 * here because the core imports nothing outside Node; the metrics layer keeps its
 * full HDR histograms.
 */
export class IntervalHistogram {
  private static readonly SUB = 128;
  private readonly counts = new Uint32Array(33 * IntervalHistogram.SUB);
  private n = 0;

  recordMs(ms: number): void {
    let us = Math.round(ms * 1000);
    if (us < 1) us = 1;
    else if (us > 2 ** 32) us = 2 ** 32;
    const e = Math.floor(Math.log2(us));
    const sub = Math.min(IntervalHistogram.SUB - 1, Math.floor((us / 2 ** e - 1) * IntervalHistogram.SUB));
    this.counts[e * IntervalHistogram.SUB + sub]++;
    this.n++;
  }

  get count(): number {
    return this.n;
  }

  /** Samples over `ms` (those in buckets whose upper edge exceeds it: the edge `percentileMs` reports). */
  countAbove(ms: number): number {
    let over = 0;
    for (let i = this.counts.length - 1; i >= 0; i--) {
      const e = Math.floor(i / IntervalHistogram.SUB);
      const sub = i % IntervalHistogram.SUB;
      if ((2 ** e * (1 + (sub + 1) / IntervalHistogram.SUB)) / 1000 <= ms) break;
      over += this.counts[i];
    }
    return over;
  }

  /** Upper edge of the bucket holding the p-th percentile (0..100), in ms; 0 when empty. */
  percentileMs(p: number): number {
    if (this.n === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.n));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const e = Math.floor(i / IntervalHistogram.SUB);
        const sub = i % IntervalHistogram.SUB;
        return (2 ** e * (1 + (sub + 1) / IntervalHistogram.SUB)) / 1000;
      }
    }
    return 0;
  }

  reset(): void {
    if (this.n === 0) return;
    this.counts.fill(0);
    this.n = 0;
  }

  /** This histogram becomes a copy of `other`. */
  copyFrom(other: IntervalHistogram): void {
    this.counts.set(other.counts);
    this.n = other.n;
  }

  /** Adds `other`'s samples to this one. */
  add(other: IntervalHistogram): void {
    if (other.n === 0) return;
    const a = this.counts;
    const b = other.counts;
    for (let i = 0; i < a.length; i++) a[i] += b[i];
    this.n += other.n;
  }
}

// ------------------------------------------------------------------ base

abstract class BaseController<T> implements WindowController<T> {
  abstract readonly kind: string;
  protected target: WindowTarget | null = null;
  protected readonly clock: Clock;
  protected t0 = 0;
  private readonly log: WindowDecision[] = [];
  private readonly maxLog: number;
  protected counts = { periods: 0, increases: 0, decreases: 0, holds: 0 };
  protected lastP99 = 0;

  constructor(clock: Clock, maxLog: number) {
    this.clock = clock;
    this.maxLog = maxLog;
  }

  attach(target: WindowTarget): this {
    this.target = target;
    this.t0 = this.clock.now();
    this.onAttach(target);
    const w = target.window();
    this.push({ tMs: 0, maxItems: w.maxItems, maxWaitMs: w.maxWaitMs, p99Ms: 0, samples: 0, ratePerSec: 0, bound: 'none', decision: 'start', reason: 'attached' });
    return this;
  }

  protected onAttach(_target: WindowTarget): void {}

  protected push(d: WindowDecision): void {
    if (d.decision !== 'start') {
      this.counts.periods++;
      if (d.decision === 'increase') this.counts.increases++;
      else if (d.decision === 'decrease') this.counts.decreases++;
      else this.counts.holds++;
      this.lastP99 = d.p99Ms;
    }
    this.log.push(d);
    // Bounded memory for long-lived pipelines: keep the most recent decisions.
    if (this.log.length > this.maxLog) this.log.splice(0, this.log.length - this.maxLog);
  }

  decisions(): readonly WindowDecision[] {
    return this.log;
  }

  stats(): ControllerStats {
    return {
      kind: this.kind,
      window: this.target ? pickWindow(this.target.window()) : { maxItems: 0, maxWaitMs: 0 },
      ...this.counts,
      lastP99Ms: this.lastP99,
    };
  }
}

function pickWindow(w: { maxItems: number; maxWaitMs: number }) {
  return { maxItems: w.maxItems, maxWaitMs: w.maxWaitMs };
}

// ------------------------------------------------------------------ static

export interface StaticControllerOptions {
  /** The fixed window; @default whatever the pipeline was built with. */
  maxItems?: number;
  maxWaitMs?: number;
  clock?: Clock;
}

/** Never moves the window (sets it once at attach when given): the baseline. */
export class StaticController<T = unknown> extends BaseController<T> {
  readonly kind = 'static';
  constructor(private readonly opts: StaticControllerOptions = {}) {
    super(opts.clock ?? systemClock, 16);
  }

  protected override onAttach(target: WindowTarget): void {
    const p: { maxItems?: number; maxWaitMs?: number } = {};
    if (this.opts.maxItems !== undefined) p.maxItems = this.opts.maxItems;
    if (this.opts.maxWaitMs !== undefined) p.maxWaitMs = this.opts.maxWaitMs;
    if (p.maxItems !== undefined || p.maxWaitMs !== undefined) target.setWindow(p);
  }
}

// ------------------------------------------------------------------ AIMD

export interface AimdOptions {
  /** The p99 end-to-end latency objective (ms). */
  sloMs: number;
  /**
   * Growth stops once p99 ≥ sloMs − marginMs (the hold band [slo − margin, slo]);
   * a p99 above sloMs is a breach and cuts the binding knob (see `decrease`).
   * @default 15% of sloMs
   */
  marginMs?: number;
  /**
   * Additive increase, in latency terms (ms): the wait grows by this many ms, the size by
   * the items that arrive in this many ms at the period's observed rate. Capped at the
   * margin, so one step from below the band cannot jump over it (latency moves about 1:1
   * with the binding knob). @default min(10% of sloMs, marginMs)
   */
  stepMs?: number;
  /** Bounds on the size knob. @default [1, 4096] */
  minItems?: number;
  maxItems?: number;
  /** Bounds on the wait knob (ms). @default [0, sloMs]: a wait longer than the SLO can only breach it */
  minWaitMs?: number;
  maxWaitMs?: number;
  /**
   * Control period: a period ends once it lasted `minPeriodMs` *and* saw `minSamples`
   * committed items, or after `maxPeriodMs` whatever it saw. p99 over 500 samples is the
   * 5th-largest latency: enough to be stable, while 100 samples would make p99 the single
   * largest one (one GC pause would steer the window). @default 500 ms, 500 samples, 3000 ms
   */
  minPeriodMs?: number;
  minSamples?: number;
  maxPeriodMs?: number;
  /** A period with fewer samples than this holds (no evidence). @default 50 */
  minSamplesToAct?: number;
  /**
   * Decisions read p99 over this period *and* the ones before it, up to this many periods in
   * all: a sliding interval, started afresh whenever the window shrinks (see decide). The SLO
   * is a p99 over the whole run, and one period's p99 estimates it badly when stalls come in
   * bursts: at 28k items/s here, periods at one and the same window read p99 7–9 ms without a
   * stall and 23–29 ms with one (a GC pause or a slow fdatasync delays ≈ 1.5% of a period's
   * items), so one-period decisions halved on stalls and regrew: bands of 3.7–4× (`lab
   * adaptive` in one run). Over three periods one stall is ≈ 0.5% of the samples and
   * no longer sets p99, while a window that is really too large still does. 1 = the period
   * alone. @default 3
   */
  slidingPeriods?: number;
  /**
   * A cut is *late* when its oldest item waited longer than maxWaitMs + this slack: the
   * batcher wanted to cut but the in-flight limit held it, i.e. the sink was the bottleneck.
   * The slack absorbs event-loop lag. @default 25% of sloMs
   */
  lateSlackMs?: number;
  /**
   * A *mild* breach — p99 in (sloMs, sloMs + mildBreachMs] — halves only when the period before
   * breached too and this period's own p99 breaches as well; alone it holds. A breach above it
   * halves at once. At steady high load the period p99 of one and the same window swung
   * 14–26 ms here (GC pauses and write stalls over 500 ms periods), and halving on every mild
   * one kept the window moving over a 4× band.
   * 0 halves on every breach. @default marginMs
   */
  mildBreachMs?: number;
  /**
   * What counts as a breach of the SLO over the decision's interval of n samples:
   *   - `'binomial'`: more samples over the SLO than the 1% budget plus `breachZ` binomial
   *     standard deviations at that n (n·0.01 + z·√(n·0.01·0.99)). A p99 is the count of
   *     samples over a latency; at n = 1,500 the budget is 15 ± 3.9, so one stall that delays
   *     a batch of 20 items reads "p99 > SLO" but is within the noise of the count. Mild
   *     breaches need no second period (the test is the noise allowance).
   *   - `'p99'`: the interval's p99 over the SLO (mild breaches: see mildBreachMs), the rule
   *     before issue 20, kept to show side by side in `lab adaptive`.
   * @default 'binomial'
   */
  breachTest?: 'binomial' | 'p99';
  /** Standard deviations of the binomial breach test. @default 2 */
  breachZ?: number;
  /**
   * How far a breach moves the binding knob (docs/window.md, *What AIMD can reach against a
   * static with hindsight*):
   *   - `'to-setpoint'`: by the measured excess, the latency the decision's p99 is over the
   *     band's lower edge (sloMs − marginMs), in the knob's own latency terms (the wait by that
   *     many ms, maxItems by the items that arrive in that many ms at the period's rate), and by
   *     half at most. The latency the window adds moves 1:1 with the binding knob (the model the
   *     hold-on-breach and halving-must-pay tests already rest on), so that is the cut that puts
   *     p99 back at the band; a halving cuts x/2 whatever the excess, and every ms cut beyond it
   *     is paid in fixed-cost operations until additive increase has grown it back.
   *   - `'halve'`: by half whatever the excess (classic multiplicative decrease, the rule before
   *     issue 20), kept to show side by side in `lab adaptive`.
   * @default 'to-setpoint'
   */
  decrease?: 'to-setpoint' | 'halve';
  /** Double the binding knob while p99 < half of (slo − margin), as TCP's slow start. @default true */
  slowStart?: boolean;
  clock?: Clock;
  /** Decisions kept in the log. @default 10_000 */
  maxLog?: number;
}

/**
 * AIMD on the observed p99.
 *
 * Which knob it moves, and why: end-to-end latency is bounded by whichever knob cuts the
 * batch first — at low load the timer (`maxWaitMs`; latency ≈ wait + write), at high load
 * the size (`maxItems`; latency ≈ maxItems / rate + write). Fixed-cost operations per item
 * are set by the same knob (1 / (rate × wait) or 1 / maxItems). So each period the
 * controller reads the flush reasons it saw, finds the *binding* knob, and moves that one:
 *   - p99 < (slo − margin) / 2: slow start, double the binding knob (a cold start settles in
 *     a few periods instead of a dozen);
 *   - p99 < slo − margin: add one step to the binding knob (more items per fixed cost); the
 *     step is capped at the headroom left (slo − margin − p99), so growth slows into the band;
 *   - slo − margin ≤ p99 ≤ slo: hold (in the band: no sawtooth at steady load);
 *   - p99 > slo: cut the binding knob (both when the period mixed size and time flushes) by the
 *     excess over slo − margin in latency terms, by half at most (`decrease`; 'halve' always
 *     halves); with breachTest 'p99', a mild breach (≤ slo + mildBreachMs) cuts only if the
 *     period before breached too;
 *     never maxItems below what keeps the sink at most half busy at the observed rate
 *     (2 × rate × mean write time);
 *     and not when p99 minus the latency the window adds still breaches: then the window is
 *     not the cause (a write stall, a pause) and shrinking it would only cost more fixed costs;
 *   - after a halving: if p99 fell by less than half the latency the halving gave back (and
 *     is not under the band), the breach was not the window's: the halving is undone.
 * The non-binding knob is left alone: moving it changes neither latency nor cost, and it
 * keeps the value the other regime learned, which makes switching back immediate.
 *
 * Saturation guard: when most cuts of a period were *late* (the oldest item waited past
 * maxWaitMs + slack because the previous batch was still being written), the latency comes
 * from queueing at the sink, and smaller batches would make it worse. Then the controller
 * doubles maxItems if the late batches were full, and holds otherwise. `minItems` is a last
 * floor against shrinking into a collapse.
 */
export class AimdController<T = unknown> extends BaseController<T> {
  readonly kind = 'aimd';
  readonly sloMs: number;
  readonly marginMs: number;
  readonly stepMs: number;
  readonly bounds: { minItems: number; maxItems: number; minWaitMs: number; maxWaitMs: number };
  private readonly minPeriodMs: number;
  private readonly minSamples: number;
  private readonly maxPeriodMs: number;
  private readonly minSamplesToAct: number;
  private readonly lateSlackMs: number;
  /** Below this p99 (half of slo − margin) growth is multiplicative (slow start). */
  private readonly slowStartBelowMs: number;
  private readonly mildBreachMs: number;
  readonly breachTest: 'binomial' | 'p99';
  private readonly breachZ: number;
  readonly decrease: 'to-setpoint' | 'halve';
  /** The last period breached the SLO (a mild breach needs two in a row to halve). */
  private breachedLast = false;
  /**
   * Set by a halving: the window before it, the p99 that triggered it, and the latency the
   * window gave back. The next period checks that the halving paid (see decide()).
   */
  private lastHalving: { prev: { maxItems: number; maxWaitMs: number }; p99BeforeMs: number; gaveBackMs: number } | null = null;
  private lateFull = 0;
  private lateOther = 0;
  /** Cuts not yet fully settled: when, and how many items still to settle. */
  private readonly writes: { atMs: number; items: number }[] = [];
  private writeMsSum = 0;
  private writeCount = 0;
  private readonly hist = new IntervalHistogram();
  /** The previous periods of the sliding interval, newest first (slidingPeriods − 1 at most). */
  private readonly past: IntervalHistogram[] = [];
  private pastCount = 0;
  /** The window the controller left at its last decision: if someone else moved it since, the sliding interval starts afresh. */
  private pastWindow = { maxItems: 0, maxWaitMs: 0 };
  private readonly merged = new IntervalHistogram();
  private readonly slidingPeriods: number;
  /**
   * After a halving only: this period's items that arrived after it started, i.e. batched
   * under the halved window only (the halving check). Empty in every other period.
   */
  private readonly fresh = new IntervalHistogram();
  private periodStart = 0;
  private sizeFlushes = 0;
  private timeFlushes = 0;

  constructor(opts: AimdOptions) {
    super(opts.clock ?? systemClock, opts.maxLog ?? 10_000);
    const slo = opts.sloMs;
    if (!(slo > 0)) throw invalidOption('sloMs', slo, 'a number > 0');
    this.sloMs = slo;
    this.marginMs = opts.marginMs ?? 0.15 * slo;
    if (!(this.marginMs >= 0 && this.marginMs < slo)) throw invalidOption('marginMs', this.marginMs, `a number in [0, sloMs=${slo})`);
    this.stepMs = Math.min(opts.stepMs ?? 0.1 * slo, this.marginMs > 0 ? this.marginMs : Infinity);
    if (!(this.stepMs > 0)) throw invalidOption('stepMs', opts.stepMs, 'a number > 0');
    this.bounds = {
      minItems: opts.minItems ?? 1,
      maxItems: opts.maxItems ?? 4096,
      minWaitMs: opts.minWaitMs ?? 0,
      maxWaitMs: opts.maxWaitMs ?? slo,
    };
    const b = this.bounds;
    if (!(Number.isInteger(b.minItems) && b.minItems >= 1)) throw invalidOption('minItems', b.minItems, 'an integer ≥ 1');
    if (!(Number.isInteger(b.maxItems) && b.maxItems >= b.minItems)) throw invalidOption('maxItems', b.maxItems, `an integer ≥ minItems (${b.minItems})`);
    if (!(b.minWaitMs >= 0)) throw invalidOption('minWaitMs', b.minWaitMs, 'a number ≥ 0');
    if (!(b.maxWaitMs >= b.minWaitMs)) throw invalidOption('maxWaitMs', b.maxWaitMs, `a number ≥ minWaitMs (${b.minWaitMs})`);
    this.minPeriodMs = opts.minPeriodMs ?? 500;
    this.minSamples = opts.minSamples ?? 500;
    this.maxPeriodMs = Math.max(opts.maxPeriodMs ?? 3000, this.minPeriodMs);
    this.minSamplesToAct = opts.minSamplesToAct ?? 50;
    this.slidingPeriods = opts.slidingPeriods ?? 3;
    if (!(Number.isInteger(this.slidingPeriods) && this.slidingPeriods >= 1)) throw invalidOption('slidingPeriods', opts.slidingPeriods, 'an integer ≥ 1');
    for (let i = 1; i < this.slidingPeriods; i++) this.past.push(new IntervalHistogram());
    this.lateSlackMs = opts.lateSlackMs ?? 0.25 * slo;
    this.slowStartBelowMs = opts.slowStart === false ? 0 : 0.5 * (slo - this.marginMs);
    this.mildBreachMs = opts.mildBreachMs ?? this.marginMs;
    if (!(this.mildBreachMs >= 0)) throw invalidOption('mildBreachMs', opts.mildBreachMs, 'a number ≥ 0');
    this.breachTest = opts.breachTest ?? 'binomial';
    if (this.breachTest !== 'binomial' && this.breachTest !== 'p99') throw invalidOption('breachTest', opts.breachTest, "'binomial' or 'p99'");
    this.breachZ = opts.breachZ ?? 2;
    if (!(this.breachZ >= 0)) throw invalidOption('breachZ', opts.breachZ, 'a number ≥ 0');
    this.decrease = opts.decrease ?? 'to-setpoint';
    if (this.decrease !== 'to-setpoint' && this.decrease !== 'halve') throw invalidOption('decrease', opts.decrease, "'to-setpoint' or 'halve'");
  }

  protected override onAttach(target: WindowTarget): void {
    const w = target.window();
    const clamped = { maxItems: this.clampItems(w.maxItems), maxWaitMs: this.clampWait(w.maxWaitMs) };
    if (clamped.maxItems !== w.maxItems || clamped.maxWaitMs !== w.maxWaitMs) target.setWindow(clamped);
    this.periodStart = this.clock.now();
    this.hist.reset();
    this.fresh.reset();
    this.sizeFlushes = this.timeFlushes = this.lateFull = this.lateOther = 0;
  }

  onFlush(info: FlushInfo, nowMs: number): void {
    this.writes.push({ atMs: nowMs, items: info.items });
    const full = info.reason === 'size' || info.reason === 'bytes';
    if (full) this.sizeFlushes++;
    else if (info.reason === 'time') this.timeFlushes++;
    if (this.target && info.reason !== 'drain' && info.waitMs > this.target.window().maxWaitMs + this.lateSlackMs) {
      if (full) this.lateFull++;
      else this.lateOther++;
    }
    this.maybeDecide(nowMs);
  }

  onCommitted(batch: readonly Envelope<T>[], nowMs: number): void {
    // Per item: the second histogram is fed only in the period that checks a halving.
    const start = this.lastHalving !== null ? this.periodStart : Infinity;
    for (let i = 0; i < batch.length; i++) {
      const ms = nowMs - batch[i].intendedAtMs;
      this.hist.recordMs(ms);
      if (batch[i].intendedAtMs >= start) this.fresh.recordMs(ms);
    }
    this.settled(batch.length, nowMs);
    this.maybeDecide(nowMs);
  }

  onDeadLettered(items: readonly Envelope<T>[], nowMs: number): void {
    this.settled(items.length, nowMs);
  }

  onDropped(items: readonly Envelope<T>[] | number, _reason: string, nowMs: number): void {
    // Numeric drops are overflow drops at the queue: never part of a batch being written.
    if (typeof items !== 'number') this.settled(items.length, nowMs);
  }

  /**
   * Write time per batch: each cut is queued with its item count, and items settling
   * (committed, dead-lettered or dropped, in whatever mix of callbacks) pay it off in order.
   * Drops at the queue (drop-newest/oldest) also arrive here as arrays; a batch count that
   * never pays off would only make the estimate late, and the queue is bounded.
   */
  private settled(n: number, nowMs: number): void {
    let left = n;
    while (left > 0 && this.writes.length > 0) {
      const head = this.writes[0];
      const take = Math.min(left, head.items);
      head.items -= take;
      left -= take;
      if (head.items === 0) {
        this.writes.shift();
        this.writeMsSum += nowMs - head.atMs;
        this.writeCount++;
      }
    }
    if (this.writes.length > 1024) this.writes.splice(0, this.writes.length - 1024);
  }

  /**
   * The smallest maxItems that keeps the sink at most half busy at `rate`: a write costs about
   * w̄ ms whatever its size (the fixed cost dominates), so rate / B batches per second keep it
   * busy rate·w̄ / B of the time. Halving below it would trade a latency breach for saturation
   * (measured: 871 → 435 items at 170k items/s, then p99 183–297 ms).
   */
  private capacityFloorItems(ratePerSec: number): number {
    if (this.writeCount === 0) return this.bounds.minItems;
    const meanWriteMs = this.writeMsSum / this.writeCount;
    return Math.ceil((2 * ratePerSec * meanWriteMs) / 1000);
  }

  private maybeDecide(now: number): void {
    if (!this.target) return;
    const age = now - this.periodStart;
    if (age < this.minPeriodMs) return;
    if (this.hist.count < this.minSamples && age < this.maxPeriodMs) return;
    this.decide(now, age);
  }

  private decide(now: number, ageMs: number): void {
    const target = this.target!;
    const samples = this.hist.count;
    const periodP99 = this.hist.percentileMs(99);
    // The sliding interval: this period plus the earlier ones kept (slidingPeriods).
    const w = target.window();
    if (w.maxItems !== this.pastWindow.maxItems || w.maxWaitMs !== this.pastWindow.maxWaitMs) this.pastCount = 0;
    let p99 = periodP99;
    let periodsUsed = 1;
    if (this.pastCount > 0 && samples >= this.minSamplesToAct) {
      this.merged.copyFrom(this.hist);
      for (let i = 0; i < this.pastCount; i++) this.merged.add(this.past[i]);
      p99 = this.merged.percentileMs(99);
      periodsUsed = 1 + this.pastCount;
    }
    const over = periodsUsed > 1 ? ` over the last ${periodsUsed} periods (${fmt(periodP99)} ms in this one)` : '';
    // The breach test (see AimdOptions.breachTest): the count of samples over the SLO in the
    // interval against the 1% budget plus its binomial noise, or the interval's p99 alone.
    const used = periodsUsed > 1 ? this.merged : this.hist;
    const n = used.count;
    const overSlo = used.countAbove(this.sloMs);
    const overSloAllowed = n * 0.01 + this.breachZ * Math.sqrt(n * 0.01 * 0.99);
    const binomial = this.breachTest === 'binomial';
    const breach = binomial ? overSlo > overSloAllowed : p99 > this.sloMs;
    const countNote = ` (${overSlo} of ${n} samples over the SLO; the 1% budget + ${fmt(this.breachZ)} sd allows ${fmt(overSloAllowed)})`;
    const rate = (samples * 1000) / ageMs;
    const s = this.sizeFlushes;
    const t = this.timeFlushes;
    // The binding knob: the one that cut (most of) the batches this period. A clear
    // majority (2:1) picks one knob; a mix moves both.
    const bound: BindingKnob = s + t === 0 ? 'none' : s >= 2 * t ? 'size' : t >= 2 * s ? 'time' : 'both';
    let items = w.maxItems;
    let wait = w.maxWaitMs;
    let decision: ControlDecision;
    let reason: string;
    let restored = false;
    const cuts = s + t;
    const late = this.lateFull + this.lateOther;
    // Judged on the items that arrived after the halving: those queued before it were batched
    // under the old window and would make any halving look useless.
    // A halving is checked in the one period after it, or not at all (too few samples).
    const halving = this.fresh.count >= this.minSamplesToAct ? this.lastHalving : null;
    const p99After = halving ? this.fresh.percentileMs(99) : p99;
    this.lastHalving = null;
    if (halving && p99After > this.sloMs - this.marginMs && p99After > halving.p99BeforeMs - 0.5 * halving.gaveBackMs) {
      // A halving is a test of the hypothesis "the window caused the breach": it gave back
      // `gaveBackMs` of latency, so p99 should fall by about that much. If it fell by less
      // than half of it and is still not under the band, the tail came from elsewhere (GC,
      // write stalls, a busy CPU: measured at 85k items/s, 697 → 348 items left p99 at
      // 19.5–21 ms) and the smaller window only pays the fixed cost more often: undo it.
      items = halving.prev.maxItems;
      wait = halving.prev.maxWaitMs;
      restored = true;
      decision = items !== w.maxItems || wait !== w.maxWaitMs ? 'increase' : 'hold';
      reason = `the last halving did not pay: p99 ${fmt(halving.p99BeforeMs)} → ${fmt(p99After)} ms (items batched under the halved window) where the window gave back ${fmt(halving.gaveBackMs)} ms: not the window's breach, window restored`;
    } else if (samples < this.minSamplesToAct) {
      decision = 'hold';
      reason = `only ${samples} samples (< ${this.minSamplesToAct}): no evidence`;
    } else if (cuts >= 3 && late >= cuts / 2) {
      // Saturation guard. Most cuts waited for the in-flight batch: the sink, not the window,
      // sets the latency. Halving now would shrink batches, pay the fixed cost more often and
      // collapse (measured: 16-item batches at 27k items/s gave a 10 s p99). Full batches
      // mean maxItems caps the capacity: double it. Partial ones mean the sink is slower than
      // the load whatever the window: hold.
      if (this.lateFull >= this.lateOther) {
        items = this.clampItems(items * 2);
        decision = items !== w.maxItems ? 'increase' : 'hold';
        reason = `sink saturated: ${late} of ${cuts} cuts waited for the in-flight batch; full batches: double maxItems${decision === 'hold' ? ' (already at its upper bound)' : ''}`;
      } else {
        decision = 'hold';
        reason = `sink saturated: ${late} of ${cuts} cuts waited for the in-flight batch with partial batches: no window helps`;
      }
    } else if (breach && p99 - this.windowShareMs(bound, w, rate) > this.sloMs) {
      // The window adds at most its wait (timer-bound) or its fill time (size-bound) to an
      // item's latency. If p99 minus that still breaches, the tail comes from elsewhere (a
      // write stall, a GC pause, a busy CPU): shrinking the window would buy nothing and pay
      // the fixed cost more often.
      decision = 'hold';
      reason = `p99 ${fmt(p99)} ms${over} > SLO ${fmt(this.sloMs)} ms, but the window adds ≤ ${fmt(this.windowShareMs(bound, w, rate))} ms of it: not the window's breach`;
    } else if (!binomial && p99 > this.sloMs && p99 <= this.sloMs + this.mildBreachMs && !(this.breachedLast && periodP99 > this.sloMs)) {
      // One mild breach is not yet evidence against the window (see mildBreachMs). Nor is a
      // second one that this period did not make itself: the sliding interval still holds the
      // period that breached (measured in one run at 572 items/s: one period at 29 ms,
      // the next at 18.8 ms, and the interval's p99 counted the first one twice).
      decision = 'hold';
      reason = !this.breachedLast
        ? `p99 ${fmt(p99)} ms${over} > SLO ${fmt(this.sloMs)} ms by ≤ ${fmt(this.mildBreachMs)} ms, first breach in a row: hold (a second one halves)`
        : `p99 ${fmt(p99)} ms${over} > SLO ${fmt(this.sloMs)} ms by ≤ ${fmt(this.mildBreachMs)} ms, but this period alone did not breach: hold (the tail is an earlier period's)`;
    } else if (binomial && !breach && p99 > this.sloMs) {
      // Over the SLO by the p99, but the count of samples over it is within the 1% budget's
      // binomial noise: a stall's few delayed items, not evidence against the window.
      decision = 'hold';
      reason = `p99 ${fmt(p99)} ms${over} > SLO ${fmt(this.sloMs)} ms, but within sampling noise${countNote}: hold`;
    } else if (breach) {
      const floor = this.capacityFloorItems(rate);
      // Halved upwards (ceil; the wait on its 1 µs grid): a decrease never moves a knob by more
      // than a factor of 2 (floor(1001 / 2) = 500 did, and so did a wait rounded to µs only in
      // the log: a switching phase's band read 2.0001 in one run). 'to-setpoint' cuts the
      // excess over the band's lower edge instead, when that is less than half (see decrease).
      const excessMs = Math.max(0, p99 - (this.sloMs - this.marginMs));
      const toSetpoint = this.decrease === 'to-setpoint';
      const halfItems = Math.ceil(items / 2);
      const halfWait = wait / 2;
      const cutItems = toSetpoint ? Math.max(halfItems, Math.round(items - (rate * excessMs) / 1000)) : halfItems;
      const cutWait = toSetpoint ? Math.max(halfWait, wait - excessMs) : halfWait;
      const sizeMoves = bound === 'size' || bound === 'both';
      const timeMoves = bound === 'time' || bound === 'both' || bound === 'none';
      if (sizeMoves) items = Math.min(items, this.clampItems(Math.max(cutItems, floor)));
      if (timeMoves) wait = this.clampWait(cutWait, 'up');
      decision = items !== w.maxItems || wait !== w.maxWaitMs ? 'decrease' : 'hold';
      if (decision === 'decrease')
        this.lastHalving = { prev: { maxItems: w.maxItems, maxWaitMs: w.maxWaitMs }, p99BeforeMs: p99, gaveBackMs: this.windowShareMs(bound, w, rate) - this.windowShareMs(bound, { maxItems: items, maxWaitMs: wait }, rate) };
      const floored = sizeMoves && floor > cutItems && items > cutItems;
      const how = toSetpoint && ((sizeMoves && cutItems > halfItems) || (timeMoves && cutWait > halfWait)) ? `cut ${knobName(bound)} by the ${fmt(excessMs)} ms over the band's lower edge` : `halve ${knobName(bound)}`;
      reason = `p99 ${fmt(p99)} ms${over} > SLO ${fmt(this.sloMs)} ms${binomial ? countNote : ''}: ${how}${floored ? ` (maxItems held at ≥ ${floor}: smaller batches would keep the sink more than half busy)` : ''}${decision === 'hold' ? ' (already at its lower bound)' : ''}`;
    } else if (p99 >= this.sloMs - this.marginMs) {
      decision = 'hold';
      reason = `p99 ${fmt(p99)} ms${over} in the band [${fmt(this.sloMs - this.marginMs)}, ${fmt(this.sloMs)}] ms`;
    } else if (p99 < this.slowStartBelowMs) {
      // Slow start (as TCP's): far below the target, double the binding knob. The knob adds at
      // most p99 to the latency, so doubling it adds < half the target: it cannot overshoot.
      if (bound === 'size' || bound === 'both') items = this.clampItems(items * 2);
      if (bound === 'time' || bound === 'both') wait = this.clampWait(wait > 0 ? wait * 2 : this.stepMs);
      decision = items !== w.maxItems || wait !== w.maxWaitMs ? 'increase' : 'hold';
      reason =
        bound === 'none'
          ? `p99 ${fmt(p99)} ms${over} but no flush this period: nothing to move`
          : `p99 ${fmt(p99)} ms${over} < ${fmt(this.slowStartBelowMs)} ms (half the target): slow start, double ${knobName(bound)}${decision === 'hold' ? ' (already at its upper bound)' : ''}`;
    } else {
      // The step shrinks to the headroom left below the band: growth decelerates into the
      // band instead of overshooting it (an overshoot is a breach, and a breach a halving).
      const step = Math.max(this.stepMs / 8, Math.min(this.stepMs, this.sloMs - this.marginMs - p99));
      if (bound === 'size' || bound === 'both') items = this.clampItems(items + Math.max(1, Math.round((rate * step) / 1000)));
      if (bound === 'time' || bound === 'both') wait = this.clampWait(wait + step);
      decision = items !== w.maxItems || wait !== w.maxWaitMs ? 'increase' : 'hold';
      reason =
        bound === 'none'
          ? `p99 ${fmt(p99)} ms${over} but no flush this period: nothing to move`
          : `p99 ${fmt(p99)} ms${over} < ${fmt(this.sloMs - this.marginMs)} ms: +${fmt(Math.max(this.stepMs / 8, Math.min(this.stepMs, this.sloMs - this.marginMs - p99)))} ms on ${knobName(bound)}${decision === 'hold' ? ' (already at its upper bound)' : ''}`;
    }
    this.breachedLast = samples >= this.minSamplesToAct && breach;
    // A new period starts *before* the window moves: setWindow pumps the batcher, whose cuts
    // call back into onFlush, which must count towards the new period, not decide again.
    this.writeMsSum = this.writeCount = 0;
    // The sliding interval starts afresh when the window shrinks (a halving, or the undo of
    // one): the periods before it ran a larger window and would hold its tail against the new
    // one. It carries on through holds and increases: an increase that overshoots shows in
    // every item of the next period, a third of the interval's samples, and breaches it at
    // once; only a tail of a few % of one period (a stall) is diluted. A period with too few
    // samples to act on is not kept.
    const shrunk = items < w.maxItems || wait < w.maxWaitMs || restored;
    if (shrunk || this.past.length === 0) this.pastCount = 0;
    else if (samples >= this.minSamplesToAct) {
      const oldest = this.past.pop()!;
      oldest.copyFrom(this.hist);
      this.past.unshift(oldest);
      this.pastCount = Math.min(this.past.length, this.pastCount + 1);
    }
    this.pastWindow = { maxItems: items, maxWaitMs: wait };
    this.hist.reset();
    this.fresh.reset();
    this.sizeFlushes = this.timeFlushes = this.lateFull = this.lateOther = 0;
    this.periodStart = now;
    this.push({
      tMs: round3(now - this.t0),
      maxItems: items,
      maxWaitMs: round3(wait),
      p99Ms: round3(periodP99),
      decisionP99Ms: round3(p99),
      periodsUsed,
      samples,
      ratePerSec: Math.round(rate),
      bound,
      ...(binomial ? { overSlo, overSloAllowed: round3(overSloAllowed) } : {}),
      decision,
      reason,
    });
    if (items !== w.maxItems || wait !== w.maxWaitMs) target.setWindow({ maxItems: items, maxWaitMs: wait });
  }

  /** The latency the window itself adds, at most (ms): the wait, or the time to fill maxItems at `rate`. */
  private windowShareMs(bound: BindingKnob, w: { maxItems: number; maxWaitMs: number }, ratePerSec: number): number {
    const fillMs = ratePerSec > 0 ? (w.maxItems / ratePerSec) * 1000 : Infinity;
    return bound === 'size' ? Math.min(fillMs, w.maxWaitMs) : w.maxWaitMs;
  }

  private clampItems(n: number): number {
    return Math.min(this.bounds.maxItems, Math.max(this.bounds.minItems, Math.round(n)));
  }

  /** Within the bounds, on a 1 µs grid (what the decision log shows is the window itself); `up` rounds up. */
  private clampWait(ms: number, round: 'nearest' | 'up' = 'nearest'): number {
    const q = round === 'up' ? Math.ceil(ms * 1000 - 1e-6) / 1000 : Math.round(ms * 1000) / 1000;
    return Math.min(this.bounds.maxWaitMs, Math.max(this.bounds.minWaitMs, q));
  }
}

function knobName(b: BindingKnob): string {
  return b === 'size' ? 'maxItems (size-bound)' : b === 'time' ? 'maxWaitMs (timer-bound)' : b === 'both' ? 'maxItems and maxWaitMs (mixed flushes)' : 'maxWaitMs';
}

function fmt(x: number): string {
  return String(Math.round(x * 100) / 100);
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

// ------------------------------------------------------------------ selection

export type WindowControllerOptions = ({ kind: 'static' } & StaticControllerOptions) | ({ kind: 'aimd' } & AimdOptions);

/** Builds a controller from options (`kind` selects the policy). */
export function createWindowController<T = unknown>(opts: WindowControllerOptions): WindowController<T> {
  switch (opts.kind) {
    case 'static':
      return new StaticController<T>(opts);
    case 'aimd':
      return new AimdController<T>(opts);
    default:
      throw invalidOption('controller', (opts as { kind: unknown }).kind, "'static' or 'aimd'");
  }
}
