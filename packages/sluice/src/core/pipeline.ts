/**
 * The pipeline: a bounded queue, a window batcher and a batch handler.
 *
 * The queue *is* the batch being formed: a batch is cut from its head when it holds
 * `maxItems`, or `maxBytes` worth, or when its oldest item has waited `maxWaitMs` (an
 * absolute deadline from that item's acceptance stamp), or when a drain asks for it — and
 * only while fewer than `maxInFlight` batches are being written. While the sink is busy,
 * items keep accumulating, so batches grow with load by themselves.
 *
 * Per-item work is kept to a minimum; what can be done per batch is (bench case 1):
 * - No clock read per item. An item accepted into an empty queue opens a batch and is
 *   stamped with a fresh reading, and so is every maxItems-th item queued (the head of a
 *   future full window); any other item queued behind others gets the pipeline's latest
 *   reading (`lastNowMs`: taken at the last reading of any kind), which is never later than
 *   its real acceptance. So a batch's deadline — its head's stamp +
 *   maxWaitMs — is never later than before, and `FlushInfo.waitMs` never shorter.
 * - No window check per item: an item queued behind others changes neither the head's
 *   deadline nor the armed timer; only a full window needs the batcher.
 * - A batch is cut with one slice of the deque, not a shift + push per item.
 *
 * Memory is bounded by the queue bounds plus `maxInFlight` batches being written.
 *
 * Batcher states (see `state()`):
 *   idle       nothing queued, nothing being written
 *   lingering  items queued, waiting for the window to fill or the deadline timer
 *   flushing   `maxInFlight` batches being written (the next cut waits for a completion)
 *   draining   close() called: no new items, everything queued is cut regardless of window
 *   closed     drained; offers throw SLUICE_CLOSED
 */
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { BatchQueue, Deque } from './deque.js';
import { ErrorCode, SluiceError, invalidOption } from './errors.js';
import { Ledger, type LedgerSnapshot } from './ledger.js';
import { resolveQueue, resolveWindow, type QueueOptions, type WindowOptions } from './options.js';
import { RetryExhaustedError, SinkHealth, backoffDelayMs, classifyError, resolveBackoff, writeWithTimeout, type BackoffOptions } from './reliability.js';
import type { BatchHandler, BatchOutcome, Envelope, FlushInfo, FlushReason, PipelineObserver, Sink } from './types.js';
import type { SpillStore } from './spill-store.js';

export type PipelineState = 'idle' | 'lingering' | 'flushing' | 'draining' | 'closed';

/**
 * - `accepted`: the item is in the pipeline and in the ledger.
 * - `dropped`:  accepted and dropped at once (`drop-newest` with a full queue); counted.
 * - `full`:     `block` policy with a full queue: nothing happened; call `put()` to wait.
 */
export type OfferResult = 'accepted' | 'dropped' | 'full';

export interface PipelineOptions<T> {
  sink: Sink<T>;
  /**
   * Turns a batch into an outcome. @default retryTransient(sink, retry): transient failures
   * retried with backoff until the sink is back; a batch the sink rejects for its records
   * (an `item` error) is dropped `sink-failed` and reported through `onError` — give
   * `splitAndRetry` with a DLQ to keep the good records of such a batch.
   */
  handler?: BatchHandler<T>;
  /** Backoff of the default handler (ignored when `handler` is given). @default BACKOFF_DEFAULTS: unlimited */
  retry?: Partial<BackoffOptions>;
  /**
   * Every error the pipeline reports: a batch dropped with an error, a throwing observer, a
   * handler that lost track of items. Observers' own `onError` hooks are called as well.
   * @default one JSON line per error on stderr (`defaultOnError`)
   */
  onError?: (error: unknown, context: PipelineErrorContext) => void;
  window?: Partial<WindowOptions>;
  queue?: Partial<QueueOptions>;
  /** Required by the `spill` policy: where items go when the memory queue is full. */
  spill?: SpillStore<T>;
  clock?: Clock;
  observers?: PipelineObserver<T>[];
  name?: string;
}

