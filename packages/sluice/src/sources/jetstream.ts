/**
 * NATS JetStream: a durable pull consumer as a source with offsets and lag, and a producer.
 *
 * - The stream (`<stream>`, subject `<stream>.in` unless given) and the durable consumer
 *   (explicit ack) are created if missing.
 * - A message is acked only after its batch committed or it was durably dead-lettered
 *   (`observer()`), never before; `flushAcks()` flushes the connection so the acks reached
 *   the server before shutdown. An un-acked message is redelivered after `ackWaitMs`: a crash
 *   between commit and ack redelivers, and the idempotent sink absorbs the duplicate.
 * - A message held by the pipeline (queued, in flight, waiting for a free queue slot) longer
 *   than the ack wait would be redelivered while it is still being processed, and processed
 *   twice: the sink absorbs the duplicate, but a poison record is dead-lettered twice (measured:
 *   a 354 s first pass of the `redrive` lab against a slow PostgreSQL, 2,191 DLQ entries for
 *   1,450 poison records). So every `ackWaitMs / 3` the source tells the server it is still
 *   working on each message it holds (`JsMsg.working()`, the `+WPI` in-progress ack, which
 *   restarts that message's ack-wait timer). A crash stops the signals and the messages are
 *   redelivered after one ack wait, as they should be. `redelivered` in `stats()` counts
 *   deliveries the server marked as redeliveries.
 * - Lag = the consumer's `num_pending + num_ack_pending` (not yet delivered + delivered but
 *   not yet acked).
 * - Offsets are stream sequences; a record's id travels in the `Sluice-Id` header (the
 *   sequence when absent), its intended time in `Sluice-Ts` (epoch ms).
 */
import { performance } from 'node:perf_hooks';
import type { NatsConnection } from '@nats-io/transport-node';
import { headers } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstream, type ConsumerInfo, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { ErrorCode, SinkError, SluiceError } from '../core/errors.js';
import { RecentSet } from '../core/recent-set.js';
import type { DeadLetterWriter } from '../core/reliability.js';
import type { OfferResult } from '../core/pipeline.js';
import { envelope, type Envelope, type PipelineObserver } from '../core/types.js';
import { ackingObserver, offerPatiently, type LogRecord, type OffsetSource, type PutTarget, type SourceStats } from './embedded-log.js';
import { ensureStream, manager } from './nats.js';

export const ID_HEADER = 'Sluice-Id';
export const TS_HEADER = 'Sluice-Ts';
/** JetStream's own de-duplication header. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';

/**
 * What makes two deliveries the same record: the record id a producer put in the headers (ours,
 * else JetStream's de-duplication id), else the stream sequence (a message without an id).
 */
function keyOf(m: JsMsg): string {
  return m.headers?.get(ID_HEADER) || m.headers?.get(MSG_ID_HEADER) || `seq:${m.seq}`;
}

export interface JetStreamSourceOptions<T> {
  nc: NatsConnection;
  stream: string;
  consumer: string;
  /** @default `${stream}.in` */
  subject?: string;
  /**
   * Redelivery delay of an un-acked message that the source no longer signals as in progress
   * (it signals every `ackWaitMs / 3` while the pipeline holds the message). @default 30_000
   */
  ackWaitMs?: number;
  /** Delivered-but-unacked messages the server allows. Must exceed the pipeline's queue + in-flight items. @default 50_000 */
  maxAckPending?: number;
  /** Messages per pull request. @default 256 */
  pullBatch?: number;
  /** Replicas of the stream when this source creates it (a JetStream cluster: 3). @default 1 */
  replicas?: number;
  /**
   * Lifetime of each pull request (ms); the client re-pulls when one expires or two of its
   * heartbeats (every half of it) go missing. A pull addressed to a consumer leader that dies
   * is lost until then, so this bounds a worker's stall after a leader election (docs/scale.md).
   * @default the client's (30_000)
   */
  pullExpiresMs?: number;
  /** Bytes → value; a throw makes the message undecodable (see `deadLetters`). @default JSON.parse of UTF-8 */
  decode?: (data: Buffer) => T;
  /**
   * Where a message that fails to decode goes, with its reason (class `item`, sinkCode
   * DECODE); it is acked once durably dead-lettered. Without it such a message is counted
   * (`undecodable`), reported through `onError` and terminated (`term()`: the server keeps it in
   * the stream but stops redelivering it). Never offered as a silent `null`.
   */
  deadLetters?: DeadLetterWriter<T>;
  /** Decode failures and failed dead-letter writes. @default one JSON line on stderr */
  onError?: (error: unknown) => void;
  /**
   * Record ids (or stream sequences, for messages without an id) of recently acked messages,
   * remembered so that another delivery of one (an ack lost in a broker outage, a broker that
   * restarted without its consumer's last state, a record published twice) is acked again and
   * counted `redelivered` instead of being accepted twice. Memory: one string per entry, about
   * 100 bytes with a 36-character id, so ≈10 MB at the default. A delivery older than the last
   * `recentAcks` distinct acks (core/recent-set.ts) is accepted again;
   * the idempotent sink still stores it once.
   * @default 100_000
   */
  recentAcks?: number;
}

