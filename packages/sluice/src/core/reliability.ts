/**
 * Reliability as decorators around a sink (see docs/poison.md).
 *
 * - `retrying(sink, policy)`: a Sink whose `write` retries *transient* failures of the whole
 *   batch with exponential backoff and jitter, up to `budget` retries; item-level failures
 *   pass straight through (retrying the same bad record cannot help). Never splits.
 * - `splitAndRetry(sink, opts)`: a BatchHandler. Item-level failure → bisect the batch,
 *   commit the halves that succeed, recurse into the failing half until single records are
 *   isolated; a single record that still fails after `itemRetries` extra attempts is
 *   dead-lettered (durably, before the outcome is returned, so a source may ack it).
 *   Splitting spends no retry budget. Transient failures inside a split are retried whole
 *   (that sub-batch) with the same backoff.
 * - `abortWholeBatch(sink, opts)`: the baseline most pipelines ship: on any error retry the
 *   whole batch with the same backoff, never split. One poison record therefore stalls the
 *   partition for ever (with the default unlimited budget): the experiment `poison` shows it.
 *
 * When transient retries run out the batch is not silently lost: it is dead-lettered with
 * error class `transient` and code SLUICE_RETRY_EXHAUSTED (`onExhausted: 'dead-letter'`,
 * the default when a DLQ is given) or dropped, counted under the reason `retry-exhausted`
 * and never acknowledged to the source (so a log or JetStream source redelivers it).
 *
 * Core module: Node built-ins only; the clock and the random source are injected.
 */
import { epochMsOf, systemClock, type Clock } from './clock.js';
import { ErrorCode, SinkError, SluiceError, invalidOption, type FailureClass } from './errors.js';
import { seededRng, type Rng } from './random.js';
import type { BatchHandler, BatchOutcome, Envelope, FixedCostKind, Sink } from './types.js';

// ------------------------------------------------------------------ backoff

export interface BackoffOptions {
  /** Retries after the first attempt (transient failures). Infinity = never give up. @default 5 */
  budget: number;
  /** First backoff delay (ms); doubles per retry. @default 50 */
  baseMs: number;
  /** Cap on one backoff delay (ms). @default 5_000 */
  maxMs: number;
  /** Fraction of each delay drawn at random ("equal jitter"): 0 = none, 1 = full jitter. @default 0.5 */
  jitter: number;
}

export const BACKOFF_DEFAULTS: Readonly<BackoffOptions> = Object.freeze({ budget: 5, baseMs: 50, maxMs: 5_000, jitter: 0.5 });

export function resolveBackoff(p: Partial<BackoffOptions> = {}): BackoffOptions {
  const o = { ...BACKOFF_DEFAULTS, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) } as BackoffOptions;
  if (!(o.budget >= 0) || (Number.isFinite(o.budget) && !Number.isInteger(o.budget))) throw invalidOption('retry.budget', o.budget, 'an integer ≥ 0 or Infinity');
  if (!(o.baseMs >= 0) || !Number.isFinite(o.baseMs)) throw invalidOption('retry.baseMs', o.baseMs, 'a finite number ≥ 0');
  if (!(o.maxMs >= o.baseMs) || !Number.isFinite(o.maxMs)) throw invalidOption('retry.maxMs', o.maxMs, `a finite number ≥ baseMs (${o.baseMs})`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw invalidOption('retry.jitter', o.jitter, 'a number in [0, 1]');
  return o;
}

/** Delay before retry number `retry` (1-based): min(maxMs, baseMs·2^(retry-1)), the jittered share drawn from `rng`. */
export function backoffDelayMs(p: BackoffOptions, retry: number, rng: Rng): number {
  const ceiling = Math.min(p.maxMs, p.baseMs * 2 ** Math.min(60, retry - 1));
  return ceiling * (1 - p.jitter) + ceiling * p.jitter * rng();
}

/** Shared by the decorators: where time and randomness come from, and an optional stop. */
export interface ReliabilityDeps {
  clock?: Clock;
  rng?: Rng;
  /** Aborting ends any backoff wait at once and makes the decorator give up (see each one). */
  signal?: AbortSignal;
  /** Maps a thrown error to its class. @default SinkError.failureClass; anything else is transient */
  classify?: (error: unknown) => FailureClass;
}

export function classifyError(error: unknown): FailureClass {
  return error instanceof SinkError ? error.failureClass : 'transient';
}

