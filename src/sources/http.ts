/**
 * The HTTP front door: `POST /ingest` (NDJSON, identity/gzip/deflate/br) feeding a
 * Pipeline, `GET /metrics` (Prometheus text), `GET /healthz`. See docs/serve.md.
 *
 * A request goes through: concurrency gate → Content-Length vs the compressed cap →
 * Content-Encoding (one known coding) → bounded decode (caps on the stream) → NDJSON framing
 * (line and item caps) → per-item validation → staging → the pipeline (`put`, block policy
 * waits up to `blockTimeoutMs`) → with `flush: 'request'`, a cut as soon as the request is
 * enqueued → with `ack: 'commit'`, the answer waits until every accepted item of the request
 * is committed (or dropped / dead-lettered).
 *
 * The whole body is decoded and validated before any item is offered, so a request-level
 * failure (413, 415, 400) never leaves part of the request in the pipeline. Staging holds at
 * most `maxDecompressedBytes` of lines per request, and at most `maxConcurrentRequests`
 * requests are served at once: that product is the memory this door can be made to hold.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import client from 'prom-client';
import type { TSchema } from '@sinclair/typebox';
import { ErrorCode, SluiceError, invalidOption, isSluiceError } from '../core/errors.js';
import { Pipeline } from '../core/pipeline.js';
import type { LedgerSnapshot } from '../core/ledger.js';
import type { QueueOptions, WindowOptions } from '../core/options.js';
import { envelope, type Envelope, type PipelineObserver, type Sink } from '../core/types.js';
import { PipelineMetrics } from '../metrics/metrics.js';
import { prometheusFor, type Exposition } from '../metrics/prometheus.js';
import { liveView } from '../metrics/live.js';
import { watchSink } from '../metrics/sink-health.js';
import { Readable } from 'node:stream';
import { boundedDecode, decodeSmallSync, KNOWN_CODINGS, parseContentEncoding, type Coding, type DecodeStats } from '../codec/bounded-decode.js';
import { NdjsonFramer } from '../codec/ndjson.js';
import { ItemValidator, type ItemRejectReason } from '../codec/validate.js';

/** Items validated between two yields to the event loop (≈1 ms of work for small records). */
const VALIDATE_SLICE = 1000;
/**
 * A body of at most this many bytes as sent (by Content-Length), gzip, deflate or identity, is
 * read whole and decoded at once on the event loop, when it decodes to at most
 * SYNC_DECODE_BYTES (≈0.1–0.5 ms of inflate); else it is streamed through `boundedDecode`.
 */
export const SMALL_BODY_BYTES = 64 * 1024;
export const SYNC_DECODE_BYTES = 256 * 1024;

/** The whole body of a request whose Content-Length is small; rejects if the client aborts. */
function readWhole(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    const aborted = () => reject(new SluiceError(ErrorCode.MalformedInput, 'request body aborted by the client', { details: { reason: 'aborted' } }));
    req.on('data', (c: Buffer) => {
      parts.push(c);
      n += c.length;
    });
    req.once('end', () => resolve(parts.length === 1 ? parts[0] : Buffer.concat(parts, n)));
    req.once('error', aborted);
    req.once('close', () => req.readableEnded || aborted());
  });
}

export type IngestMode = 'per-line' | 'all-or-nothing';
export const INGEST_MODES: readonly IngestMode[] = ['per-line', 'all-or-nothing'];
export type AckMode = 'commit' | 'accept';
export const ACK_MODES: readonly AckMode[] = ['commit', 'accept'];
export type FlushMode = 'request' | 'window';
export const FLUSH_MODES: readonly FlushMode[] = ['request', 'window'];

export interface ServeLimits {
  /** Body bytes as sent (Content-Length is checked before reading). @default 16 MiB */
  maxCompressedBytes: number;
  /** Bytes out of the decoder per request. @default 16 MiB */
  maxDecompressedBytes: number;
  /** Bytes per NDJSON line (= per item). @default 1 MiB */
  maxLineBytes: number;
  /** Items (non-blank lines) per request. @default 100_000 */
  maxItemsPerRequest: number;
  /** JSON nesting depth per item. @default 64 */
  maxDepth: number;
  /** Content codings accepted (at most one per request). @default identity, gzip, deflate, br */
  codings: Coding[];
  /** Decoder output chunk: the decompressed cap overshoots by at most this. @default 64 KiB */
  decoderChunkBytes: number;
  /** Requests decoded at once; more get 503 + Retry-After. @default 16 */
  maxConcurrentRequests: number;
}