/** Where an error reported through `onError` came from. */
export interface PipelineErrorContext {
  pipeline: string;
  /** `batch` (an outcome with dropped items), `observer` (a hook threw), `handler` (items unaccounted). */
  kind: 'batch' | 'observer' | 'handler';
  /** The observer hook that threw (kind `observer`). */
  hook?: string;
  /** Items concerned, and the drop reason (kind `batch`). */
  items?: number;
  reason?: string;
}

/** The default `onError`: one structured JSON line on stderr per error (never throws). */
export function defaultOnError(error: unknown, ctx: PipelineErrorContext): void {
  try {
    const e = error as { name?: string; code?: unknown; message?: string; cause?: { code?: unknown; message?: string } };
    const line = {
      level: 'error',
      msg: 'sluice pipeline error',
      ...ctx,
      error: { name: e?.name, code: e?.code, message: String(e?.message ?? error), cause: e?.cause ? { code: e.cause.code, message: e.cause.message } : undefined },
    };
    process.stderr.write(JSON.stringify(line) + '\n');
  } catch {
    /* nowhere left to report */
  }
}

export interface PipelineStats {
  name: string;
  /** Observer hooks that threw (caught, counted, reported through onError). */
  observerErrors: number;
  state: PipelineState;
  window: WindowOptions;
  queue: QueueOptions;
  queueItems: number;
  queueBytes: number;
  spilledItems: number;
  spilledBytes: number;
  inFlightBatches: number;
  inFlightItems: number;
  blockedProducers: number;
  batches: number;
  flushReasons: Record<FlushReason, number>;
  ledger: LedgerSnapshot;
}

interface Waiter<T> {
  env: Envelope<T>;
  resolve: (r: OfferResult) => void;
  reject: (e: unknown) => void;
  timer: TimerHandle | null;
  done: boolean;
}

/**
 * The default handler. A transient failure (SinkError `transient`, or any other error) is
 * retried whole with capped exponential backoff and random jitter, by default until the sink
 * is back (issue 19: a down sink is backpressure; the queue bound then pushes back on
 * producers). A finite `budget` ends it with a drop `retry-exhausted` (a RetryExhaustedError);
 * an `item` failure drops the batch `sink-failed`. Both are reported through the pipeline's
 * `onError` (by default a line on stderr): never silent. `handler.health` is the sink's health.
 */
export function retryTransient<T>(sink: Sink<T>, retry: Partial<BackoffOptions> = {}, deps: { clock?: Clock; rng?: () => number; health?: SinkHealth } = {}): BatchHandler<T> & { readonly health: SinkHealth } {
  const policy = resolveBackoff(retry);
  const clock = deps.clock ?? systemClock;
  const rng = deps.rng ?? Math.random;
  const health = deps.health ?? new SinkHealth(clock);
  return {
    health,
    async handle(batch) {
      for (let attempt = 1; ; attempt++) {
        try {
          await writeWithTimeout(sink, batch, policy.writeTimeoutMs);
          health.success();
          return { committed: batch, deadLettered: [], dropped: [] };
        } catch (error) {
          if (classifyError(error) === 'item') {
            health.success();
            return { committed: [], deadLettered: [], dropped: batch, dropReason: 'sink-failed', error };
          }
          health.failure(error);
          if (attempt > policy.budget) {
            health.gaveUp();
            return { committed: [], deadLettered: [], dropped: batch, dropReason: 'retry-exhausted', error: new RetryExhaustedError(attempt, error) };
          }
          health.retried();
          await new Promise<void>((r) => clock.setTimer(r, backoffDelayMs(policy, attempt, rng)));
        }
      }
    },
  };
}

/** One write; a failure drops the batch (counted, reason `sink-failed`, reported through onError). Opt-in only. */
export function writeOnce<T>(sink: Sink<T>): BatchHandler<T> {
  return {
    async handle(batch) {
      try {
        await sink.write(batch);
        return { committed: batch, deadLettered: [], dropped: [] };
      } catch (error) {
        return { committed: [], deadLettered: [], dropped: batch, dropReason: 'sink-failed', error };
      }
    },
  };
}

