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
 * Transient vs item (issue 19): a sink that is down is backpressure, not poison. A transient
 * failure (connection refused/reset, a timeout, SQLSTATE 08/40/53/57 or an unknown one, EIO,
 * ENOSPC — see `classifyPgError`, `classifyFsError`) is retried whole with capped exponential
 * backoff and random jitter, by default for ever (`budget: Infinity`): the source keeps the
 * data and fetching pauses behind the full queue. Only an `item` failure splits and
 * dead-letters. Kafka Connect (`errors.tolerance` covers converter/transform failures, not a
 * sink that is down), Vector and the OpenTelemetry Collector (retry on a down exporter, DLQ
 * only for rejected records) draw the same line.
 *
 * With a finite `budget`, a (sub-)batch whose transient retries run out fails loudly: it is
 * reported dropped with reason `retry-exhausted` and a RetryExhaustedError (code
 * SLUICE_RETRY_EXHAUSTED), never acknowledged to the source (a log or JetStream source
 * redelivers it), and the pipeline reports it through `onError`. It is dead-lettered instead
 * only with the explicit opt-in `deadLetterOnRetryExhausted: true`.
 *
 * A write that has not settled after `writeTimeoutMs` is a transient failure (sinkCode
 * ETIMEDOUT) and retried; the abandoned call may still complete in the background, which the
 * idempotent sinks absorb (file sink `dedupeById`, PostgreSQL primary key).
 *
 * Sink health: every decorator reports each write's result to a `SinkHealth` (one is made
 * when none is given; share one across decorators of the same sink). It knows whether the
 * sink is up, since when it is down, how many outages and retries there were, and calls
 * `onDown`/`onUp(outageMs)` listeners once per transition: the hooks for `/healthz`,
 * `sluice_sink_up` and the "sink went down" / "came back after N s" log lines.
 *
 * Core module: Node built-ins only; the clock and the random source are injected.
 */
import { epochMsOf, systemClock, type Clock } from './clock.js';
import { ErrorCode, SinkError, SluiceError, invalidOption, type FailureClass } from './errors.js';
import type { Rng } from './random.js';
import type { BatchHandler, BatchOutcome, Envelope, FixedCostKind, Sink } from './types.js';

// ------------------------------------------------------------------ backoff

export interface BackoffOptions {
  /**
   * Retries after the first attempt (transient failures). Infinity = retry until the sink is
   * back (a down sink is backpressure). A finite budget makes an outage longer than the
   * backoff sum fail the batch loudly (dropped `retry-exhausted`, never acked). @default Infinity
   */
  budget: number;
  /** First backoff delay (ms); doubles per retry. @default 50 */
  baseMs: number;
  /** Cap on one backoff delay (ms). @default 5_000 */
  maxMs: number;
  /**
   * Fraction of each delay drawn at random ("equal jitter"): 0 = none, 1 = full jitter. The
   * draw comes from `Math.random` unless an rng is injected (tests), so workers that failed
   * together do not retry in lockstep. @default 0.5
   */
  jitter: number;
  /**
   * A sink call that has not settled after this long is a transient failure (ETIMEDOUT) and
   * retried. Well above a normal batch write (sub-ms for the file sink, a few ms for
   * PostgreSQL in bench case 2); Infinity disables it. @default 30_000
   */
  writeTimeoutMs: number;
}

export const BACKOFF_DEFAULTS: Readonly<BackoffOptions> = Object.freeze({ budget: Infinity, baseMs: 50, maxMs: 5_000, jitter: 0.5, writeTimeoutMs: 30_000 });