/**
 * Creates the stream and the durable pull consumer if missing. Idempotent (several workers
 * start at once): an existing stream is used as it is; an existing consumer too, except that
 * an explicitly given `maxAckPending` different from its current one is applied (it is how
 * the consumer is sized for M workers, docs/scale.md). Returns once the consumer has a
 * leader (at most `leaderWaitMs`, default 10 s; see untilConsumerLed).
 */
export async function ensureJetStream(
  jsm: JetStreamManager,
  o: { stream: string; consumer: string; subject?: string; ackWaitMs?: number; maxAckPending?: number; replicas?: number; leaderWaitMs?: number },
): Promise<void> {
  // A NaN here goes out as JSON null and the server silently applies its own default (1000).
  if (o.maxAckPending !== undefined && !(Number.isInteger(o.maxAckPending) && o.maxAckPending > 0))
    throw new SluiceError(ErrorCode.InvalidOption, `maxAckPending: expected a positive integer, got ${o.maxAckPending}`);
  await ensureStream(jsm, o.stream, [o.subject ?? `${o.stream}.in`], { replicas: o.replicas });
  let existing: ConsumerInfo | null = null;
  try {
    existing = await jsm.consumers.info(o.stream, o.consumer);
  } catch {
    // missing: create
  }
  if (existing) {
    if (o.maxAckPending !== undefined && existing.config.max_ack_pending !== o.maxAckPending)
      await jsm.consumers.update(o.stream, o.consumer, { max_ack_pending: o.maxAckPending });
  } else {
    try {
      await jsm.consumers.add(o.stream, {
        durable_name: o.consumer,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: (o.ackWaitMs ?? 30_000) * 1_000_000,
        max_ack_pending: o.maxAckPending ?? 50_000,
      });
    } catch (cause) {
      // Another worker created it first: fine.
      try {
        await jsm.consumers.info(o.stream, o.consumer);
      } catch {
        throw new SluiceError(ErrorCode.SourceUnavailable, `cannot create consumer ${o.stream}/${o.consumer}: ${(cause as Error).message}`, { cause });
      }
    }
  }
  await untilConsumerLed(jsm, o.stream, o.consumer, o.leaderWaitMs ?? 10_000);
}

/**
 * Waits, up to `timeoutMs`, until the consumer has a leader. On a cluster a consumer just
 * created (or whose leader just died) has none for a moment; a pull sent then is answered 503,
 * and nats.js's consume() does not pull again until two idle heartbeats went missing. A worker
 * started beside others on a new R3 consumer idled that long while they took every record
 * (the `scaleout` lab: 2 workers, the second committed 0 of 120,000; docs/scale.md). Past the
 * timeout it goes on: consume() still recovers by its heartbeats.
 */