export class Pipeline<T = unknown> {
  readonly name: string;
  readonly ledger = new Ledger();
  private readonly sink: Sink<T>;
  private readonly handler: BatchHandler<T>;
  private readonly clock: Clock;
  private readonly spill: SpillStore<T> | undefined;
  private win: WindowOptions;
  private readonly qopts: QueueOptions;

  private readonly q: BatchQueue<Envelope<T>>;
  private qBytes = 0;
  /** The latest clock reading (see `now()`): the stamp of items queued behind others. */
  private lastNowMs = 0;
  private readonly waiters = new Deque<Waiter<T>>();
  private inFlightBatches = 0;
  private inFlightItems = 0;
  /** First seq of each batch being written (for flush()). */
  private readonly inFlightFirstSeqs: number[] = [];
  private seq = 0;
  private drainSeq = 0;
  private flushWaiters: { target: number; resolve: () => void }[] = [];
  private timer: TimerHandle | null = null;
  private timerAt = Infinity;
  private pumping = false;
  private pumpAgain = false;
  private closing: Promise<void> | null = null;
  private closedResolve: (() => void) | null = null;
  private closed = false;
  private batches = 0;
  private readonly flushReasons: Record<FlushReason, number> = { size: 0, bytes: 0, time: 0, drain: 0 };

  private readonly onAccepted: NonNullable<PipelineObserver<T>['onAccepted']>[];
  private readonly observers: PipelineObserver<T>[];
  private readonly onErrorFn: (error: unknown, ctx: PipelineErrorContext) => void;
  private observerErrors = 0;

  constructor(opts: PipelineOptions<T>) {
    if (!opts || !opts.sink) throw invalidOption('sink', opts?.sink, 'a Sink');
    this.name = opts.name ?? opts.sink.name;
    this.sink = opts.sink;
    this.clock = opts.clock ?? systemClock;
    this.handler = opts.handler ?? retryTransient(opts.sink, opts.retry, { clock: this.clock });
    this.onErrorFn = opts.onError ?? defaultOnError;
    this.win = resolveWindow(opts.window);
    this.qopts = resolveQueue(opts.queue, this.win);
    this.q = new BatchQueue<Envelope<T>>(this.win.maxItems);
    this.spill = opts.spill;
    if (this.qopts.policy === 'spill' && !this.spill) throw invalidOption('spill', undefined, 'a SpillStore when policy is "spill"');
    if (this.spill && this.spill.size() > 0) {
      // A store reopened after a restart: its items were accepted by an earlier process.
      // This pipeline owns them now (in flight until handled) and numbers new items after them.
      this.seq = Math.max(this.seq, this.spill.lastSeq?.() ?? 0);
      this.ledger.accepted += this.spill.size();
    }
    this.observers = opts.observers ?? [];
    this.onAccepted = this.observers.flatMap((o) => {
      if (!o.onAccepted) return [];
      const f = o.onAccepted.bind(o);
      return [
        (env: Envelope<T>) => {
          try {
            f(env);
          } catch (e) {
            this.observerFailed(e, 'onAccepted');
          }
        },
      ];
    });
  }

  /** The sink's health as the handler reports it (the default handler and the reliability decorators have one). */
  sinkHealth(): SinkHealth | undefined {
    const h = (this.handler as unknown as { health?: unknown }).health;
    return h instanceof SinkHealth ? h : undefined;
  }

  /** Reports an error to the observers' onError hooks and to the pipeline's onError; never throws. */
  private reportError(error: unknown, ctx: Omit<PipelineErrorContext, 'pipeline'>): void {
    const full: PipelineErrorContext = { pipeline: this.name, ...ctx };
    for (const o of this.observers) {
      if (!o.onError) continue;
      try {
        o.onError(error);
      } catch {
        this.observerErrors++; // an onError that throws is counted, not reported again (no loop)
      }
    }
    try {
      this.onErrorFn(error, full);
    } catch {
      this.observerErrors++;
    }
  }

