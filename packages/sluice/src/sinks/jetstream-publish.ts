/**
 * JetStream publish sink. Two modes:
 * - `batch` (default): the whole batch as one NDJSON message (compressed by the codec, the
 *   header `Content-Encoding` says which), one publish, one PubAck: one round-trip per batch.
 * - `item`: one message per item, published back to back with their acks awaited together
 *   (async acks): the batch costs about one round-trip of wall time but the server stores
 *   and acknowledges every item on its own; `fixedCostOps()` counts every publish.
 *
 * Message ids let JetStream drop duplicates of a retried batch (within the stream's
 * duplicate window): `item` mode uses each item's id, `batch` mode the ids of its first and
 * last item and its length. Items without ids are published without a message id.
 *
 * Failures: a payload larger than the server's max_payload is an item-level error (splitting
 * the batch fixes it); anything else (timeout, no responders, connection closed, stream
 * errors) is transient.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient, type JetStreamPublishOptions } from '@nats-io/jetstream';
import { SinkError, invalidOption } from '../core/errors.js';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { compressMeasured, createCodec, type Codec, type CodecName, type CodecSpec } from '../codec/compress.js';
import { ndjsonBatch } from './serialize.js';
import { connectNats, ensureStream, manager, parseNatsUrl } from '../sources/nats.js';

export type JetStreamPublishMode = 'batch' | 'item';

export interface JetStreamPublishSinkOptions {
  /** An open connection; the sink never closes it. */
  nc: NatsConnection;
  /** Subject bound to a stream. */
  subject: string;
  /** @default 'batch' */
  mode?: JetStreamPublishMode;
  /** Codec of batch messages (`batch` mode only). @default none */
  codec?: CodecSpec | CodecName;
  /** PubAck deadline per publish, ms. @default 5_000 */
  timeoutMs?: number;
}

export interface JetStreamPublishStats {
  /** Publish calls made (batch mode: one per batch; item mode: one per item). */
  publishes: number;
  acks: number;
  batches: number;
  items: number;
  rawBytes: number;
  payloadBytes: number;
  compressCpuUs: number;
}

export class JetStreamPublishSink<T = unknown> implements Sink<T> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly mode: JetStreamPublishMode;
  readonly codec: Codec;
  private readonly js: JetStreamClient;
  private readonly subject: string;
  private readonly timeoutMs: number;
  private readonly s: JetStreamPublishStats = { publishes: 0, acks: 0, batches: 0, items: 0, rawBytes: 0, payloadBytes: 0, compressCpuUs: 0 };

  constructor(private readonly opts: JetStreamPublishSinkOptions) {
    if (!opts.subject || /[\s*>]/.test(opts.subject)) throw invalidOption('subject', opts.subject, 'a literal subject (no spaces or wildcards)');
    this.mode = opts.mode ?? 'batch';
    if (this.mode !== 'batch' && this.mode !== 'item') throw invalidOption('mode', opts.mode, "'batch' or 'item'");
    this.codec = createCodec(opts.codec ?? 'none');
    if (this.mode === 'item' && this.codec.name !== 'none') throw invalidOption('codec', this.codec.label, "none in 'item' mode (one record does not compress)");
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    if (!(this.timeoutMs > 0)) throw invalidOption('timeoutMs', opts.timeoutMs, 'a number > 0');
    this.subject = opts.subject;
    this.js = jetstream(opts.nc, { timeout: this.timeoutMs });
    this.name = `jetstream-${this.mode}`;
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    if (batch.length === 0) return;
    if (this.mode === 'batch') await this.writeBatch(batch);
    else await this.writeItems(batch);
    this.s.batches++;
    this.s.items += batch.length;
  }

  private async writeBatch(batch: readonly Envelope<T>[]): Promise<void> {
    const raw = ndjsonBatch(batch);
    const packed = await compressMeasured(this.codec, raw);
    this.s.compressCpuUs += packed.cpuUs;
    this.s.rawBytes += raw.length;
    this.s.payloadBytes += packed.data.length;
    const h = natsHeaders();
    h.set('Content-Type', 'application/x-ndjson');
    h.set('Sluice-Items', String(batch.length));
    if (this.codec.contentEncoding) h.set('Content-Encoding', this.codec.contentEncoding);
    const first = batch[0].id;
    const last = batch[batch.length - 1].id;
    const o: Partial<JetStreamPublishOptions> = { headers: h, timeout: this.timeoutMs };
    if (first !== undefined && last !== undefined) o.msgID = `b:${first}:${last}:${batch.length}`;
    this.s.publishes++;
    try {
      await this.js.publish(this.subject, packed.data, o);
    } catch (e) {
      throw classify(e, batch.length);
    }
    this.s.acks++;
  }

  private async writeItems(batch: readonly Envelope<T>[]): Promise<void> {
    const pending: Promise<unknown>[] = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i];
      const data = e.raw ?? Buffer.from(typeof e.value === 'string' ? e.value : JSON.stringify(e.value));
      this.s.rawBytes += data.length;
      this.s.payloadBytes += data.length;
      this.s.publishes++;
      pending[i] = this.js.publish(this.subject, data, e.id !== undefined ? { msgID: e.id, timeout: this.timeoutMs } : { timeout: this.timeoutMs }).then(() => {
        this.s.acks++;
      });
    }
    const results = await Promise.allSettled(pending);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    // Some items may be stored already: retrying the whole batch is safe thanks to the message ids.
    if (failed) throw classify(failed.reason, batch.length);
  }

  fixedCostOps(): number {
    return this.s.publishes;
  }

  stats(): JetStreamPublishStats {
    return { ...this.s };
  }

  async close(): Promise<void> {}
}