export function resolveBackoff(p: Partial<BackoffOptions> = {}): BackoffOptions {
  const o = { ...BACKOFF_DEFAULTS, ...Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) } as BackoffOptions;
  if (!(o.budget >= 0) || (Number.isFinite(o.budget) && !Number.isInteger(o.budget))) throw invalidOption('retry.budget', o.budget, 'an integer ≥ 0 or Infinity');
  if (!(o.baseMs >= 0) || !Number.isFinite(o.baseMs)) throw invalidOption('retry.baseMs', o.baseMs, 'a finite number ≥ 0');
  if (!(o.maxMs >= o.baseMs) || !Number.isFinite(o.maxMs)) throw invalidOption('retry.maxMs', o.maxMs, `a finite number ≥ baseMs (${o.baseMs})`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw invalidOption('retry.jitter', o.jitter, 'a number in [0, 1]');
  if (!(o.writeTimeoutMs > 0)) throw invalidOption('retry.writeTimeoutMs', o.writeTimeoutMs, 'a number > 0 or Infinity');
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
  /** Jitter draws. @default Math.random (a fixed seed would make every worker retry in lockstep) */
  rng?: Rng;
  /** Where write results are reported (share one per sink). @default a new SinkHealth */
  health?: SinkHealth;
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

/** Thrown (transient, sinkCode ETIMEDOUT) for a sink call that outlived `writeTimeoutMs`. */
export function writeTimeoutError(sinkName: string, ms: number): SinkError {
  return new SinkError('transient', `${sinkName}: write did not settle within ${ms} ms (writeTimeoutMs)`, { sinkCode: 'ETIMEDOUT', details: { writeTimeoutMs: ms } });
}

/**
 * One sink call bounded by `ms`. On timeout the call is abandoned (its late result ignored,
 * its rejection handled) and a transient error thrown: retrying rewrites the batch, which
 * the idempotent sinks absorb if the abandoned call did commit.
 */
export function writeWithTimeout<T>(sink: Sink<T>, batch: readonly Envelope<T>[], ms: number): Promise<void> {
  let p: Promise<void>;
  try {
    p = sink.write(batch);
  } catch (e) {
    return Promise.reject(e);
  }
  if (!Number.isFinite(ms)) return p;
  // A wall-clock bound on real timers, even when a fake clock is injected: a test's clock
  // jumping ahead must not time out a write that is merely waiting for the test.
  return new Promise<void>((resolve, reject) => {
    // Not unref'd: a write in flight keeps the process alive until it settles or times out.
    const t = setTimeout(() => reject(writeTimeoutError(sink.name, ms)), ms);
    p.then(
      () => {
        clearTimeout(t);
        resolve();
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

// ------------------------------------------------------------------ sink health

export interface SinkHealthSnapshot {
  /** false from the first transient failure until the next successful (or item-rejected) write. */
  up: boolean;
  /** Monotonic ms (health clock) when the current outage began, or null when up. */
  downSinceMs: number | null;
  /** ms the sink has been down so far (0 when up). */
  downForMs: number;
  /** Outages seen (transitions up → down). */
  outages: number;
  /** Length of the last finished outage (ms), or null. */
  lastOutageMs: number | null;
  /** Transient failures reported (every failed attempt). */
  transientFailures: number;
  /** Retries scheduled after a transient failure. */
  retries: number;
  /** Writes that outlived writeTimeoutMs. */
  timeouts: number;
  /** (Sub-)batches given up after a finite budget ran out. */
  exhausted: number;
  /** Transient failures flagged `alerting` (ENOSPC, EIO, permission …). */
  alerts: number;
  /** The last transient failure: Sluice/driver code and message, or null. */
  lastError: { code: string; sinkCode: string | null; message: string } | null;
}

export type SinkDownListener = (error: unknown, info: { sinkCode: string | null; message: string; atMs: number }) => void;
export type SinkUpListener = (outageMs: number, info: { atMs: number; retries: number }) => void;

/**
 * Up/down state and retry counters of one sink, fed by the reliability decorators. Listeners
 * run synchronously, once per transition; a throwing listener is caught and ignored (it must
 * not break the write path).
 */
export class SinkHealth {
  private up = true;
  private downSince: number | null = null;
  private retriesAtDown = 0;
  private readonly downL: SinkDownListener[] = [];
  private readonly upL: SinkUpListener[] = [];
  private readonly st = { outages: 0, lastOutageMs: null as number | null, transientFailures: 0, retries: 0, timeouts: 0, exhausted: 0, alerts: 0 };
  private lastError: SinkHealthSnapshot['lastError'] = null;

  constructor(private readonly clock: Clock = systemClock) {}

  /** Called once when the sink goes down (first transient failure after being up). */
  onDown(fn: SinkDownListener): () => void {
    this.downL.push(fn);
    return () => this.downL.splice(this.downL.indexOf(fn) >>> 0, 1);
  }

  /** Called once when it comes back, with the outage length in ms. */
  onUp(fn: SinkUpListener): () => void {
    this.upL.push(fn);
    return () => this.upL.splice(this.upL.indexOf(fn) >>> 0, 1);
  }

  isUp(): boolean {
    return this.up;
  }

  /** A write succeeded, or was rejected because of its records (the sink answered). */
  success(): void {
    if (this.up) return;
    const atMs = this.clock.now();
    const outageMs = atMs - (this.downSince ?? atMs);
    this.up = true;
    this.downSince = null;
    this.st.lastOutageMs = outageMs;
    const retries = this.st.retries - this.retriesAtDown;
    for (const f of [...this.upL]) {
      try {
        f(outageMs, { atMs, retries });
      } catch {
        /* a listener must not break the write path */
      }
    }
  }

  /** A write failed transiently. */
  failure(error: unknown): void {
    this.st.transientFailures++;
    const inner = error instanceof SinkError ? error : (error as { cause?: unknown })?.cause instanceof SinkError ? ((error as { cause: SinkError }).cause) : null;
    if (inner?.alerting) this.st.alerts++;
    if (inner?.sinkCode === 'ETIMEDOUT' && inner.details?.writeTimeoutMs !== undefined) this.st.timeouts++;
    const sinkCode = inner?.sinkCode ?? ((error as { code?: unknown })?.code?.toString() ?? null);
    const message = String((error as Error)?.message ?? error);
    this.lastError = { code: error instanceof SluiceError ? error.code : ErrorCode.SinkTransient, sinkCode, message };
    if (!this.up) return;
    const atMs = this.clock.now();
    this.up = false;
    this.downSince = atMs;
    this.retriesAtDown = this.st.retries;
    this.st.outages++;
    for (const f of [...this.downL]) {
      try {
        f(error, { sinkCode, message, atMs });
      } catch {
        /* a listener must not break the write path */
      }
    }
  }

  retried(): void {
    this.st.retries++;
  }

  gaveUp(): void {
    this.st.exhausted++;
  }

  snapshot(): SinkHealthSnapshot {
    return {
      up: this.up,
      downSinceMs: this.downSince,
      downForMs: this.downSince === null ? 0 : this.clock.now() - this.downSince,
      ...this.st,
      lastError: this.lastError,
    };
  }
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
  readonly health: SinkHealth;
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
    this.rng = deps.rng ?? Math.random;
    this.classify = deps.classify ?? classifyError;
    this.health = deps.health ?? new SinkHealth(this.clock);
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.st.calls++;
      try {
        await writeWithTimeout(this.inner, batch, this.policy.writeTimeoutMs);
        this.health.success();
        return;
      } catch (error) {
        if (this.classify(error) === 'item') {
          this.health.success();
          throw error;
        }
        this.health.failure(error);
        if (error instanceof SinkError && error.alerting) this.st.alerts++;
        if (attempt > this.policy.budget || this.deps.signal?.aborted) {
          this.st.exhausted++;
          this.health.gaveUp();
          throw new RetryExhaustedError(attempt, error);
        }
        this.st.retries++;
        this.health.retried();
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
  /**
   * Opt-in: dead-letter a (sub-)batch whose transient retries ran out (a finite budget), error
   * class `transient`, code SLUICE_RETRY_EXHAUSTED. Off by default: those records did nothing
   * wrong, so they are reported dropped `retry-exhausted` (never acked, redelivered) and the
   * failure is loud. `sluice reconcile` reports DLQ entries of class `transient` as a finding.
   * @default false
   */
  deadLetterOnRetryExhausted?: boolean;
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
  /** Dropped because the decorator's signal was aborted while retrying (never acked). */
  abortedDropped: number;
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
  readonly health: SinkHealth;
  private readonly st: SplitStats = { batches: 0, abortedDropped: 0, sinkCalls: 0, splitCalls: 0, transientRetries: 0, deadLettered: 0, exhaustedDropped: 0, isolations: [] };
  private readonly clock: Clock;
  private readonly rng: Rng;
  private readonly classify: (e: unknown) => FailureClass;
  private readonly policy: BackoffOptions;
  private readonly itemRetries: number;
  private readonly deadLetterExhausted: boolean;

  constructor(
    private readonly sink: Sink<T>,
    private readonly opts: SplitAndRetryOptions<T>,
    private readonly deps: ReliabilityDeps = {},
  ) {
    if (!opts?.dlq) throw invalidOption('dlq', opts?.dlq, 'a DeadLetterWriter');
    this.clock = deps.clock ?? systemClock;
    this.rng = deps.rng ?? Math.random;
    this.classify = deps.classify ?? classifyError;
    this.health = deps.health ?? new SinkHealth(this.clock);
    this.policy = resolveBackoff(opts.retry);
    this.itemRetries = opts.itemRetries ?? 0;
    if (!Number.isInteger(this.itemRetries) || this.itemRetries < 0) throw invalidOption('itemRetries', opts.itemRetries, 'an integer ≥ 0');
    const dl = opts.deadLetterOnRetryExhausted ?? false;
    if (typeof dl !== 'boolean') throw invalidOption('deadLetterOnRetryExhausted', dl, 'a boolean');
    this.deadLetterExhausted = dl;
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
    const aborted: Envelope<T>[] = [];
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
        // Budget spent (or the stop signal) on a (sub-)batch no record is blamed for: loud,
        // never acked, never dead-lettered unless the caller opted in.
        if (r.aborted) aborted.push(...items);
        else if (this.deadLetterExhausted) for (const env of items) letters.push(this.letter(env, r.error, 'transient', failure));
        else dropped.push(...items);
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
    // One drop reason per outcome: `aborted` (a stop) wins over `retry-exhausted` only when
    // nothing else was dropped; both are never acked.
    let dropReason: string | undefined = dropped.length > 0 ? 'retry-exhausted' : aborted.length > 0 ? 'aborted' : undefined;
    if (aborted.length > 0) {
      dropped.push(...aborted);
      this.st.abortedDropped += aborted.length;
    }
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
    this.st.exhaustedDropped += dropped.length - aborted.length;
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
  ): Promise<{ ok: true } | { ok: false; cls: FailureClass; error: unknown; attempts: number; firstAtMs: number; aborted?: boolean }> {
    let firstAtMs = NaN;
    for (let attempt = 1; ; attempt++) {
      calls.n++;
      try {
        await writeWithTimeout(this.sink, items, this.policy.writeTimeoutMs);
        this.health.success();
        return { ok: true };
      } catch (error) {
        if (Number.isNaN(firstAtMs)) firstAtMs = this.clock.now();
        const cls = this.classify(error);
        if (cls === 'item') {
          this.health.success(); // it answered: up
          return { ok: false, cls, error, attempts: attempt, firstAtMs };
        }
        this.health.failure(error);
        if (this.deps.signal?.aborted) return { ok: false, cls, error: new RetryExhaustedError(attempt, error), attempts: attempt, firstAtMs, aborted: true };
        if (attempt > this.policy.budget) {
          this.health.gaveUp();
          return { ok: false, cls, error: new RetryExhaustedError(attempt, error), attempts: attempt, firstAtMs };
        }
        this.st.transientRetries++;
        this.health.retried();
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
  readonly health: SinkHealth;
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
    this.rng = deps.rng ?? Math.random;
    this.health = deps.health ?? new SinkHealth(this.clock);
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
        await writeWithTimeout(this.sink, batch, this.policy.writeTimeoutMs);
        this.health.success();
        return { committed: batch, deadLettered: [], dropped: [] };
      } catch (error) {
        if (classifyError(error) === 'item') this.health.success();
        else this.health.failure(error);
        if (attempt > this.policy.budget) {
          this.health.gaveUp();
          return { committed: [], deadLettered: [], dropped: batch, dropReason: 'retry-exhausted', error: new RetryExhaustedError(attempt, error) };
        }
        this.st.retries++;
        this.health.retried();
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