  private observerFailed(error: unknown, hook: string): void {
    this.observerErrors++;
    this.reportError(error, { kind: 'observer', hook });
  }

  /** Calls one observer hook; a throw is counted and reported, never propagated. */
  private notify(hook: string, f: () => void): void {
    try {
      f();
    } catch (e) {
      this.observerFailed(e, hook);
    }
  }

  // ---------------------------------------------------------------- producing

  /**
   * Offers one item without waiting. Throws SLUICE_CLOSED after close(), and
   * SLUICE_ITEM_TOO_LARGE for an item that could never fit a batch (not accepted).
   */
  offer(env: Envelope<T>): OfferResult {
    // The common case, kept small enough for V8 to inline into a producer's loop: open, an
    // item that fits a batch, room in the queue (nobody waiting, nothing spilled).
    if (this.closing === null && env.bytes <= this.win.maxBytes && this.hasRoom(env.bytes)) {
      this.accept(env);
      return 'accepted';
    }
    return this.offerSlow(env);
  }

  /** offer() when the common case does not hold: refusals, then the overflow policy. */
  private offerSlow(env: Envelope<T>): OfferResult {
    if (this.closing) {
      this.ledger.rejected++;
      throw new SluiceError(ErrorCode.Closed, `pipeline ${this.name} is closed`);
    }
    if (env.bytes > this.win.maxBytes) {
      this.ledger.rejected++;
      throw new SluiceError(ErrorCode.ItemTooLarge, `item of ${env.bytes} bytes exceeds maxBytes=${this.win.maxBytes}`, {
        details: { bytes: env.bytes, maxBytes: this.win.maxBytes },
      });
    }
    if (this.hasRoom(env.bytes)) {
      this.accept(env);
      return 'accepted';
    }
    switch (this.qopts.policy) {
      case 'drop-newest':
        this.ledger.accepted++;
        this.dropNow([env], 'drop-newest');
        return 'dropped';
      case 'drop-oldest':
        while (!this.hasRoom(env.bytes) && this.q.length > 0) {
          const old = this.q.shift()!;
          this.qBytes -= old.bytes;
          this.dropNow([old], 'drop-oldest');
        }
        this.accept(env);
        return 'accepted';
      case 'spill': {
        // FIFO fairness: producers blocked by the spill's block fallback go first.
        if (this.waiters.length > 0) return 'full';
        const r = this.spillOffer(env);
        if (r) return r;
        return 'full';
      }
      default:
        return 'full';
    }
  }

  /**
   * Offers one item, waiting for space under the `block` policy (and the `spill` policy's
   * block fallback) for up to `blockTimeoutMs`; then rejects with SLUICE_QUEUE_FULL
   * (retryable). Waiting producers are admitted in FIFO order.
   */
  put(env: Envelope<T>): Promise<OfferResult> {
    let r: OfferResult;
    try {
      r = this.offer(env);
    } catch (e) {
      return Promise.reject(e);
    }
    if (r !== 'full') return Promise.resolve(r);
    return new Promise<OfferResult>((resolve, reject) => {
      const w: Waiter<T> = { env, resolve, reject, timer: null, done: false };
      w.timer = this.clock.setTimer(() => {
        if (w.done) return;
        w.done = true;
        // Every waiter has the same timeout, so they time out in FIFO order: the ones done are
        // at the head. Pruned now, not at the next pump, so `blockedProducers` and the FIFO
        // check in hasRoom() see only producers still waiting.
        while (this.waiters.length > 0 && this.waiters.peek()!.done) this.waiters.shift();
        this.ledger.rejected++;
        reject(
          new SluiceError(ErrorCode.QueueFull, `queue full for ${this.qopts.blockTimeoutMs} ms (policy block)`, {
            retryable: true,
            details: { blockTimeoutMs: this.qopts.blockTimeoutMs, queueItems: this.q.length, queueBytes: this.qBytes },
          }),
        );
      }, this.qopts.blockTimeoutMs);
      this.waiters.push(w);
    });
  }

