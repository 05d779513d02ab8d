/**
 * `--slo-p99-ms N` in `sluice run` and `sluice serve`: the AIMD controller
 * (src/core/controller.ts) moving the window of a live pipeline, as the lab's `adaptive`
 * experiment attaches it, plus what production needs around it:
 *   - a memory bound: the controller never raises maxItems past what the queue's byte bound
 *     holds (see LiveSlo.itemBound);
 *   - /metrics: the window it set, the p99 it observed over its interval, its decisions by kind;
 *   - one log line per change of regime (timer-bound, size-bound, over the SLO, sink
 *     saturated, idle), not one per decision (a decision is taken every ≥ 0.5 s).
 *
 * Usage: `const slo = new LiveSlo(opts)`, give `slo.observer` to the pipeline's observers,
 * then `slo.attach(pipeline)` and `slo.registerMetrics(registry)`.
 */
import client from 'prom-client';
import type { Clock } from '../core/clock.js';
import { AimdController, type WindowDecision, type WindowTarget } from '../core/controller.js';
import { invalidOption } from '../core/errors.js';
import type { Envelope, FlushInfo, PipelineObserver } from '../core/types.js';
import { registerControllerMetrics } from '../metrics/controller-prometheus.js';
import { collectedCounter } from '../metrics/prometheus.js';

/**
 * Share of the queue's byte bound one full batch may take. The batch being filled sits in the
 * queue while the previous one is written, and the arrivals of that write queue behind it: a
 * batch as large as the whole byte bound would block producers (or drop, by policy) before it
 * was ever cut, and the queue's bound rather than the window would cut batches.
 */
export const QUEUE_BYTES_SHARE = 0.5;

/** The controller's default largest maxItems (AimdOptions.maxItems). */
export const LIVE_MAX_ITEMS = 4096;

export interface LiveSloOptions {
  /** The p99 end-to-end latency objective (ms). */
  sloMs: number;
  /** The pipeline's resolved queue bounds (`pipeline.queueBounds()` or the config's). */
  queue: { maxItems: number; maxBytes: number };
  /** The window the pipeline starts with (a config's, e.g. from `sluice tune`): the controller starts there. */
  start: { maxItems: number; maxWaitMs: number };
  /** One line per change of regime. @default none */
  log?: (line: string) => void;
  /** @default the system clock */
  clock?: Clock;
}

export type Regime = 'idle' | 'timer-bound' | 'size-bound' | 'mixed' | 'over the SLO' | 'sink saturated';

/** The regime a decision shows, or null when it shows none (too few samples to say). */
export function regimeOf(d: WindowDecision, sloMs: number): Regime | null {
  if (d.decision === 'start') return null;
  if (d.samples === 0) return 'idle';
  if (d.reason.startsWith('sink saturated')) return 'sink saturated';
  if (d.reason.startsWith('only ')) return null; // fewer samples than the controller acts on
  if ((d.decisionP99Ms ?? d.p99Ms) > sloMs) return 'over the SLO';
  return d.bound === 'size' ? 'size-bound' : d.bound === 'time' ? 'timer-bound' : d.bound === 'both' ? 'mixed' : null;
}

export class LiveSlo {
  readonly controller: AimdController<unknown>;
  readonly sloMs: number;
  private readonly queue: { maxItems: number; maxBytes: number };
  private readonly log: (line: string) => void;
  private target: WindowTarget | null = null;
  private seen = 0;
  private regime: Regime | null = null;
  private bytes = 0;
  private items = 0;
  /** Times a raise was cut down to the byte bound. */
  capped = 0;
  regimeChanges = 0;

  constructor(opts: LiveSloOptions) {
    if (!(opts.sloMs > 0) || !Number.isFinite(opts.sloMs)) throw invalidOption('sloP99Ms', opts.sloMs, 'a number > 0');
    this.sloMs = opts.sloMs;
    this.queue = opts.queue;
    this.log = opts.log ?? (() => {});
    // The controller's own bounds: never past the queue's item bound (setWindow would refuse
    // it), and a tuned window larger than the default cap is kept rather than cut at attach.
    const maxItems = Math.min(opts.queue.maxItems, Math.max(LIVE_MAX_ITEMS, opts.start.maxItems));
    this.controller = new AimdController<unknown>({ sloMs: opts.sloMs, maxItems, maxWaitMs: Math.max(opts.sloMs, opts.start.maxWaitMs), clock: opts.clock });
  }