export const SERVE_LIMIT_DEFAULTS: Readonly<ServeLimits> = Object.freeze({
  maxCompressedBytes: 16 * 2 ** 20,
  maxDecompressedBytes: 16 * 2 ** 20,
  maxLineBytes: 2 ** 20,
  maxItemsPerRequest: 100_000,
  maxDepth: 64,
  codings: [...KNOWN_CODINGS],
  decoderChunkBytes: 64 * 1024,
  maxConcurrentRequests: 16,
});

export interface ServeOptions {
  /** The sink the pipeline writes to; the server closes it on close(). */
  sink: Sink<unknown>;
  /** @default '127.0.0.1' */
  host?: string;
  /** 0 = a free port. @default 0 */
  port?: number;
  limits?: Partial<ServeLimits>;
  /** @default 'per-line' */
  mode?: IngestMode;
  /** When the answer is sent: after the request's items are committed, or once accepted. @default 'commit' */
  ack?: AckMode;
  /**
   * When a request's items are cut into a batch. `request`: as soon as the last one is
   * enqueued (a request is a batch already; nothing else is waited for, and while the sink is
   * busy the items of every request that arrives meanwhile go into the next batch together:
   * group commit). `window`: when the window fills or its oldest item has waited `maxWaitMs`.
   * @default 'request'
   */
  flush?: FlushMode;
  /** Item schema (TypeBox). @default a JSON object */
  schema?: TSchema;
  window?: Partial<WindowOptions>;
  /** @default block policy, blockTimeoutMs 1000 */
  queue?: Partial<QueueOptions>;
  /** Seconds sent in Retry-After with 429/503. @default 1 */
  retryAfterSeconds?: number;
  /** After an early answer (413…), how long the rest of the body may keep arriving before the socket is closed. @default 2000 */
  lingerMs?: number;
  /** Per-line errors listed in a response, at most (the counts are always complete). @default 1000 */
  maxErrorsListed?: number;
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  pipeline: Pipeline<unknown>;
  metrics: PipelineMetrics<unknown>;
  exposition: Exposition;
  /** Stops accepting, waits for requests in progress, drains the pipeline, closes the sink. Idempotent. */
  close(): Promise<LedgerSnapshot>;
}

interface LineError {
  line: number;
  reason: ItemRejectReason | 'queue-full' | 'closed' | 'dropped' | 'dead-lettered';
  message: string;
}

/** Per request: counts items that reach a terminal state, so the answer can wait for commit. */
class Ticket {
  outstanding = 0;
  committed = 0;
  dropped = 0;
  deadLettered = 0;
  readonly lost: LineError[] = [];
  private enqueueDone = false;
  private resolveDone: (() => void) | null = null;
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  settle(kind: 'committed' | 'dropped' | 'deadLettered', line: number, why: string): void {
    this[kind]++;
    if (kind !== 'committed') this.lost.push({ line, reason: kind === 'dropped' ? 'dropped' : 'dead-lettered', message: why });
    this.outstanding--;
    this.maybeDone();
  }
  finishEnqueue(): void {
    this.enqueueDone = true;
    this.maybeDone();
  }
  private maybeDone(): void {
    if (this.enqueueDone && this.outstanding === 0 && this.resolveDone) {
      this.resolveDone();
      this.resolveDone = null;
    }
  }
}

interface ItemMeta {
  ticket: Ticket;
  line: number;
}

/** Routes pipeline outcomes back to each item's request. */
const ticketObserver: PipelineObserver<unknown> = {
  onCommitted(batch) {
    for (const e of batch) (e.meta as ItemMeta | undefined)?.ticket.settle('committed', (e.meta as ItemMeta).line, '');
  },
  onDropped(items, reason) {
    if (typeof items === 'number') return;
    for (const e of items) (e.meta as ItemMeta | undefined)?.ticket.settle('dropped', (e.meta as ItemMeta).line, reason);
  },
  onDeadLettered(items, _now, error) {
    for (const e of items) (e.meta as ItemMeta | undefined)?.ticket.settle('deadLettered', (e.meta as ItemMeta).line, String((error as Error)?.message ?? error));
  },
};

