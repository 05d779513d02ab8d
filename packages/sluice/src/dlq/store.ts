/**
 * Dead-letter stores. An entry keeps everything needed to understand a failure and to
 * re-drive the record later (issue 6): the original bytes, the stable id, where it came from
 * (source and offset), how it failed (class, Sluice code, driver code, message, attempts,
 * first-failure and dead-letter times) and which pipeline and sink rejected it.
 *
 * `append()` resolves only once the entries are durable (fdatasync, a committed INSERT, a
 * JetStream PubAck): the pipeline reports them dead-lettered, and the source acknowledges
 * them, only after that.
 */
import { epochMsOf } from '../core/clock.js';
import { ErrorCode, SinkError, SluiceError, isSluiceError, type FailureClass } from '../core/errors.js';
import type { DeadLetter, DeadLetterWriter } from '../core/reliability.js';
import type { Envelope } from '../core/types.js';
import { SINK_TARGET_ATTR } from '../sinks/routing.js';

export const DLQ_FORMAT_VERSION = 1;

export interface DeadLetterEntry {
  /** Format version of this entry. */
  v: number;
  /** The record's stable id (idempotence key in the sinks). */
  id: string;
  /** Where the record came from: `embedded:<log path>`, `jetstream:<stream>/<consumer>`, `load`. */
  source: string;
  /** Its offset there (log offset, JetStream stream sequence), or null. */
  offset: number | null;
  pipeline: string;
  /** The sink's name; `<name>:<target>` for a tenant's own table or stream (`postgres:team_b_logs`). */
  sink: string;
  errorClass: FailureClass;
  /** Sluice code (SLUICE_SINK_ITEM, SLUICE_RETRY_EXHAUSTED …). */
  code: string;
  /** Driver code: SQLSTATE, errno, VALIDATION … or null. */
  sinkCode: string | null;
  message: string;
  /** Sink calls that included the record and failed. */
  attempts: number;
  /** ISO-8601 UTC. */
  firstFailureAt: string;
  deadLetteredAt: string;
  /** The original record bytes, base64 (they need not be valid UTF-8). */
  data: string;
}

export interface DeadLetterStore {
  /** `file:<path>`, `postgres:<table>`, `jetstream:<stream>`. */
  readonly describe: string;
  /** Makes the entries durable, then resolves. */
  append(entries: readonly DeadLetterEntry[]): Promise<void>;
  /** Every entry, oldest first. */
  list(): Promise<DeadLetterEntry[]>;
  count(): Promise<number>;
  close(): Promise<void>;
}

export interface DeadLetterContext {
  pipeline: string;
  sink: string;
  /** Source name for entries whose envelope carries none. */
  source: string;
}

/** The record bytes of an envelope: the producer's `raw`, else the JSON of its value. */
export function recordBytes(env: Envelope<unknown>): Buffer {
  if (env.raw) return env.raw;
  return Buffer.from(typeof env.value === 'string' ? env.value : JSON.stringify(env.value) ?? '');
}

export function toEntry(l: DeadLetter<unknown>, ctx: DeadLetterContext): DeadLetterEntry {
  const e = l.error;
  const inner = e instanceof SluiceError && !(e instanceof SinkError) && e.cause instanceof SinkError ? e.cause : e;
  const code = isSluiceError(e) ? e.code : ErrorCode.SinkItem;
  const sinkCode = inner instanceof SinkError ? (inner.sinkCode ?? null) : ((inner as { code?: unknown })?.code?.toString() ?? null);
  const src = (l.env.meta as { source?: string } | undefined)?.source ?? ctx.source;
  // A tenant's record bound for its own table or stream (sinks/routing.ts) names it, so the
  // operator sees where a re-drive should put it back: `postgres:team_b_logs`.
  const target = l.env.attrs?.[SINK_TARGET_ATTR];
  return {
    v: DLQ_FORMAT_VERSION,
    id: l.env.id ?? `seq:${l.env.seq}`,
    source: src,
    offset: l.env.offset ?? null,
    pipeline: ctx.pipeline,
    sink: target !== undefined ? `${ctx.sink}:${target}` : ctx.sink,
    errorClass: l.failureClass,
    code,
    sinkCode,
    message: String((e as Error)?.message ?? e).slice(0, 2000),
    attempts: l.attempts,
    firstFailureAt: new Date(epochMsOf(l.firstFailureAtMs)).toISOString(),
    deadLetteredAt: new Date(epochMsOf(l.deadLetteredAtMs)).toISOString(),
    data: recordBytes(l.env as Envelope<unknown>).toString('base64'),
  };
}

/** Adapts a store to the DeadLetterWriter the split-and-retry handler speaks. */
export function deadLetterWriter<T>(store: DeadLetterStore, ctx: DeadLetterContext): DeadLetterWriter<T> {
  return {
    async write(letters) {
      try {
        await store.append(letters.map((l) => toEntry(l as DeadLetter<unknown>, ctx)));
      } catch (cause) {
        throw new SluiceError(ErrorCode.DeadLetterFailed, `dead-letter store ${store.describe}: ${(cause as Error)?.message ?? cause}`, { cause, retryable: true });
      }
    },
  };
}

/** Checks one parsed JSON value is a DeadLetterEntry (used by the readers; issue 6 re-drives from it). */
export function parseEntry(x: unknown, where: string): DeadLetterEntry {
  const o = x as Record<string, unknown>;
  const ok =
    o !== null && typeof o === 'object' && typeof o.id === 'string' && typeof o.data === 'string' && typeof o.attempts === 'number' &&
    (o.errorClass === 'item' || o.errorClass === 'transient') && typeof o.code === 'string';
  if (!ok) throw new SluiceError(ErrorCode.Corrupt, `${where}: not a dead-letter entry`, { details: { where } });
  return o as unknown as DeadLetterEntry;
}