  private hasRoom(bytes: number): boolean {
    // FIFO fairness: while producers wait, newcomers queue behind them.
    if (this.waiters.length > 0) return false;
    // Spilled items are older than anything new: new items must follow them to disk.
    if (this.spill && this.spill.size() > 0) return false;
    return this.q.length < this.qopts.maxItems && this.qBytes + bytes <= this.qopts.maxBytes;
  }

  private spillOffer(env: Envelope<T>): OfferResult | null {
    const spill = this.spill!;
    if (this.spillAppend(env)) return 'accepted';
    if (spill.fallback === 'drop-newest') {
      this.ledger.accepted++;
      this.dropNow([env], 'spill-full');
      return 'dropped';
    }
    return null;
  }

  /** Accepts `env` into the spill store; false (nothing changed) when the store is full. */
  private spillAppend(env: Envelope<T>): boolean {
    env.acceptedAtMs = this.now();
    env.seq = this.seq + 1;
    if (!this.spill!.tryAppend(env, env.seq)) return false;
    this.seq++;
    this.ledger.accepted++;
    this.ledger.bytesIn += env.bytes;
    for (const f of this.onAccepted) f(env);
    this.pump();
    return true;
  }

  /** Reads the clock and remembers the reading (the stamp of items queued behind others). */
  private now(): number {
    const t = this.clock.now();
    this.lastNowMs = t;
    return t;
  }

  private accept(env: Envelope<T>): void {
    const q = this.q;
    if (q.length === 0) {
      this.acceptOpening(env);
      return;
    }
    // Queued behind others: the latest reading, never later than now (performance.now()
    // costs ≈55 ns here, a quarter of Sluice's CPU per item in bench case 1 when it was read
    // per item) — except every maxItems-th item, which will head a batch once the ones
    // before it leave in full windows (a backlog cut by size): it gets a fresh reading, so
    // that batch's deadline runs from when its head really arrived, not from up to one write
    // earlier (which would cut it by the timer before it fills). One reading per window.
    // Behind a head whose deadline timer is armed, only a full window changes anything, and
    // only with a free write slot: otherwise the next completion pumps.
    env.acceptedAtMs = q.length % this.win.maxItems === 0 ? this.now() : this.lastNowMs;
    this.enqueue(env);
    if (this.inFlightBatches < this.win.maxInFlight && (q.length >= this.win.maxItems || this.qBytes >= this.win.maxBytes)) this.pump();
  }

  /** The item opens a batch: a fresh reading starts its deadline. */
  private acceptOpening(env: Envelope<T>): void {
    const now = this.now();
    env.acceptedAtMs = now;
    this.enqueue(env);
    this.pump(now);
  }

  private enqueue(env: Envelope<T>): void {
    env.seq = ++this.seq;
    this.q.push(env);
    const bytes = env.bytes;
    this.qBytes += bytes;
    const ledger = this.ledger;
    ledger.accepted++;
    ledger.bytesIn += bytes;
    const onAccepted = this.onAccepted;
    for (let i = 0; i < onAccepted.length; i++) onAccepted[i](env);
  }

  private dropNow(items: Envelope<T>[], reason: string): void {
    this.ledger.drop(reason, items.length);
    const now = this.now();
    for (const o of this.observers) if (o.onDropped) this.notify('onDropped', () => o.onDropped!(items, reason, now));
  }

  /** A source absorbed `n` redeliveries of records already accepted (not offered again): counted apart. */
  noteRedelivered(n = 1): void {
    this.ledger.redelivered += n;
  }

  // ---------------------------------------------------------------- batching

