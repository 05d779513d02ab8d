/**
 * HTTP sink: one POST per batch, the batch as NDJSON, compressed by the configured codec
 * (`Content-Encoding` says which), over a keep-alive agent so that a batch costs one
 * request/response round-trip and no new connection.
 *
 * Failures are classified for the reliability decorators (docs/architecture.md):
 * - transient (retry the whole batch): connection errors, timeouts, 408, 425, 429, 5xx;
 * - item (split to isolate the record): 400, 413, 422;
 * - any other 4xx (401, 403, 404, 415 …) is a configuration fault that no split can fix:
 *   transient with `alerting: true`, so it is retried with backoff and pages someone.
 *
 * Bytes on the wire are read at the socket (SocketByteCounter), headers included.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { SinkError, invalidOption } from '../core/errors.js';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { compressMeasured, createCodec, type Codec, type CodecSpec, type CodecName } from '../codec/compress.js';
import { ndjsonBatch } from './serialize.js';
import { SocketByteCounter } from './wire-counter.js';

export interface HttpSinkOptions {
  /** Endpoint, e.g. `http://127.0.0.1:8080/ingest`. Only `http:` (TLS would hide the bytes we count). */
  url: string | URL;
  /** Batch codec. @default { codec: 'none' } */
  codec?: CodecSpec | CodecName;
  /** Sockets kept open to the endpoint; match the pipeline's maxInFlight. @default 4 */
  maxSockets?: number;
  /** Whole request (connect, send, response) deadline, ms. @default 10_000 */
  timeoutMs?: number;
  /** Extra request headers (e.g. authorization). */
  headers?: Record<string, string>;
}

export interface HttpSinkStats {
  /** Requests really sent (one per batch write). */
  requests: number;
  /** Responses by status code. */
  statuses: Record<string, number>;
  /** Requests that failed before a response (connection, timeout). */
  connectionErrors: number;
  items: number;
  /** NDJSON bytes before compression. */
  rawBytes: number;
  /** Request bodies after compression. */
  bodyBytes: number;
  /** CPU spent compressing, µs (process.cpuUsage around each compress call). */
  compressCpuUs: number;
  /** Bytes written to the sink's sockets: request lines, headers and bodies. */
  wireBytesOut: number;
  /** Bytes read from the sink's sockets: responses. */
  wireBytesIn: number;
  connections: number;
}

const ITEM_STATUSES = new Set([400, 413, 422]);
const TRANSIENT_4XX = new Set([408, 425, 429]);

/** How a non-2xx status is handled (exported for tests and docs). */
export function classifyHttpStatus(status: number): { failureClass: 'transient' | 'item'; alerting: boolean } | null {
  if (status >= 200 && status < 300) return null;
  if (ITEM_STATUSES.has(status)) return { failureClass: 'item', alerting: false };
  if (status >= 500 || TRANSIENT_4XX.has(status)) return { failureClass: 'transient', alerting: false };
  return { failureClass: 'transient', alerting: true };
}

export class HttpSink<T = unknown> implements Sink<T> {
  readonly name = 'http';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly codec: Codec;
  private readonly url: URL;
  private readonly agent: http.Agent;
  private readonly timeoutMs: number;
  private readonly extraHeaders: Record<string, string>;
  private readonly counter = new SocketByteCounter();
  private readonly s = { requests: 0, connectionErrors: 0, items: 0, rawBytes: 0, bodyBytes: 0, compressCpuUs: 0 };
  private readonly statuses: Record<string, number> = {};
  private closed = false;

  constructor(opts: HttpSinkOptions) {
    let url: URL;
    try {
      url = new URL(opts.url);
    } catch {
      throw invalidOption('url', String(opts.url), 'an absolute http:// URL');
    }
    if (url.protocol !== 'http:') throw invalidOption('url', String(opts.url), 'an http:// URL');
    this.url = url;
    this.codec = createCodec(opts.codec ?? 'none');
    const maxSockets = opts.maxSockets ?? 4;
    if (!Number.isInteger(maxSockets) || maxSockets < 1) throw invalidOption('maxSockets', opts.maxSockets, 'an integer ≥ 1');
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    if (!(this.timeoutMs > 0)) throw invalidOption('timeoutMs', opts.timeoutMs, 'a number > 0');
    this.extraHeaders = opts.headers ?? {};
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    if (this.closed) throw new SinkError('transient', 'http sink is closed', { sinkCode: 'CLOSED' });
    const raw = ndjsonBatch(batch);
    const packed = await compressMeasured(this.codec, raw);
    this.s.compressCpuUs += packed.cpuUs;
    this.s.rawBytes += raw.length;
    this.s.bodyBytes += packed.data.length;
    const headers: Record<string, string | number> = {
      ...this.extraHeaders,
      'content-type': 'application/x-ndjson',
      'content-length': packed.data.length,
    };
    if (this.codec.contentEncoding) headers['content-encoding'] = this.codec.contentEncoding;
    const { status, body } = await this.post(packed.data, headers);
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
    const cls = classifyHttpStatus(status);
    if (cls) {
      throw new SinkError(cls.failureClass, `http sink: ${this.url.host} answered ${status}${body ? `: ${body.slice(0, 200)}` : ''}`, {
        sinkCode: `HTTP_${status}`,
        alerting: cls.alerting,
        details: { status, items: batch.length },
      });
    }
    this.s.items += batch.length;
  }

  private post(body: Buffer, headers: Record<string, string | number>): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request(this.url, { method: 'POST', agent: this.agent, headers });
      this.s.requests++;
      let settled = false;
      const fail = (e: Error & { code?: string }) => {
        if (settled) return;
        settled = true;
        this.s.connectionErrors++;
        reject(new SinkError('transient', `http sink: ${e.message}`, { cause: e, sinkCode: e.code ?? 'ECONN' }));
      };
      req.on('socket', (socket: Socket) => this.counter.track(socket));
      req.setTimeout(this.timeoutMs, () => {
        const e = Object.assign(new Error(`no response within ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' });
        req.destroy(e);
      });
      req.on('error', fail);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        res.on('data', (c: Buffer) => {
          if (kept < 4096) {
            chunks.push(c);
            kept += c.length;
          }
        });
        res.on('error', fail);
        res.on('end', () => {
          if (settled) return;
          settled = true;
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        });
      });
      req.end(body);
    });
  }

  fixedCostOps(): number {
    return this.s.requests;
  }

  stats(): HttpSinkStats {
    const w = this.counter.totals();
    return { ...this.s, statuses: { ...this.statuses }, wireBytesOut: w.out, wireBytesIn: w.in, connections: w.connections };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.agent.destroy();
  }
}