function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  if (ms <= 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const onAbort = () => {
      clock.clearTimer(t);
      resolve();
    };
    const t = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// ------------------------------------------------------------------ retrying

export interface RetryStats {
  /** Calls made to the wrapped sink. */
  calls: number;
  /** Of which retries after a transient failure. */
  retries: number;
  /** Batches given up after the budget ran out. */
  exhausted: number;
  /** Transient failures flagged `alerting` (ENOSPC …): page someone even though retried. */
  alerts: number;
}

/** Thrown by `retrying` once the budget is spent: transient, code SLUICE_RETRY_EXHAUSTED, `cause` = last error. */
export class RetryExhaustedError extends SluiceError {
  readonly attempts: number;
  constructor(attempts: number, cause: unknown) {
    super(ErrorCode.RetryExhausted, `gave up after ${attempts} attempts: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
      retryable: true,
      details: { attempts },
    });
    this.name = 'RetryExhaustedError';
    this.attempts = attempts;
  }
}

/** A Sink that retries transient failures of the whole batch with backoff. Item errors pass through. */
export class RetryingSink<T = unknown> implements Sink<T> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;
  readonly policy: BackoffOptions;
  private readonly st: RetryStats = { calls: 0, retries: 0, exhausted: 0, alerts: 0 };
  private readonly clock: Clock;
  private readonly rng: Rng;
  private readonly classify: (e: unknown) => FailureClass;

  constructor(
    readonly inner: Sink<T>,
    policy: Partial<BackoffOptions> = {},
    private readonly deps: ReliabilityDeps = {},
  ) {
    this.name = inner.name;
    this.fixedCostKind = inner.fixedCostKind;
    this.policy = resolveBackoff(policy);
    this.clock = deps.clock ?? systemClock;
    this.rng = deps.rng ?? seededRng(0x7e7);
    this.classify = deps.classify ?? classifyError;
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.st.calls++;
      try {
        await this.inner.write(batch);
        return;
      } catch (error) {
        if (this.classify(error) === 'item') throw error;
        if (error instanceof SinkError && error.alerting) this.st.alerts++;
        if (attempt > this.policy.budget || this.deps.signal?.aborted) {
          this.st.exhausted++;
          throw new RetryExhaustedError(attempt, error);
        }
        this.st.retries++;
        await sleep(this.clock, backoffDelayMs(this.policy, attempt, this.rng), this.deps.signal);
      }
    }
  }

  stats(): RetryStats {
    return { ...this.st };
  }

  fixedCostOps(): number {
    return this.inner.fixedCostOps();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export function retrying<T>(sink: Sink<T>, policy: Partial<BackoffOptions> = {}, deps: ReliabilityDeps = {}): RetryingSink<T> {
  return new RetryingSink(sink, policy, deps);
}

// ------------------------------------------------------------------ dead letters

/** One record handed to the dead-letter writer, with what is known of its failure. */
export interface DeadLetter<T = unknown> {
  env: Envelope<T>;
  error: unknown;
  failureClass: FailureClass;
  /** Sink calls that included this record and failed. */
  attempts: number;
  /** Monotonic ms (pipeline clock) of the first failure that included this record. */
  firstFailureAtMs: number;
  deadLetteredAtMs: number;
}

/**
 * Where dead letters go. `write` resolves only once the letters are durable: the pipeline
 * reports them dead-lettered (and the source acknowledges them) right after.
 * Implementations live in src/dlq/ (JSON lines, PostgreSQL, JetStream).
 */
export interface DeadLetterWriter<T = unknown> {
  write(letters: readonly DeadLetter<T>[]): Promise<void>;
}

/** An in-memory writer for tests and for runs without a DLQ (letters are kept, not durable). */
export class MemoryDeadLetters<T = unknown> implements DeadLetterWriter<T> {
  readonly letters: DeadLetter<T>[] = [];
  async write(letters: readonly DeadLetter<T>[]): Promise<void> {
    this.letters.push(...letters);
  }
  ids(): string[] {
    return this.letters.map((l) => l.env.id ?? '');
  }
}

// ------------------------------------------------------------------ split and retry

export interface SplitAndRetryOptions<T> {
  dlq: DeadLetterWriter<T>;
  /** Extra attempts for a single isolated record before it is dead-lettered. @default 0 */
  itemRetries?: number;
  /** Backoff for transient failures (whole batch or sub-batch) and for item retries. */
  retry?: Partial<BackoffOptions>;
  /** What to do with a (sub-)batch whose transient retries ran out. @default 'dead-letter' */
  onExhausted?: 'dead-letter' | 'drop';
}

/** Cost of isolating the poison of one batch that failed with an item-level error. */
export interface Isolation {
  batchSize: number;
  /** Records dead-lettered from this batch (k). */
  deadLettered: number;
  /** Sink calls spent on this batch, the first failing one included. */
  sinkCalls: number;
  /** 1 + 2k⌈log2 B⌉ + k·itemRetries: the bound bisection guarantees. */
  bound: number;
  /** Time from the batch's first write to its outcome, DLQ write included (ms, handler clock). */
  elapsedMs: number;
}

export interface SplitStats {
  batches: number;
  /** Calls made to the sink (all attempts, all sub-batches). */
  sinkCalls: number;
  /** Sub-batch writes caused by splitting (excluding each batch's first write). */
  splitCalls: number;
  transientRetries: number;
  deadLettered: number;
  exhaustedDropped: number;
  isolations: Isolation[];
}

export function isolationBound(batchSize: number, k: number, itemRetries = 0): number {
  if (k === 0) return 1;
  return 1 + 2 * k * Math.ceil(Math.log2(Math.max(1, batchSize))) + k * itemRetries;
}

interface Failure {
  attempts: number;
  firstAtMs: number;
}

export class SplitAndRetryHandler<T = unknown> implements BatchHandler<T> {
  private readonly st: SplitStats = { batches: 0, sinkCalls: 0, splitCalls: 0, transientRetries: 0, deadLettered: 0, exhaustedDropped: 0, isolations: [] };
  private readonly clock: Clock;
  private readonly rng: Rng;
  private readonly classify: (e: unknown) => FailureClass;
  private readonly policy: BackoffOptions;
  private readonly itemRetries: number;
  private readonly onExhausted: 'dead-letter' | 'drop';

  constructor(
    private readonly sink: Sink<T>,
    private readonly opts: SplitAndRetryOptions<T>,
    private readonly deps: ReliabilityDeps = {},
  ) {
    if (!opts?.dlq) throw invalidOption('dlq', opts?.dlq, 'a DeadLetterWriter');
    this.clock = deps.clock ?? systemClock;
    this.rng = deps.rng ?? seededRng(0x5b1);
    this.classify = deps.classify ?? classifyError;
    this.policy = resolveBackoff(opts.retry);
    this.itemRetries = opts.itemRetries ?? 0;
    if (!Number.isInteger(this.itemRetries) || this.itemRetries < 0) throw invalidOption('itemRetries', opts.itemRetries, 'an integer ≥ 0');
    this.onExhausted = opts.onExhausted ?? 'dead-letter';
  }

  stats(): SplitStats {
    return { ...this.st, isolations: [...this.st.isolations] };
  }

  async handle(batch: readonly Envelope<T>[]): Promise<BatchOutcome<T>> {
    this.st.batches++;
    const startedAtMs = this.clock.now();
    const committed: Envelope<T>[] = [];
    const letters: DeadLetter<T>[] = [];
    const dropped: Envelope<T>[] = [];
    const calls = { n: 0 };
    let lastError: unknown;
    let sawItemError = false;

    const visit = async (items: readonly Envelope<T>[], prior: Failure | null): Promise<void> => {
      const r = await this.writeTransientRetried(items, calls);
      if (r.ok) {
        committed.push(...items);
        return;
      }
      lastError = r.error;
      const failure: Failure = prior ? { attempts: prior.attempts + r.attempts, firstAtMs: prior.firstAtMs } : { attempts: r.attempts, firstAtMs: r.firstAtMs };
      if (r.cls === 'transient') {
        // Budget spent on a (sub-)batch that no record is blamed for.
        if (this.onExhausted === 'drop') dropped.push(...items);
        else for (const env of items) letters.push(this.letter(env, r.error, 'transient', failure));
        return;
      }
      sawItemError = true;
      if (items.length === 1) {
        // Isolated: give it its own retry budget (a lock timeout can masquerade as data trouble).
        let f = failure;
        let err = r.error;
        for (let i = 0; i < this.itemRetries; i++) {
          await sleep(this.clock, backoffDelayMs(this.policy, i + 1, this.rng), this.deps.signal);
          const again = await this.writeTransientRetried(items, calls);
          if (again.ok) {
            committed.push(...items);
            return;
          }
          f = { attempts: f.attempts + again.attempts, firstAtMs: f.firstAtMs };
          err = again.error;
        }
        letters.push(this.letter(items[0], err, 'item', f));
        return;
      }
      // Bisect. Splitting spends no retry budget; each half starts afresh.
      const mid = items.length >>> 1;
      await visit(items.slice(0, mid), failure);
      await visit(items.slice(mid), failure);
    };

    await visit(batch, null);
    const isolated = letters.filter((l) => l.failureClass === 'item').length;
    let dropReason: string | undefined = dropped.length > 0 ? 'retry-exhausted' : undefined;
    if (letters.length > 0) {
      try {
        await this.opts.dlq.write(letters); // durable before the outcome is reported (and the source acks)
      } catch (error) {
        // Not durable, so not dead-lettered: counted as dropped and never acknowledged, so the
        // source redelivers them (the committed halves stay committed and acked).
        dropped.push(...letters.map((l) => l.env));
        letters.length = 0;
        dropReason = 'dlq-write-failed';
        lastError = error;
      }
    }
    this.st.sinkCalls += calls.n;
    this.st.splitCalls += Math.max(0, calls.n - 1);
    this.st.deadLettered += letters.length;
    this.st.exhaustedDropped += dropped.length;
    if (sawItemError) {
      this.st.isolations.push({ batchSize: batch.length, deadLettered: isolated, sinkCalls: calls.n, bound: isolationBound(batch.length, isolated, this.itemRetries), elapsedMs: this.clock.now() - startedAtMs });
    }
    return {
      committed,
      deadLettered: letters.map((l) => l.env),
      dropped,
      dropReason,
      error: letters.length + dropped.length > 0 ? lastError : undefined,
    };
  }

  private letter(env: Envelope<T>, error: unknown, failureClass: FailureClass, f: Failure): DeadLetter<T> {
    return { env, error, failureClass, attempts: f.attempts, firstFailureAtMs: f.firstAtMs, deadLetteredAtMs: this.clock.now() };
  }

  /** One logical write: transient failures retried whole with backoff; item failures returned at once. */
  private async writeTransientRetried(
    items: readonly Envelope<T>[],
    calls: { n: number },
  ): Promise<{ ok: true } | { ok: false; cls: FailureClass; error: unknown; attempts: number; firstAtMs: number }> {
    let firstAtMs = NaN;
    for (let attempt = 1; ; attempt++) {
      calls.n++;
      try {
        await this.sink.write(items);
        return { ok: true };
      } catch (error) {
        if (Number.isNaN(firstAtMs)) firstAtMs = this.clock.now();
        const cls = this.classify(error);
        if (cls === 'item') return { ok: false, cls, error, attempts: attempt, firstAtMs };
        if (attempt > this.policy.budget || this.deps.signal?.aborted)
          return { ok: false, cls, error: new RetryExhaustedError(attempt, error), attempts: attempt, firstAtMs };
        this.st.transientRetries++;
        await sleep(this.clock, backoffDelayMs(this.policy, attempt, this.rng), this.deps.signal);
      }
    }
  }
}

export function splitAndRetry<T>(sink: Sink<T>, opts: SplitAndRetryOptions<T>, deps: ReliabilityDeps = {}): SplitAndRetryHandler<T> {
  return new SplitAndRetryHandler(sink, opts, deps);
}

// ------------------------------------------------------------------ baseline

export interface AbortWholeBatchStats {
  batches: number;
  sinkCalls: number;
  retries: number;
  /** Batches abandoned because the signal was aborted (reported as dropped `aborted`). */
  abandoned: number;
}

/**
 * The baseline: any error → retry the whole batch with the same backoff, never split.
 * With the default `budget: Infinity` a single poison record blocks the pipeline until the
 * `signal` aborts (the batch is then reported dropped with reason `aborted`, never acked).
 * With a finite budget the batch is dropped as `retry-exhausted` — the data loss the
 * baseline trades for progress.
 */
export class AbortWholeBatchHandler<T = unknown> implements BatchHandler<T> {
  private readonly st: AbortWholeBatchStats = { batches: 0, sinkCalls: 0, retries: 0, abandoned: 0 };
  private readonly policy: BackoffOptions;
  private readonly clock: Clock;
  private readonly rng: Rng;

  constructor(
    private readonly sink: Sink<T>,
    policy: Partial<BackoffOptions> = {},
    private readonly deps: ReliabilityDeps = {},
  ) {
    this.policy = resolveBackoff({ budget: Infinity, ...policy });
    this.clock = deps.clock ?? systemClock;
    this.rng = deps.rng ?? seededRng(0xab0);
  }

  stats(): AbortWholeBatchStats {
    return { ...this.st };
  }

  async handle(batch: readonly Envelope<T>[]): Promise<BatchOutcome<T>> {
    this.st.batches++;
    for (let attempt = 1; ; attempt++) {
      if (this.deps.signal?.aborted) {
        this.st.abandoned++;
        return { committed: [], deadLettered: [], dropped: batch, dropReason: 'aborted' };
      }
      this.st.sinkCalls++;
      try {
        await this.sink.write(batch);
        return { committed: batch, deadLettered: [], dropped: [] };
      } catch (error) {
        if (attempt > this.policy.budget) return { committed: [], deadLettered: [], dropped: batch, dropReason: 'retry-exhausted', error };
        this.st.retries++;
        await sleep(this.clock, backoffDelayMs(this.policy, attempt, this.rng), this.deps.signal);
      }
    }
  }
}

export function abortWholeBatch<T>(sink: Sink<T>, policy: Partial<BackoffOptions> = {}, deps: ReliabilityDeps = {}): AbortWholeBatchHandler<T> {
  return new AbortWholeBatchHandler(sink, policy, deps);
}

/** Epoch ms of a dead letter's monotonic timestamps (system clock base). */
export function letterEpochMs(monotonicMs: number): number {
  return epochMsOf(monotonicMs);
}