  /**
   * Largest maxItems the queue's byte bound allows at the mean item size seen so far:
   * QUEUE_BYTES_SHARE × queue.maxBytes / mean bytes, and never past queue.maxItems. Before
   * any item was seen: queue.maxItems.
   */
  itemBound(): number {
    const mean = this.items > 0 ? this.bytes / this.items : 0;
    const byBytes = mean > 0 ? Math.floor((QUEUE_BYTES_SHARE * this.queue.maxBytes) / mean) : Infinity;
    return Math.max(1, Math.min(this.queue.maxItems, byBytes));
  }

  /** The pipeline observer: give it to the pipeline's `observers` (it does nothing before attach). */
  readonly observer: PipelineObserver<unknown> = {
    onFlush: (info: FlushInfo, now: number) => {
      this.controller.onFlush(info, now);
      this.afterDecision();
    },
    onCommitted: (batch: readonly Envelope<unknown>[], now: number) => {
      for (let i = 0; i < batch.length; i++) this.bytes += batch[i].bytes;
      this.items += batch.length;
      // Long-lived: keep the mean recent (halve both sums, the ratio stays).
      if (this.items > 1_000_000) {
        this.items /= 2;
        this.bytes /= 2;
      }
      this.controller.onCommitted(batch, now);
      this.afterDecision();
    },
    onDeadLettered: (items: readonly Envelope<unknown>[], now: number) => this.controller.onDeadLettered(items, now),
    onDropped: (items: readonly Envelope<unknown>[] | number, reason: string, now: number) => this.controller.onDropped(items, reason, now),
  };

  /** Binds to the pipeline: the controller starts from its current window. */
  attach(pipeline: WindowTarget): this {
    const bounded: WindowTarget = {
      window: () => pipeline.window(),
      setWindow: (p) => {
        const cur = pipeline.window();
        const q = { ...p };
        if (q.maxItems !== undefined && q.maxItems > cur.maxItems) {
          const bound = this.itemBound();
          if (q.maxItems > bound) {
            q.maxItems = Math.max(cur.maxItems, bound);
            this.capped++;
          }
        }
        pipeline.setWindow(q);
      },
    };
    this.target = bounded;
    this.controller.attach(bounded);
    this.seen = this.controller.decisions().length;
    return this;
  }

  private afterDecision(): void {
    const log = this.controller.decisions();
    // The log is bounded (it drops its oldest entries): read only the newest decision.
    if (log.length === this.seen && log.length < 10_000) return;
    this.seen = log.length;
    const d = log[log.length - 1];
    const r = regimeOf(d, this.sloMs);
    if (r === null || r === this.regime) return;
    const from = this.regime ?? 'start';
    this.regime = r;
    this.regimeChanges++;
    const w = this.target?.window() ?? d;
    const p99 = d.decisionP99Ms ?? d.p99Ms;
    this.log(
      `window regime ${from} → ${r}: ${w.maxItems} items / ${w.maxWaitMs} ms, p99 ${p99} ms over ${d.periodsUsed ?? 1} period(s) (SLO ${this.sloMs} ms), ${d.ratePerSec}/s; ${d.decision}: ${d.reason}` +
        (this.capped > 0 ? ` [maxItems capped by the queue byte bound ${this.capped}× so far: ≤ ${this.itemBound()} items]` : ''),
    );
  }

  currentRegime(): Regime | null {
    return this.regime;
  }

  /** The controller's metrics (window, p99s, decisions by kind) on the pipeline's registry. */
  registerMetrics(registry: client.Registry): void {
    registerControllerMetrics(registry, this.controller);
    const last = () => {
      const l = this.controller.decisions();
      return l[l.length - 1];
    };
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({
        name,
        help,
        labelNames: ['controller'],
        registers: [registry],
        collect() {
          this.set({ controller: 'aimd' }, read());
        },
      });
    // Seconds, as every latency the pipeline exports (packages/sluice/src/metrics/prometheus.ts).
    gauge('sluice_controller_interval_p99_seconds', 'End-to-end p99 the last decision used: over its sliding interval of periods (seconds).', () => (last()?.decisionP99Ms ?? last()?.p99Ms ?? 0) / 1000);
    gauge('sluice_controller_slo_p99_seconds', 'The p99 objective the controller holds (seconds).', () => this.sloMs / 1000);
    gauge('sluice_controller_max_items_bound', 'Largest maxItems the queue byte bound allows at the mean item size seen.', () => this.itemBound());
    collectedCounter(registry, 'sluice_controller_regime_changes_total', 'Changes of regime (timer-bound, size-bound, over the SLO, sink saturated, idle), each logged once.', () => this.regimeChanges);
  }
}