async function untilConsumerLed(jsm: JetStreamManager, stream: string, consumer: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const info = await jsm.consumers.info(stream, consumer).catch(() => null);
    // A server outside a cluster reports no cluster section, or itself as the leader.
    if (info && (!info.cluster || info.cluster.leader)) return;
    if (Date.now() >= end) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface JetStreamSourceStats extends SourceStats {
  /** Deliveries the server marked as redeliveries (an ack wait ran out, or an earlier consumer died). */
  redelivered: number;
  /** In-progress acks sent for held messages. */
  inProgressSignals: number;
  /** Messages delivered and not yet acked (set by `stats()`). */
  held?: number;
  /** Redeliveries absorbed without a new offer: the message was still held, or already acked. */
  redeliveriesAbsorbed: number;
  /** Messages that failed to decode. */
  undecodable: number;
  /** Of which durably dead-lettered (then acked). */
  undecodableDeadLettered: number;
}

interface JsMeta {
  source: string;
  msg: JsMsg;
}

export class JetStreamSource<T = unknown> implements OffsetSource<T> {
  readonly name: string;
  private readonly js: JetStreamClient;
  private jsm: JetStreamManager | null = null;
  private messages: ConsumerMessages | null = null;
  private stopping = false;
  private readonly decode: (data: Buffer) => T;
  private readonly st: JetStreamSourceStats = { delivered: 0, acked: 0, refused: 0, redelivered: 0, inProgressSignals: 0, redeliveriesAbsorbed: 0, undecodable: 0, undecodableDeadLettered: 0 };
  /** Delivered, handed to the pipeline (or waiting to be), not yet acked: stream sequence → message. */
  private readonly held = new Map<number, JsMsg>();
  /** Later deliveries of a held message (acked together with it). */
  private readonly extra = new Map<number, JsMsg[]>();
  /** Record keys (keyOf) of the held messages → their stream sequence. */
  private readonly heldKeys = new Map<string, number>();
  /** Record keys (keyOf) acked recently, at most `recentAcks` (core/recent-set.ts). */
  private readonly acked: RecentSet;
  private heartbeat: NodeJS.Timeout | null = null;

  private constructor(private readonly o: JetStreamSourceOptions<T>) {
    this.name = `jetstream:${o.stream}/${o.consumer}`;
    this.js = jetstream(o.nc);
    this.decode = o.decode ?? ((d) => JSON.parse(d.toString('utf8')) as T);
    this.acked = new RecentSet(o.recentAcks ?? 100_000);
  }

  static async open<T>(o: JetStreamSourceOptions<T>): Promise<JetStreamSource<T>> {
    const s = new JetStreamSource<T>(o);
    s.jsm = await manager(o.nc);
    await ensureJetStream(s.jsm, o);
    return s;
  }

  stats(): JetStreamSourceStats {
    return { ...this.st, held: this.held.size };
  }

  async run(target: PutTarget<T>): Promise<void> {
    const c = await this.js.consumers.get(this.o.stream, this.o.consumer);
    if (this.stopping) return;
    this.messages = await c.consume({ max_messages: this.o.pullBatch ?? 256, ...(this.o.pullExpiresMs ? { expires: this.o.pullExpiresMs } : {}) });
    this.startHeartbeat();
    // A connection that closes for good (drain, or a server that refuses us) ends the iterator
    // through `stop()`, so run() settles instead of leaving an unsettled await behind.
    void this.o.nc.closed().then(() => this.stop());
    for await (const m of this.messages) {
      if (this.stopping) break; // delivered, not offered: never acked, redelivered after ack_wait
      if (m.redelivered) this.st.redelivered++;
      // Counted once per record (issue 19): a second delivery of a record still in the pipeline
      // rides along with it; one of a record already acked is acked again. Neither is accepted a
      // second time; the ledger counts them as `redelivered`. Matched by record id, not by the
      // server's `redelivered` flag: a broker that restarts without its consumer's last state
      // (chaos case 2: NATS restarted mid-run) delivers acked messages again as first deliveries,
      // and a record published twice (a producer retry past the duplicate window) is two stream
      // sequences under one id.
      const key = keyOf(m);
      const heldSeq = this.heldKeys.get(key);
      if (heldSeq !== undefined) {
        const list = this.extra.get(heldSeq) ?? [];
        list.push(m);
        this.extra.set(heldSeq, list);
        this.absorbed(target);
        continue;
      }
      if (this.acked.has(key)) {
        m.ack();
        this.absorbed(target);
        continue;
      }
      let env: Envelope<T>;
      try {
        env = this.toEnvelope(m);
      } catch (error) {
        await this.undecodable(m, error);
        continue;
      }
      this.held.set(m.seq, m);
      this.heldKeys.set(key, m.seq);
      let r: OfferResult;
      try {
        r = await offerPatiently(target, env);
      } catch {
        this.forget(m.seq);
        this.st.refused++;
        break;
      }
      if (r === 'accepted' || r === 'dropped') this.st.delivered++;
      // Dropped by the queue policy: never acked, so the server redelivers it after the ack wait.
      if (r !== 'accepted') this.forget(m.seq);
    }
  }

  private absorbed(target: PutTarget<T>): void {
    this.st.redeliveriesAbsorbed++;
    target.noteRedelivered?.(1);
  }

  private forget(seq: number): void {
    const m = this.held.get(seq);
    if (m) this.heldKeys.delete(keyOf(m));
    this.held.delete(seq);
    this.extra.delete(seq);
  }

  /** A message whose body does not decode: counted, dead-lettered with its reason (then acked), or terminated. */
  private async undecodable(m: JsMsg, cause: unknown): Promise<void> {
    this.st.undecodable++;
    const data = Buffer.from(m.data);
    const id = m.headers?.get(ID_HEADER) || `js:${m.seq}`;
    const error = new SinkError('item', `undecodable message ${id} (stream seq ${m.seq}): ${(cause as Error)?.message ?? cause}`, { cause, sinkCode: 'DECODE' });
    const report = this.o.onError ?? ((e: unknown) => process.stderr.write(JSON.stringify({ level: 'error', msg: 'sluice source error', source: this.name, error: String((e as Error)?.message ?? e) }) + '\n'));
    if (this.o.deadLetters) {
      const env = envelope(null as T, { bytes: data.length, intendedAtMs: performance.now(), id, raw: data, offset: m.seq, meta: { source: this.name, msg: m } satisfies JsMeta });
      const now = performance.now();
      try {
        await this.o.deadLetters.write([{ env, error, failureClass: 'item', attempts: 1, firstFailureAtMs: now, deadLetteredAtMs: now }]);
        m.ack();
        this.st.undecodableDeadLettered++;
        return;
      } catch (dlqError) {
        // Not durable: not acked, redelivered after the ack wait, tried again.
        report(dlqError);
        return;
      }
    }
    report(error);
    m.term(error.message.slice(0, 200));
  }

  /**
   * Every ackWaitMs / 3, an in-progress ack for each held message (see the file comment).
   * It runs until `close()`, so messages still draining through the pipeline after `stop()`
   * stay claimed too.
   */
  private startHeartbeat(): void {
    const every = Math.max(250, Math.floor((this.o.ackWaitMs ?? 30_000) / 3));
    this.heartbeat = setInterval(() => {
      try {
        for (const m of this.held.values()) {
          m.working();
          this.st.inProgressSignals++;
        }
      } catch {
        // connection closed under us: nothing left to claim (the server redelivers after the ack wait)
        this.stopHeartbeat();
      }
    }, every);
    this.heartbeat.unref();
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  /** Throws when the body does not decode (see `undecodable`). */
  private toEnvelope(m: JsMsg): Envelope<T> {
    const data = Buffer.from(m.data);
    const value = this.decode(data);
    // The message id (docs/records.md): ours, else the publisher's de-duplication id; a
    // message with neither gets its id from the pipeline's id rule (a content hash).
    const id = m.headers?.get(ID_HEADER) || m.headers?.get(MSG_ID_HEADER) || undefined;
    const tsh = Number(m.headers?.get(TS_HEADER));
    const ts = Number.isFinite(tsh) && tsh > 0 ? tsh : m.info.timestampNanos / 1e6;
    const meta: JsMeta = { source: this.name, msg: m };
    return envelope(value, { bytes: data.length, intendedAtMs: ts - performance.timeOrigin, id, raw: data, offset: m.seq, meta });
  }

  stop(): void {
    this.stopping = true;
    void this.messages?.stop();
  }

  observer(): PipelineObserver<T> {
    return {
      ...ackingObserver(this),
      // Dropped by the pipeline (queue policy, handler): no longer held, so no longer claimed;
      // never acked, the server redelivers it after the ack wait.
      onDropped: (items) => {
        if (typeof items !== 'number') for (const e of items) this.forget((e.meta as JsMeta).msg.seq);
      },
    };
  }

  ack(items: readonly Envelope<T>[]): void {
    for (const e of items) {
      const m = (e.meta as JsMeta).msg;
      m.ack();
      for (const again of this.extra.get(m.seq) ?? []) again.ack();
      this.forget(m.seq);
      this.acked.add(keyOf(m));
      this.st.acked++;
    }
  }

  async flushAcks(): Promise<void> {
    await this.o.nc.flush();
  }

  async lag(): Promise<number> {
    const i = await this.jsm!.consumers.info(this.o.stream, this.o.consumer);
    return i.num_pending + i.num_ack_pending;
  }

  /** Deletes the consumer and the stream (tests and the lab clean up after themselves). */
  async destroy(): Promise<void> {
    this.stop();
    this.stopHeartbeat();
    try {
      await this.jsm!.consumers.delete(this.o.stream, this.o.consumer);
    } catch {
      /* already gone */
    }
    try {
      await this.jsm!.streams.delete(this.o.stream);
    } catch {
      /* already gone */
    }
  }

  /** Stops reading and the in-progress signals (call after the pipeline drained), then flushes the acks. */
  async close(): Promise<void> {
    this.stop();
    this.stopHeartbeat();
    await this.flushAcks();
  }
}

/** Publishes records to the stream (the lab's producer, the next issue's re-drive). Resolves after every PubAck. */
export class JetStreamProducer {
  private readonly js: JetStreamClient;
  readonly subject: string;

  constructor(
    nc: NatsConnection,
    readonly stream: string,
    subject?: string,
  ) {
    this.js = jetstream(nc);
    this.subject = subject ?? `${stream}.in`;
  }

  async publish(records: readonly LogRecord[]): Promise<number[]> {
    const acks = await Promise.all(
      records.map((r) => {
        const h = headers();
        h.set(ID_HEADER, r.id);
        h.set(TS_HEADER, String(r.ts ?? Date.now()));
        return this.js.publish(this.subject, r.data, { headers: h });
      }),
    );
    return acks.map((a) => a.seq);
  }
}