  /** Changes the window at run time (window controllers use this). */
  setWindow(partial: Partial<Pick<WindowOptions, 'maxItems' | 'maxWaitMs' | 'maxBytes'>>): void {
    const next = resolveWindow({ ...this.win, ...partial });
    if (next.maxItems > this.qopts.maxItems)
      throw invalidOption('maxItems', next.maxItems, `an integer ≤ queue.maxItems (${this.qopts.maxItems})`);
    if (next.maxBytes > this.qopts.maxBytes)
      throw invalidOption('maxBytes', next.maxBytes, `an integer ≤ queue.maxBytes (${this.qopts.maxBytes})`);
    this.win = next;
    this.q.chunkSize = next.maxItems;
    this.pump();
  }

  window(): WindowOptions {
    return { ...this.win };
  }

  private refill(): void {
    // Read spilled items back, in order, as memory frees up.
    const spill = this.spill;
    if (!spill || spill.size() === 0) return;
    while (spill.size() > 0 && this.q.length < this.qopts.maxItems) {
      const next = spill.peekBytes();
      if (this.qBytes + next > this.qopts.maxBytes) break;
      const env = spill.shift();
      if (!env) break;
      this.q.push(env);
      this.qBytes += env.bytes;
    }
  }

  /** `nowMs`: a clock reading taken just before, in the same synchronous call, if any. */
  private pump(nowMs?: number): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        this.pumpOnce(nowMs);
        nowMs = undefined;
        // Space may have freed without a cut (a spill segment released, a refill).
        if (this.waiters.length > 0) this.admitWaiters();
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
  }

  private pumpOnce(nowMs?: number): void {
    this.refill();
    while (this.inFlightBatches < this.win.maxInFlight && this.q.length > 0) {
      const head = this.q.peek()!;
      const now = nowMs ?? this.now();
      nowMs = undefined;
      const deadline = head.acceptedAtMs + this.win.maxWaitMs;
      const due = now >= deadline;
      const draining = this.closing !== null || head.seq <= this.drainSeq;
      const full = this.q.length >= this.win.maxItems || this.qBytes >= this.win.maxBytes;
      if (!full && !due && !draining) {
        this.armTimer(deadline, now);
        return;
      }
      this.cut(now, due);
      this.refill();
    }
    // Idle: no timer left behind. While a batch is being written the timer stays: the next
    // item would open a batch with a later deadline and keep it (see armTimer).
    if (this.q.length === 0 && this.inFlightBatches === 0) this.disarmTimer();
  }

  private armTimer(at: number, now: number): void {
    if (this.timer !== null) {
      // A timer due no later is kept: when it fires, pump() finds the head not yet due and
      // arms the right one. Under steady load this saves a clear + set per batch (the next
      // head's deadline is always later), one timer per maxWaitMs instead.
      if (this.timerAt <= at) return;
      this.clock.clearTimer(this.timer);
    }
    this.timerAt = at;
    this.timer = this.clock.setTimer(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.pump();
    }, at - now);
  }

  private disarmTimer(): void {
    if (this.timer !== null) {
      this.clock.clearTimer(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
    }
  }

  private cut(now: number, due: boolean): void {
    const { maxItems, maxBytes } = this.win;
    const q = this.q;
    const whole = q.length <= maxItems;
    // One slice of the deque, then the byte bound checked on the plain array (at least one
    // item goes, however large); what does not fit goes back to the head, in order.
    const batch = q.takeFront(whole ? q.length : maxItems);
    let bytes: number;
    if (whole && this.qBytes <= maxBytes) bytes = this.qBytes;
    else {
      bytes = batch[0].bytes;
      let n = 1;
      for (; n < batch.length; n++) {
        const b = bytes + batch[n].bytes;
        if (b > maxBytes) break;
        bytes = b;
      }
      if (n < batch.length) q.putBackFront(batch, n);
    }
    this.qBytes -= bytes;
    let reason: FlushReason;
    if (batch.length >= maxItems) reason = 'size';
    else if (bytes >= maxBytes || (this.q.length > 0 && bytes + this.q.peek()!.bytes > maxBytes)) reason = 'bytes';
    else if (due) reason = 'time';
    else reason = 'drain';
    this.flushReasons[reason]++;
    this.batches++;
    this.inFlightBatches++;
    this.inFlightItems += batch.length;
    const firstSeq = batch[0].seq;
    this.inFlightFirstSeqs.push(firstSeq);
    const info: FlushInfo = { reason, items: batch.length, bytes, waitMs: now - batch[0].acceptedAtMs };
    for (const o of this.observers) if (o.onFlush) this.notify('onFlush', () => o.onFlush!(info, now));
    let p: Promise<BatchOutcome<T>>;
    try {
      p = this.handler.handle(batch);
    } catch (error) {
      p = Promise.reject(error);
    }
    // Blocked producers are admitted after the batch is handed over: their continuations run
    // as microtasks, and a sink that issues its write synchronously (FileSink) has it on the
    // way to the disk before they fill the freed room (bench case 2, docs/bench.md "Case 2").
    this.admitWaiters();
    p.then(
      (outcome) => this.complete(batch, firstSeq, outcome),
      (error) => this.complete(batch, firstSeq, { committed: [], deadLettered: [], dropped: batch, dropReason: 'handler-failed', error }),
    ).catch((error) => this.reportError(error, { kind: 'handler' })); // a bug past the guards: reported, never an unhandled rejection
  }

  private admitWaiters(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters.peek()!;
      if (w.done) {
        this.waiters.shift();
        continue;
      }
      // Order: memory holds the oldest items, then the spill, then waiters. A waiter goes to
      // memory only while nothing is spilled; otherwise it follows the spilled items to disk
      // (the spill's block fallback admits waiters as soon as the store has room again).
      const spillHasItems = this.spill !== undefined && this.spill.size() > 0;
      const memoryRoom = this.q.length < this.qopts.maxItems && this.qBytes + w.env.bytes <= this.qopts.maxBytes;
      const toMemory = !spillHasItems && memoryRoom;
      if (!toMemory && this.qopts.policy !== 'spill') return;
      this.waiters.shift();
      if (toMemory) this.accept(w.env);
      else if (!this.spillAppend(w.env)) {
        this.waiters.unshift(w);
        return;
      }
      w.done = true;
      if (w.timer !== null) this.clock.clearTimer(w.timer);
      w.resolve('accepted');
    }
  }

  private complete(batch: Envelope<T>[], firstSeq: number, outcome: BatchOutcome<T>): void {
    const now = this.now();
    this.inFlightBatches--;
    this.inFlightItems -= batch.length;
    const i = this.inFlightFirstSeqs.indexOf(firstSeq);
    if (i >= 0) this.inFlightFirstSeqs.splice(i, 1);

    const c = outcome.committed.length;
    const d = outcome.deadLettered.length;
    const x = outcome.dropped.length;
    this.ledger.committed += c;
    this.ledger.deadLettered += d;
    if (x > 0) this.ledger.drop(outcome.dropReason ?? 'dropped', x);
    // A handler that loses track of an item is a bug; count it rather than hide it.
    const missing = batch.length - c - d - x;
    if (missing !== 0) {
      this.ledger.drop('handler-unaccounted', missing);
      this.reportError(new Error(`handler accounted for ${c + d + x} of ${batch.length} items`), { kind: 'handler', items: missing });
    }
    // Every item of the batch is terminal now: a durable spill store may forget those it held.
    this.spill?.release?.(batch);
    // The next batch goes to the sink before the observers run: their per-item work (a latency
    // record per item, source acks) then overlaps the sink's next write instead of delaying it.
    this.pump(now);
    // Observers are guarded: a throw (an ack on a closed connection) is counted and reported,
    // and never skips the others, the flush waiters or close().
    for (const o of this.observers) {
      if (c > 0 && o.onCommitted) this.notify('onCommitted', () => o.onCommitted!(outcome.committed, now));
      if (d > 0 && o.onDeadLettered) this.notify('onDeadLettered', () => o.onDeadLettered!(outcome.deadLettered, now, outcome.error));
      if (x > 0 && o.onDropped) this.notify('onDropped', () => o.onDropped!(outcome.dropped, outcome.dropReason ?? 'dropped', now));
    }
    if (outcome.error !== undefined && x > 0) this.reportError(outcome.error, { kind: 'batch', items: x, reason: outcome.dropReason ?? 'dropped' });
    this.settleFlushes();
  }

  // ---------------------------------------------------------------- draining

  /** Cuts everything accepted so far regardless of the window; resolves once it is handled. */
  flush(): Promise<void> {
    const target = this.seq;
    if (target > this.drainSeq) this.drainSeq = target;
    const p = new Promise<void>((resolve) => this.flushWaiters.push({ target, resolve }));
    this.pump();
    this.settleFlushes();
    return p;
  }

  private lowestOutstandingSeq(): number {
    let low = Infinity;
    const head = this.q.peek();
    if (head) low = head.seq;
    if (this.spill && this.spill.size() > 0) low = Math.min(low, this.spill.firstSeq());
    for (const s of this.inFlightFirstSeqs) if (s < low) low = s;
    return low;
  }

  private settleFlushes(): void {
    if (this.flushWaiters.length === 0 && !this.closedResolve) return;
    const low = this.lowestOutstandingSeq();
    if (this.flushWaiters.length > 0) {
      const still: typeof this.flushWaiters = [];
      for (const w of this.flushWaiters) (w.target < low ? w.resolve() : still.push(w));
      this.flushWaiters = still;
    }
    if (this.closedResolve && low === Infinity && this.waiters.length === 0) {
      this.closed = true;
      this.disarmTimer();
      const r = this.closedResolve;
      this.closedResolve = null;
      r();
    }
  }

  /**
   * Stops accepting, rejects blocked producers (SLUICE_CLOSED: they keep their items),
   * writes everything queued regardless of the window, and resolves when the last batch
   * is handled. Idempotent. Does not close the sink: its owner does.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      this.closedResolve = resolve;
    });
    while (this.waiters.length > 0) {
      const w = this.waiters.shift()!;
      if (w.done) continue;
      w.done = true;
      if (w.timer !== null) this.clock.clearTimer(w.timer);
      this.ledger.rejected++;
      w.reject(new SluiceError(ErrorCode.Closed, `pipeline ${this.name} closed while the producer waited`));
    }
    this.drainSeq = Infinity;
    this.pump();
    this.settleFlushes();
    return this.closing;
  }

  // ---------------------------------------------------------------- observing

  state(): PipelineState {
    if (this.closed) return 'closed';
    if (this.closing) return 'draining';
    if (this.inFlightBatches >= this.win.maxInFlight) return 'flushing';
    if (this.q.length > 0 || (this.spill?.size() ?? 0) > 0) return 'lingering';
    return this.inFlightBatches > 0 ? 'flushing' : 'idle';
  }

  /** Items held right now, measured from the structures that hold them. */
  inFlight(): number {
    return this.q.length + (this.spill?.size() ?? 0) + this.inFlightItems;
  }

  stats(): PipelineStats {
    return {
      name: this.name,
      observerErrors: this.observerErrors,
      state: this.state(),
      window: { ...this.win },
      queue: { ...this.qopts },
      queueItems: this.q.length,
      queueBytes: this.qBytes,
      spilledItems: this.spill?.size() ?? 0,
      spilledBytes: this.spill?.bytes() ?? 0,
      inFlightBatches: this.inFlightBatches,
      inFlightItems: this.inFlightItems,
      blockedProducers: this.waiters.length,
      batches: this.batches,
      flushReasons: { ...this.flushReasons },
      ledger: this.ledger.snapshot(this.inFlight()),
    };
  }

  /** The sink this pipeline writes to (its owner closes it). */
  sinkRef(): Sink<T> {
    return this.sink;
  }
}