function resolveLimits(partial: Partial<ServeLimits> = {}): ServeLimits {
  const l: ServeLimits = { ...SERVE_LIMIT_DEFAULTS, codings: [...SERVE_LIMIT_DEFAULTS.codings] };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (l as unknown as Record<string, unknown>)[k] = v;
  for (const k of ['maxCompressedBytes', 'maxDecompressedBytes', 'maxLineBytes', 'maxItemsPerRequest', 'maxDepth', 'maxConcurrentRequests'] as const)
    if (!Number.isInteger(l[k]) || l[k] < 1) throw invalidOption(k, l[k], 'an integer ≥ 1');
  if (!Array.isArray(l.codings) || l.codings.length === 0 || l.codings.some((c) => !KNOWN_CODINGS.includes(c)))
    throw invalidOption('codings', l.codings, `a non-empty list of ${KNOWN_CODINGS.join(', ')}`);
  if (l.maxLineBytes > l.maxDecompressedBytes)
    throw invalidOption('maxLineBytes', l.maxLineBytes, `at most maxDecompressedBytes (${l.maxDecompressedBytes})`);
  return l;
}

/** HTTP status for a request-level SluiceError, and the reason label counted for it. */
function statusOf(e: SluiceError): { status: number; reason: string } {
  switch (e.code) {
    case ErrorCode.CompressedTooLarge:
    case ErrorCode.DecompressedTooLarge:
    case ErrorCode.LineTooLarge:
    case ErrorCode.TooManyItems:
      return { status: 413, reason: String(e.details.cap) };
    case ErrorCode.UnsupportedEncoding:
      return { status: 415, reason: e.details.reason === 'stacked' ? 'stacked-encoding' : 'unknown-encoding' };
    case ErrorCode.MalformedInput:
      return { status: 400, reason: String(e.details.reason ?? 'malformed') };
    case ErrorCode.QueueFull:
      return { status: 429, reason: 'queue-full' };
    case ErrorCode.Closed:
      return { status: 503, reason: 'closing' };
    default:
      return { status: 500, reason: 'internal' };
  }
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  if (!opts?.sink) throw invalidOption('sink', opts?.sink, 'a Sink');
  const limits = resolveLimits(opts.limits);
  const mode = opts.mode ?? 'per-line';
  if (!INGEST_MODES.includes(mode)) throw invalidOption('mode', mode, `one of ${INGEST_MODES.join(', ')}`);
  const ack = opts.ack ?? 'commit';
  if (!ACK_MODES.includes(ack)) throw invalidOption('ack', ack, `one of ${ACK_MODES.join(', ')}`);
  const flush = opts.flush ?? 'request';
  if (!FLUSH_MODES.includes(flush)) throw invalidOption('flush', flush, `one of ${FLUSH_MODES.join(', ')}`);
  const retryAfter = String(opts.retryAfterSeconds ?? 1);
  const lingerMs = opts.lingerMs ?? 2000;
  const maxErrorsListed = opts.maxErrorsListed ?? 1000;
  const log = opts.log ?? (() => {});
  const validator = new ItemValidator({ maxItemBytes: limits.maxLineBytes, maxDepth: limits.maxDepth, schema: opts.schema });

  const sink = watchSink(opts.sink); // sluice_sink_up and the live page's sink state
  const metrics = new PipelineMetrics<unknown>(sink);
  const pipeline = new Pipeline<unknown>({
    sink,
    window: opts.window,
    queue: { policy: 'block', blockTimeoutMs: 1000, ...opts.queue },
    observers: [metrics, ticketObserver],
    name: 'serve',
  });
  metrics.attach(pipeline);
  // A line the batch window could never hold would fail at offer time: refuse the configuration now.
  if (limits.maxLineBytes > pipeline.window().maxBytes)
    throw invalidOption('maxLineBytes', limits.maxLineBytes, `at most the window's maxBytes (${pipeline.window().maxBytes})`);
  const exposition = prometheusFor(pipeline, metrics);
  const live = liveView({ pipeline, metrics, kind: 'serve' });
  const reg = [exposition.registry];
  const requestsRejected = new client.Counter({ name: 'sluice_http_requests_rejected_total', help: 'Requests refused as a whole, by reason.', labelNames: ['reason'], registers: reg });
  const itemsRejected = new client.Counter({ name: 'sluice_http_items_rejected_total', help: 'Items (lines) refused, by reason.', labelNames: ['reason'], registers: reg });
  const requestsTotal = new client.Counter({ name: 'sluice_http_requests_total', help: 'HTTP answers, by status.', labelNames: ['status'], registers: reg });
  const compressedBytes = new client.Counter({ name: 'sluice_http_compressed_bytes_total', help: 'Request body bytes read (as sent).', registers: reg });
  const decompressedBytes = new client.Counter({
    name: 'sluice_http_decompressed_bytes_total',
    help: 'Bytes read out of decoders (including a chunk that crossed the cap).',
    registers: reg,
  });
  const ratio = new client.Histogram({
    name: 'sluice_http_compression_ratio',
    help: 'Decompressed ÷ compressed bytes per request (capped requests: up to the cap).',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 1024, 16384, 1048576],
    registers: reg,
  });

  let active = 0;
  let closing: Promise<LedgerSnapshot> | null = null;
  const inProgress = new Set<Promise<void>>();

  function send(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    requestsTotal.inc({ status: String(status) });
    const json = JSON.stringify(body) + '\n';
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), ...headers });
    if (req.complete) return void res.end(json);
    // Answered before the body ended (a cap). Ending the response now would let Node close
    // the socket with body bytes unread, and the kernel's reset can reach the client before
    // it reads the answer (it saw EPIPE instead of 413 in the bomb lab). So: send the whole
    // answer (content-length makes it complete for the client), discard what still arrives
    // without buffering, and end once the body ends — or after lingerMs, closing the socket.
    res.write(json);
    req.resume();
    let ended = false;
    const endResponse = () => {
      if (ended) return;
      ended = true;
      clearTimeout(t);
      res.end();
    };
    const t = setTimeout(() => {
      endResponse();
      req.socket.destroy();
    }, lingerMs);
    t.unref();
    req.once('end', endResponse);
    req.once('close', endResponse);
  }

  function refuse(req: IncomingMessage, res: ServerResponse, e: SluiceError, extra: Record<string, unknown> = {}): void {
    const { status, reason } = statusOf(e);
    requestsRejected.inc({ reason });
    const headers: Record<string, string> = status === 429 || status === 503 ? { 'retry-after': retryAfter } : {};
    send(req, res, status, { error: e.code, message: e.message, ...e.details, ...extra, reason }, headers);
  }

  /**
   * Decodes the body into `framer` under the caps, counting into `stats`. A small body is
   * decoded at once (see SMALL_BODY_BYTES): no thread-pool round trips, which a good request
   * would otherwise share with bombs being decoded and with the sink's fdatasync.
   */
  async function decodeInto(req: IncomingMessage, coding: Coding, framer: NdjsonFramer, stats: DecodeStats): Promise<void> {
    let source: Readable = req;
    const cl = req.headers['content-length'];
    if (cl !== undefined && Number(cl) <= SMALL_BODY_BYTES && coding !== 'br') {
      const whole = await readWhole(req);
      stats.compressedBytes = whole.length;
      const bound = Math.min(SYNC_DECODE_BYTES, limits.maxDecompressedBytes);
      const out = decodeSmallSync(whole, coding, bound);
      if (out) {
        stats.decompressedBytesRead = stats.decompressedBytesPassed = out.length;
        return framer.push(out);
      }
      // Decodes to more than the bound: stream it from the start under the caps. The attempt's
      // output (≤ bound + one zlib chunk) is dropped already and not counted: the counter (and
      // the cap + one chunk bound) is about the decoder whose output is framed.
      source = Readable.from([whole]);
    }
    const body = boundedDecode(source, coding, {
      maxCompressedBytes: limits.maxCompressedBytes,
      maxDecompressedBytes: limits.maxDecompressedBytes,
      decoderChunkBytes: limits.decoderChunkBytes,
    });
    try {
      for await (const chunk of body.chunks) framer.push(chunk);
    } finally {
      Object.assign(stats, body.stats);
    }
  }

  async function ingest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const cl = req.headers['content-length'];
    if (cl !== undefined && Number(cl) > limits.maxCompressedBytes)
      return refuse(
        req,
        res,
        new SluiceError(ErrorCode.CompressedTooLarge, `Content-Length ${cl} exceeds ${limits.maxCompressedBytes} bytes`, {
          details: { cap: 'compressed-bytes', limit: limits.maxCompressedBytes, read: 0 },
        }),
      );
    let coding: Coding;
    try {
      coding = parseContentEncoding(req.headers['content-encoding'], limits.codings);
    } catch (e) {
      return refuse(req, res, e as SluiceError);
    }

    const staged: Envelope<unknown>[] = [];
    const errors: LineError[] = [];
    const byReason: Partial<Record<string, number>> = {};
    let rejectedLines = 0;
    const ticket = new Ticket();
    const reject = (line: number, reason: LineError['reason'], message: string) => {
      rejectedLines++;
      byReason[reason] = (byReason[reason] ?? 0) + 1;
      if (errors.length < maxErrorsListed) errors.push({ line, reason, message });
    };
    // Lines are only framed while the body arrives (views into the decoded chunks, at most
    // maxDecompressedBytes of them); validation waits until the whole body has passed the
    // request-level caps, so a bomb costs decoding and framing up to a cap, never parsing.
    const rawLines: Buffer[] = [];
    const lineNos: number[] = [];
    const framer = new NdjsonFramer(
      (buf, line) => {
        rawLines.push(buf);
        lineNos.push(line);
      },
      { maxLineBytes: limits.maxLineBytes, maxItems: limits.maxItemsPerRequest },
    );
    const stats: DecodeStats = { compressedBytes: 0, decompressedBytesRead: 0, decompressedBytesPassed: 0 };
    try {
      await decodeInto(req, coding, framer, stats);
      framer.end();
    } catch (e) {
      if (isSluiceError(e)) return refuse(req, res, e, { decompressedBytesRead: stats.decompressedBytesRead });
      throw e;
    } finally {
      compressedBytes.inc(stats.compressedBytes);
      decompressedBytes.inc(stats.decompressedBytesRead);
      if (stats.compressedBytes > 0) ratio.observe(stats.decompressedBytesRead / stats.compressedBytes);
    }
    for (let i = 0; i < rawLines.length; i++) {
      // Yield now and then: a large batch must not hold the event loop from other requests.
      if (i > 0 && i % VALIDATE_SLICE === 0) await yieldToLoop();
      const buf = rawLines[i];
      const line = lineNos[i];
      const r = validator.validate(buf);
      if (r.ok) staged.push(envelope(r.value, { bytes: buf.length, intendedAtMs: t0, raw: buf, meta: { ticket, line } satisfies ItemMeta }));
      else reject(line, r.reason, r.message);
    }
    rawLines.length = 0;
    for (const [reason, n] of Object.entries(byReason)) itemsRejected.inc({ reason }, n);

    const lines = staged.length + rejectedLines;
    if (lines === 0) {
      requestsRejected.inc({ reason: 'empty' });
      return send(req, res, 400, { error: ErrorCode.MalformedInput, reason: 'empty', message: 'no NDJSON lines in the body', accepted: 0 });
    }
    if (staged.length === 0 || (mode === 'all-or-nothing' && rejectedLines > 0)) {
      requestsRejected.inc({ reason: staged.length === 0 ? 'no-valid-items' : 'all-or-nothing' });
      return send(req, res, 400, {
        error: ErrorCode.MalformedInput,
        reason: staged.length === 0 ? 'no-valid-items' : 'all-or-nothing',
        mode,
        lines,
        accepted: 0,
        rejected: rejectedLines,
        errors,
      });
    }

    // Enqueue in order. A block timeout stops here: the lines from the first refused one on
    // are not accepted, and the answer says which (the client resends them after Retry-After).
    let refused: SluiceError | null = null;
    let notAccepted = 0;
    for (let i = 0; i < staged.length; i++) {
      const env = staged[i];
      const line = (env.meta as ItemMeta).line;
      if (refused) {
        notAccepted++;
        continue;
      }
      ticket.outstanding++;
      try {
        // offer() first: no promise per item while the queue has room; put() only to wait.
        if (pipeline.offer(env) === 'full') await pipeline.put(env);
      } catch (e) {
        ticket.outstanding--;
        if (!isSluiceError(e)) throw e;
        refused = e;
        notAccepted++;
        reject(line, e.code === ErrorCode.QueueFull ? 'queue-full' : 'closed', e.message);
      }
    }
    const accepted = staged.length - notAccepted;
    ticket.finishEnqueue();
    // The whole request is in: cut it now rather than hold it (and its client) for a window
    // that only other requests could fill. If a batch is being written, this request's items
    // wait for it and leave with everything else queued meanwhile.
    if (flush === 'request' && accepted > 0) void pipeline.flush();
    if (ack === 'commit') await ticket.done;
    for (const l of ticket.lost) if (errors.length < maxErrorsListed) errors.push(l);
    const result = {
      mode,
      lines,
      accepted,
      committed: ack === 'commit' ? ticket.committed : undefined,
      dropped: ticket.dropped,
      deadLettered: ticket.deadLettered,
      rejected: rejectedLines - notAccepted,
      notAccepted,
      errors,
      errorsListed: errors.length,
    };
    if (refused) {
      const { status, reason } = statusOf(refused);
      requestsRejected.inc({ reason });
      const firstNotAccepted = (staged[accepted]?.meta as ItemMeta | undefined)?.line;
      return send(req, res, status, { error: refused.code, reason, message: refused.message, firstNotAcceptedLine: firstNotAccepted, ...result }, {
        'retry-after': retryAfter,
      });
    }
    if (ticket.dropped > 0) {
      // Dropped by the overflow policy or a failed sink write: the client should resend.
      return send(req, res, 503, { error: 'SLUICE_DROPPED', reason: 'dropped', ...result }, { 'retry-after': retryAfter });
    }
    send(req, res, rejectedLines > 0 || ticket.deadLettered > 0 ? 207 : 200, result);
  }

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/ingest') {
      if (req.method !== 'POST') return void send(req, res, 405, { error: 'method not allowed', allow: 'POST' }, { allow: 'POST' });
      if (closing) return refuse(req, res, new SluiceError(ErrorCode.Closed, 'server is shutting down'));
      if (active >= limits.maxConcurrentRequests) {
        requestsRejected.inc({ reason: 'concurrency' });
        return void send(req, res, 503, { error: 'SLUICE_OVERLOADED', reason: 'concurrency', limit: limits.maxConcurrentRequests }, { 'retry-after': retryAfter });
      }
      active++;
      const p = ingest(req, res)
        .catch((e) => {
          log(`ingest failed: ${(e as Error)?.stack ?? e}`);
          if (!res.headersSent) send(req, res, 500, { error: 'internal', message: String((e as Error)?.message ?? e) });
        })
        .finally(() => {
          active--;
          inProgress.delete(p);
        });
      inProgress.add(p);
      return;
    }
    if (req.method !== 'GET') return void send(req, res, 405, { error: 'method not allowed', allow: 'GET' }, { allow: 'GET' });
    if (live.route(req, res)) return; // GET / (the live page) and GET /live/events
    if (path === '/healthz') {
      const state = pipeline.state();
      return void send(req, res, closing ? 503 : 200, { status: closing ? 'closing' : 'ok', state, activeRequests: active });
    }
    if (path === '/metrics') {
      exposition.text().then(
        (text) => {
          res.writeHead(200, { 'content-type': exposition.contentType });
          res.end(text);
        },
        (e) => send(req, res, 500, { error: String(e) }),
      );
      return;
    }
    send(req, res, 404, { error: 'not found', endpoints: ['POST /ingest', 'GET /metrics', 'GET /healthz'] });
  });
  // Slow-loris bounds: a body must arrive within requestTimeout.
  server.requestTimeout = 60_000;
  server.headersTimeout = 10_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;

  function close(): Promise<LedgerSnapshot> {
    if (closing) return closing;
    closing = (async () => {
      live.close();
      const stopped = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      while (inProgress.size > 0) await Promise.allSettled([...inProgress]);
      server.closeIdleConnections();
      // Connections still open after the answers are out are keep-alive sockets mid-linger.
      const force = setTimeout(() => server.closeAllConnections(), lingerMs);
      await stopped;
      clearTimeout(force);
      await pipeline.close();
      await opts.sink.close();
      return pipeline.stats().ledger;
    })();
    return closing;
  }

  return { url, port: addr.port, pipeline, metrics, exposition, close };
}