function classify(e: unknown, items: number): SinkError {
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: string }).code;
  if (/max.?payload|payload.*(too large|exceeded)/i.test(msg) || code === 'MAX_PAYLOAD_EXCEEDED')
    return new SinkError('item', `jetstream sink: message too large: ${msg}`, { cause: e, sinkCode: 'MAX_PAYLOAD', details: { items } });
  return new SinkError('transient', `jetstream sink: ${msg}`, { cause: e, sinkCode: code ?? (e instanceof Error ? e.name : 'UNKNOWN'), details: { items } });
}

// ------------------------------------------------------------------ serve → JetStream

/** Defaults of `sluice serve --sink nats://…/STREAM` (docs/scale.md). */
export const STREAM_SINK_DEFAULTS = Object.freeze({
  /** PubAck deadline per record: a stream without a leader fails a publish within this. */
  publishTimeoutMs: 2_000,
  /** Retries of a failed publish batch before its request is answered 503 + Retry-After. */
  publishRetries: 2,
  /** Stream replicas when serve creates the stream. */
  replicas: 1,
});

export interface StreamSinkSpec {
  /** `nats://host:port/STREAM`; records go to the subject `STREAM.in` (what `sluice run` reads). */
  url: string;
  /** More servers (`host:port`), the `--nats` list. */
  servers?: readonly string[];
  /** @default STREAM_SINK_DEFAULTS.replicas */
  replicas?: number;
  /** @default STREAM_SINK_DEFAULTS.publishTimeoutMs */
  publishTimeoutMs?: number;
}

export interface StreamSink {
  sink: JetStreamPublishSink<unknown>;
  nc: NatsConnection;
  stream: string;
  subject: string;
  describe: string;
  /** Drains the connection (after the server closed the pipeline). */
  close(): Promise<void>;
  /**
   * A sink into another stream on the same connection (a tenant's own stream, issue 26),
   * created like this one when missing.
   */
  another(stream: string): Promise<JetStreamPublishSink<unknown>>;
}

/**
 * The front door's sink when it writes into a JetStream stream (issue 24): one message per
 * record, its `Nats-Msg-Id` the record's id, so a client that retries a request (same ids)
 * is de-duplicated by the stream within its duplicate window; the publishes of a batch go out
 * back to back and their PubAcks are awaited together (`item` mode). The stream is created
 * (file storage, `replicas` copies) when missing, used as it is when it exists.
 */
export async function openStreamSink(spec: StreamSinkSpec): Promise<StreamSink> {
  const { stream } = parseNatsUrl(spec.url);
  if (!stream) throw invalidOption('--sink', spec.url, 'nats://host:port/<stream>');
  const replicas = spec.replicas ?? STREAM_SINK_DEFAULTS.replicas;
  const nc = await connectNats(spec.url, undefined, undefined, spec.servers ?? []);
  try {
    const subject = `${stream}.in`;
    await ensureStream(await manager(nc), stream, [subject], { replicas });
    const timeoutMs = spec.publishTimeoutMs ?? STREAM_SINK_DEFAULTS.publishTimeoutMs;
    const sink = new JetStreamPublishSink<unknown>({ nc, subject, mode: 'item', timeoutMs });
    const another = async (other: string) => {
      await ensureStream(await manager(nc), other, [`${other}.in`], { replicas });
      return new JetStreamPublishSink<unknown>({ nc, subject: `${other}.in`, mode: 'item', timeoutMs });
    };
    return { sink, nc, stream, subject, describe: `jetstream stream ${stream} (subject ${subject})`, close: () => nc.drain(), another };
  } catch (e) {
    await nc.close().catch(() => {});
    throw e;
  }
}
