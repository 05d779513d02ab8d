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
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import client from 'prom-client';
import type { TSchema } from '@sinclair/typebox';
import { ErrorCode, SluiceError, invalidOption, isSluiceError } from '../core/errors.js';
import { Pipeline } from '../core/pipeline.js';
import type { LedgerSnapshot } from '../core/ledger.js';
import type { QueueOptions, WindowOptions } from '../core/options.js';
import { envelope, type BatchHandler, type Envelope, type PipelineObserver, type Sink } from '../core/types.js';
import { PipelineMetrics } from '../metrics/metrics.js';
import { prometheusFor, type Exposition } from '../metrics/prometheus.js';
import { liveView } from '../metrics/live.js';
import { Readable } from 'node:stream';
import { boundedDecode, decodeSmallSync, KNOWN_CODINGS, parseContentEncoding, type Coding, type DecodeStats } from '../codec/bounded-decode.js';
import { NdjsonFramer } from '../codec/ndjson.js';
import { ItemValidator, type ItemRejectReason } from '../codec/validate.js';
import type { RecordCheck } from '../codec/json-schema.js';
import { RecordIdRule } from '../codec/record-id.js';
import { matchDoor, type DoorContext } from './doors/index.js';
import { Authenticator, loadTokensFile, routeOf, targetOf, type Principal, type TokenEntry } from './auth.js';
import { SINK_TARGET_ATTR, TargetRoutingSink } from '../sinks/routing.js';
import { createFrontDoorServer, reloadTls, type TlsFiles } from './tls.js';

/** Items validated between two yields to the event loop (≈1 ms of work for small records). */
const VALIDATE_SLICE = 1000;
/**
 * A body of at most this many bytes as sent (by Content-Length), gzip, deflate or identity, is
 * read whole and decoded at once on the event loop, when it decodes to at most
 * SYNC_DECODE_BYTES (≈0.1–0.5 ms of inflate); else it is streamed through `boundedDecode`.
 */
export const SMALL_BODY_BYTES = 64 * 1024;
export const SYNC_DECODE_BYTES = 256 * 1024;

/**
 * Reads a body until `n` bytes or its end, whichever comes first, then pauses it: the rest is
 * read later (async iteration resumes it). `ended`: the whole body is in `buf`. Rejects if the
 * client aborts.
 */
function readPrefix(req: IncomingMessage, n: number): Promise<{ buf: Buffer; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    let done = false;
    const off = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAbort);
      req.off('close', onClose);
    };
    const finish = (ended: boolean) => {
      if (done) return;
      done = true;
      off();
      if (!ended) req.pause();
      resolve({ buf: parts.length === 1 ? parts[0] : Buffer.concat(parts, got), ended });
    };
    const onData = (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= n) finish(false);
    };
    const onEnd = () => finish(true);
    const onAbort = () => {
      if (done) return;
      done = true;
      off();
      reject(new SluiceError(ErrorCode.MalformedInput, 'request body aborted by the client', { details: { reason: 'aborted' } }));
    };
    const onClose = () => req.readableEnded || onAbort();
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onAbort);
    req.once('close', onClose);
  });
}

/** `prefix`, then the rest of `req`; ending early (a cap) leaves req alive for the answer to linger on. */
async function* joined(prefix: Buffer, req: IncomingMessage): AsyncGenerator<Buffer> {
  yield prefix;
  for await (const chunk of req.iterator({ destroyOnReturn: false })) yield chunk as Buffer;
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
  /** Requests decoded at once; more get 503 + Retry-After. A body of at most SMALL_BODY_BYTES is read before it takes a slot. @default 16 */
  maxConcurrentRequests: number;
  /**
   * A request body must arrive at least this fast, averaged from the request's start once
   * `bodyRateGraceMs` has passed; a slower one is answered 408 and its connection closed, so a
   * client trickling a body cannot hold a slot (or a socket) for `requestTimeoutMs`. @default 1024 (bytes/s)
   */
  minBodyBytesPerSec: number;
  /** How long a body may arrive at any rate before `minBodyBytesPerSec` applies. @default 5000 */
  bodyRateGraceMs: number;
  /** The whole request header must arrive within this; checked every second, not by Node's 30 s sweep. @default 10_000 */
  headersTimeoutMs: number;
  /** The whole request must arrive within this. @default 60_000 */
  requestTimeoutMs: number;
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
  minBodyBytesPerSec: 1024,
  bodyRateGraceMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
});

export interface ServeOptions {
  /** The sink the pipeline writes to; the server closes it on close(). */
  sink: Sink<unknown>;
  /**
   * What becomes of a batch: e.g. `splitAndRetry(sink, { dlq })`, so that a record the sink
   * refuses is dead-lettered alone (its line is answered `dead-lettered`, 207) and the rest of
   * the batch commits. `sluice serve` always gives one. @default the pipeline's default handler
   */
  handler?: BatchHandler<unknown>;
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
  /** Item schema (TypeBox), for library users. @default none: any JSON value is a record */
  schema?: TSchema;
  /** Item check, e.g. `loadJsonSchema(file)` (`--schema FILE`); refused lines are answered per line. @default none */
  check?: RecordCheck;
  /**
   * Field holding each record's id (dotted path): the idempotence key in the sink, so a
   * re-POST stores nothing twice. Without it (or for a record that lacks it) the id is a
   * content hash of the line (docs/records.md). @default none
   */
  idField?: string;
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
  /** More pipeline observers (e.g. a window controller, `--slo-p99-ms`), after the server's own. @default none */
  observers?: PipelineObserver<unknown>[];
  /** Serve HTTPS with these PEM files (`clientCa`: mutual TLS); `reload()` re-reads them. @default plain HTTP */
  tls?: TlsFiles;
  /**
   * Who may write (src/sources/auth.ts, docs/serve.md "Running it on a network"): every known
   * route, /metrics and /healthz included, then needs a token of the file that allows it.
   * `reload()` re-reads the file. @default none: anyone who reaches the port may write
   *
   * A token may name a table or stream (TokenEntry `table`/`stream`): `sink` must then be a
   * TargetRoutingSink holding a sink for it (`sluice serve` opens them); a tokens file naming
   * a target it does not hold is refused, at start and on reload.
   */
  auth?: { tokensFile: string };
}

/** Tokens whose table/stream the server holds no sink for: refused with one line. */
function checkTargets(tokens: readonly TokenEntry[], sink: Sink<unknown>, where: string): void {
  const held = sink instanceof TargetRoutingSink ? new Set(sink.targetNames()) : new Set<string>();
  for (const t of tokens) {
    const target = targetOf(t);
    if (target !== undefined && !held.has(target))
      throw invalidOption(`${where}: tenant ${t.name}`, target, held.size > 0 ? `one of the tables/streams opened at start (${[...held].join(', ')}); restart serve to add one` : 'absent: this server opened no per-tenant table or stream (restart serve to add one)');
  }
}

/** Marks a request's records with its tenant's sink target (read by TargetRoutingSink). */
function stampTarget(staged: readonly Envelope<unknown>[], who: Principal | undefined): void {
  if (who?.target === undefined) return;
  for (const e of staged) e.attrs = { ...e.attrs, [SINK_TARGET_ATTR]: who.target };
}

export interface RunningServer {
  url: string;
  port: number;
  pipeline: Pipeline<unknown>;
  metrics: PipelineMetrics<unknown>;
  exposition: Exposition;
  /** Stops accepting, waits for requests in progress, drains the pipeline, closes the sink. Idempotent. */
  close(): Promise<LedgerSnapshot>;
  /** Re-reads the TLS files and the tokens file (SIGHUP in `sluice serve`); throws, keeping the old ones, when one is invalid. */
  reload(): void;
}

export interface LineError {
  line: number;
  reason: ItemRejectReason | 'queue-full' | 'closed' | 'dropped' | 'dead-lettered';
  message: string;
}

/** Per request: counts items that reach a terminal state, so the answer can wait for commit. */
export class Ticket {
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

export interface ItemMeta {
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
  for (const k of ['maxCompressedBytes', 'maxDecompressedBytes', 'maxLineBytes', 'maxItemsPerRequest', 'maxDepth', 'maxConcurrentRequests', 'bodyRateGraceMs', 'headersTimeoutMs', 'requestTimeoutMs'] as const)
    if (!Number.isInteger(l[k]) || l[k] < 1) throw invalidOption(k, l[k], 'an integer ≥ 1');
  if (!Number.isFinite(l.minBodyBytesPerSec) || l.minBodyBytesPerSec < 0) throw invalidOption('minBodyBytesPerSec', l.minBodyBytesPerSec, 'a number ≥ 0 (0 = no minimum)');
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
  const validator = new ItemValidator({ maxItemBytes: limits.maxLineBytes, maxDepth: limits.maxDepth, schema: opts.schema, check: opts.check });
  const idRule = new RecordIdRule({ idField: opts.idField });

  const metrics = new PipelineMetrics<unknown>(opts.sink);
  const pipeline = new Pipeline<unknown>({
    sink: opts.sink,
    handler: opts.handler,
    window: opts.window,
    queue: { policy: 'block', blockTimeoutMs: 1000, ...opts.queue },
    observers: [metrics, ticketObserver, ...(opts.observers ?? [])],
    name: 'serve',
  });
  metrics.attach(pipeline);
  // A line the batch window could never hold would fail at offer time: refuse the configuration now.
  if (limits.maxLineBytes > pipeline.window().maxBytes)
    throw invalidOption('maxLineBytes', limits.maxLineBytes, `at most the window's maxBytes (${pipeline.window().maxBytes})`);
  const exposition = prometheusFor(pipeline, metrics);
  const live = liveView({ pipeline, metrics, kind: 'serve' });
  const reg = [exposition.registry];
  // The sink's health as the handler sees it: /healthz, sluice_sink_up, and one log line when
  // it goes down and one when it comes back (not one per retry).
  const health = pipeline.sinkHealth();
  if (health) {
    health.onDown((_e, i) => log(`sink down: ${opts.sink.name} ${i.sinkCode ?? ''} ${i.message}; retrying until it is back (requests get 503 once the queue is full)`));
    health.onUp((outageMs, i) => log(`sink back: ${opts.sink.name} after ${(outageMs / 1000).toFixed(1)} s (${i.retries} retries)`));
  }
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

  // Who may write: checked from the headers alone, before any body byte is read (src/sources/auth.ts).
  const initialTokens = opts.auth ? loadTokensFile(opts.auth.tokensFile) : null;
  if (initialTokens) checkTargets(initialTokens, opts.sink, opts.auth!.tokensFile);
  const auth = initialTokens ? new Authenticator({ tokens: initialTokens, registry: exposition.registry, log }) : null;
  const principals = new WeakMap<IncomingMessage, Principal>();

  let active = 0;
  // Per request: a small body read before its slot was taken, and when the request arrived.
  const preReads = new WeakMap<IncomingMessage, Buffer>();
  // The first bytes of a larger body, read before it took its slot; the rest follows from req.
  const prefixes = new WeakMap<IncomingMessage, Buffer>();
  // Requests holding a concurrency slot. A slot guards decoding and staging (the memory a
  // request can pin); it is given back once the request's records are enqueued, so clients
  // waiting for their commit (a slow or down sink) never hold the door shut: the queue bounds them.
  const holding = new WeakSet<IncomingMessage>();
  const releaseSlot = (req: IncomingMessage) => {
    if (holding.delete(req)) active--;
  };
  const arrivedAt = new WeakMap<IncomingMessage, number>();
  let closing: Promise<LedgerSnapshot> | null = null;
  const inProgress = new Set<Promise<void>>();

  function send(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    sendBody(req, res, status, JSON.stringify(body) + '\n', 'application/json', headers);
  }

  function sendBody(req: IncomingMessage, res: ServerResponse, status: number, json: string | Uint8Array, contentType: string, headers: Record<string, string> = {}): void {
    requestsTotal.inc({ status: String(status) });
    if (res.headersSent || res.destroyed) return;
    // Answered before the body ended: the connection is not reused (RFC 9112 §9.6). A
    // keep-alive client would otherwise send its next request on a socket this server closes
    // after the linger below, and see ECONNRESET instead of an answer (the bomb lab's load
    // phase: bombs answered 413 on two keep-alive connections, the next ones reset).
    const early = !req.complete;
    res.writeHead(status, { ...(json.length > 0 ? { 'content-type': contentType } : {}), 'content-length': Buffer.byteLength(json), ...headers, ...(early ? { connection: 'close' } : {}) });
    if (!early) return void res.end(json);
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
    const { status, reason } = refusal(e);
    requestsRejected.inc({ reason });
    const headers: Record<string, string> = status === 429 || status === 503 ? { 'retry-after': retryAfter } : {};
    send(req, res, status, { error: e.code, message: e.message, ...e.details, ...extra, reason }, headers);
  }

  /** statusOf, except that a full queue behind a sink that is down is 503 (unavailable), not 429 (slow down). */
  function refusal(e: SluiceError): { status: number; reason: string } {
    const r = statusOf(e);
    if (r.status === 429 && health && !health.isUp()) return { status: 503, reason: 'sink-down' };
    return r;
  }

  /**
   * Cuts a request whose body arrives slower than `minBodyBytesPerSec` (after the grace): 408,
   * connection closed. Reads the socket's byte count, not the body stream, so it never changes
   * how the body is consumed. Returns a stop function.
   */
  function guardBodyRate(req: IncomingMessage, res: ServerResponse): () => void {
    if (limits.minBodyBytesPerSec <= 0) return () => {};
    const start = performance.now();
    const base = req.socket.bytesRead;
    const t = setInterval(() => {
      if (req.complete || res.writableEnded) return stop();
      const elapsedMs = performance.now() - start;
      if (elapsedMs < limits.bodyRateGraceMs) return;
      const rate = ((req.socket.bytesRead - base) * 1000) / elapsedMs;
      if (rate >= limits.minBodyBytesPerSec) return;
      stop();
      requestsRejected.inc({ reason: 'slow-body' });
      requestsTotal.inc({ status: '408' });
      if (!res.headersSent) {
        const json = JSON.stringify({ error: 'SLUICE_TOO_SLOW', reason: 'slow-body', minBodyBytesPerSec: limits.minBodyBytesPerSec, bytesPerSec: Math.round(rate) }) + '\n';
        res.writeHead(408, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), connection: 'close' });
        res.end(json);
      }
      // The client is not reading at our pace either: do not wait for it to drain the answer.
      // Destroying the request (not only its socket) ends the reads waiting on its body. Not
      // unref'd: a close() in progress must see this request end.
      setTimeout(() => req.destroy(new SluiceError(ErrorCode.MalformedInput, 'request body too slow', { details: { reason: 'slow-body' } })), 100);
    }, 1000);
    t.unref();
    const stop = () => clearInterval(t);
    return stop;
  }

  /**
   * Decodes the body into `framer` under the caps, counting into `stats`. A small body is
   * decoded at once (see SMALL_BODY_BYTES): no thread-pool round trips, which a good request
   * would otherwise share with bombs being decoded and with the sink's fdatasync.
   */
  async function decodeInto(req: IncomingMessage, coding: Coding, framer: { push(chunk: Buffer): void }, stats: DecodeStats): Promise<void> {
    const preRead = preReads.get(req) ?? null;
    const prefix = prefixes.get(req);
    let source: Readable = preRead ? Readable.from([preRead]) : prefix ? Readable.from(joined(prefix, req)) : req;
    if (preRead && coding !== 'br') {
      const whole = preRead;
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

  /**
   * Offers `staged` in order (each envelope's meta an ItemMeta of `ticket`). A block timeout
   * stops here: the items from the first refused one on are not accepted (`accepted` is
   * their index), and the caller says which (the client resends them after Retry-After).
   * Then cuts the batch (flush 'request') and, with ack 'commit', waits for the ticket.
   */
  async function enqueueStaged(staged: readonly Envelope<unknown>[], ticket: Ticket, enqueued?: () => void): Promise<{ accepted: number; refused: SluiceError | null }> {
    let refused: SluiceError | null = null;
    let accepted = 0;
    for (; accepted < staged.length; accepted++) {
      const env = staged[accepted];
      ticket.outstanding++;
      try {
        // offer() first: no promise per item while the queue has room; put() only to wait.
        if (pipeline.offer(env) === 'full') await pipeline.put(env);
      } catch (e) {
        ticket.outstanding--;
        if (!isSluiceError(e)) throw e;
        refused = e;
        break;
      }
    }
    ticket.finishEnqueue();
    // The whole request is in: cut it now rather than hold it (and its client) for a window
    // that only other requests could fill. If a batch is being written, this request's items
    // wait for it and leave with everything else queued meanwhile.
    if (flush === 'request' && accepted > 0) void pipeline.flush();
    enqueued?.();
    if (ack === 'commit') await ticket.done;
    return { accepted, refused };
  }

  /**
   * The body under every request-level cap: Content-Length vs the compressed cap, one known
   * Content-Encoding, bounded decode into `target` (which may throw a cap error of its own).
   * On a refusal, answers through `onRefuse` (default: the JSON refusal) and returns false.
   */
  async function readBody(
    req: IncomingMessage,
    res: ServerResponse,
    target: { push(chunk: Buffer): void; end?(): void },
    onRefuse: (e: SluiceError, extra: Record<string, unknown>) => void = (e, extra) => refuse(req, res, e, extra),
  ): Promise<boolean> {
    const cl = req.headers['content-length'];
    if (cl !== undefined && Number(cl) > limits.maxCompressedBytes) {
      onRefuse(
        new SluiceError(ErrorCode.CompressedTooLarge, `Content-Length ${cl} exceeds ${limits.maxCompressedBytes} bytes`, {
          details: { cap: 'compressed-bytes', limit: limits.maxCompressedBytes, read: 0 },
        }),
        {},
      );
      return false;
    }
    let coding: Coding;
    try {
      coding = parseContentEncoding(req.headers['content-encoding'], limits.codings);
    } catch (e) {
      onRefuse(e as SluiceError, {});
      return false;
    }
    const stats: DecodeStats = { compressedBytes: 0, decompressedBytesRead: 0, decompressedBytesPassed: 0 };
    try {
      await decodeInto(req, coding, target, stats);
      target.end?.();
      return true;
    } catch (e) {
      if (!isSluiceError(e)) throw e;
      onRefuse(e, { decompressedBytesRead: stats.decompressedBytesRead });
      return false;
    } finally {
      const who = principals.get(req);
      if (who) auth!.chargeBytes(who, stats.decompressedBytesRead);
      compressedBytes.inc(stats.compressedBytes);
      decompressedBytes.inc(stats.decompressedBytesRead);
      if (stats.compressedBytes > 0) ratio.observe(stats.decompressedBytesRead / stats.compressedBytes);
    }
  }

  async function ingest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Latency runs from the request's arrival, not from when a slot or the body was had.
    const t0 = arrivedAt.get(req) ?? performance.now();

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
    if (!(await readBody(req, res, framer))) return;
    for (let i = 0; i < rawLines.length; i++) {
      // Yield now and then: a large batch must not hold the event loop from other requests.
      if (i > 0 && i % VALIDATE_SLICE === 0) await yieldToLoop();
      const buf = rawLines[i];
      const line = lineNos[i];
      const r = validator.validate(buf);
      if (r.ok) staged.push(envelope(r.value, { bytes: buf.length, intendedAtMs: t0, raw: buf, id: idRule.id(buf, r.value), meta: { ticket, line } satisfies ItemMeta }));
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

    // While the sink is down, a request the queue cannot hold whole is refused whole (503),
    // before any of it is accepted: its answer would otherwise wait for the sink to come back
    // to commit the part that fitted. A request that fits waits for its commit as usual.
    if (health && !health.isUp()) {
      const st = pipeline.stats();
      const roomItems = st.queue.maxItems - st.queueItems;
      let bytes = 0;
      for (const e of staged) bytes += e.bytes;
      if (staged.length > roomItems || bytes > st.queue.maxBytes - st.queueBytes) {
        const h = health.snapshot();
        requestsRejected.inc({ reason: 'sink-down' });
        return send(
          req,
          res,
          503,
          { error: 'SLUICE_SINK_UNAVAILABLE', reason: 'sink-down', message: `the sink is down (${h.lastError?.sinkCode ?? 'unknown'}) and the queue cannot hold this request; retry later`, lines, accepted: 0, rejected: rejectedLines, errors },
          { 'retry-after': retryAfter },
        );
      }
    }

    // Enqueue in order. A block timeout stops here: the lines from the first refused one on
    // are not accepted, and the answer says which (the client resends them after Retry-After).
    const who = principals.get(req);
    if (who) auth!.chargeRecords(who, staged.length);
    stampTarget(staged, who);
    const { accepted, refused } = await enqueueStaged(staged, ticket, () => releaseSlot(req));
    const notAccepted = staged.length - accepted;
    if (refused) reject((staged[accepted].meta as ItemMeta).line, refused.code === ErrorCode.QueueFull ? 'queue-full' : 'closed', refused.message);
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
      const { status, reason } = refusal(refused);
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

  /** What the other front doors (./doors: _bulk, OTLP, Loki) share with /ingest. */
  const doorContext: DoorContext = {
    limits,
    validator,
    idRule,
    sink: opts.sink,
    ack,
    retryAfter,
    maxErrorsListed,
    send,
    sendBody,
    refuse,
    readBody,
    enqueueStaged,
    requestsRejected,
    itemsRejected,
    arrivedAt: (req) => arrivedAt.get(req) ?? performance.now(),
  };

  /** A door's context for one request: with auth, its records are charged to the request's tenant. */
  const contextFor = (req: IncomingMessage): DoorContext => {
    const who = principals.get(req);
    return {
      ...doorContext,
      // The tenant's own table or stream, when its token names one (its 409s are looked up there).
      ...(who?.target !== undefined && opts.sink instanceof TargetRoutingSink ? { sink: opts.sink.sinkFor(who.target) } : {}),
      enqueueStaged: (staged, ticket) => {
        if (who) auth!.chargeRecords(who, staged.length);
        stampTarget(staged, who);
        return enqueueStaged(staged, ticket, () => releaseSlot(req));
      },
    };
  };

  const server = createFrontDoorServer(opts.tls, { connectionsCheckingInterval: 1000 }, (req, res) => {
    // A request's records are timed from here, its arrival (headers parsed), not from when its
    // body was decoded: time spent behind the auth check, the gate or a slow body is latency too.
    arrivedAt.set(req, performance.now());
    const path = (req.url ?? '/').split('?', 1)[0];
    // Elasticsearch clients (8.x, 9.x) refuse any answer without this header (docs/serve.md).
    res.setHeader('x-elastic-product', 'Elasticsearch');
    // Who may write: decided from the headers, before the body is read or decoded (a bomb from
    // a client without a valid token is answered 401 and its bytes discarded undecoded).
    // GET / is two things: the live page for a browser (it asks for HTML), the Elasticsearch
    // version probe for a client or shipper (it asks for JSON). The page and its event stream
    // are monitoring, like /metrics: with tokens on, they take the metrics token.
    const wantsPage = req.method === 'GET' && ((path === '/' && /text\/html/.test(req.headers.accept ?? '')) || path === '/live/events');
    const route = auth ? (wantsPage ? 'metrics' : routeOf(path)) : null;
    if (route) {
      const v = auth!.authorize(req.headers, route);
      if (!v.ok) {
        requestsRejected.inc({ reason: v.reason });
        return void sendBody(req, res, v.status, v.body, v.contentType, v.headers);
      }
      principals.set(req, v.principal);
    }
    if (wantsPage && live.route(req, res)) return;
    const door = matchDoor(req.method ?? 'GET', path);
    if (door === 'method') return void send(req, res, 405, { error: 'method not allowed', allow: 'POST' }, { allow: 'POST' });
    if (door && !door.gated) return void door.handle(contextFor(req), req, res);
    if (path === '/ingest' || door) {
      if (!door && req.method !== 'POST') return void send(req, res, 405, { error: 'method not allowed', allow: 'POST' }, { allow: 'POST' });
      if (closing) return refuse(req, res, new SluiceError(ErrorCode.Closed, 'server is shutting down'));
      const stopGuard = guardBodyRate(req, res);
      // A body takes a concurrency slot only once its first SMALL_BODY_BYTES have arrived (a
      // small body: all of it), so clients trickling bodies hold sockets (until the rate guard
      // cuts them with 408), never the slots that decoding needs (issue 19: 32 trickling
      // clients starved good requests while a large declared body took a slot at once).
      const cl = req.headers['content-length'];
      const small = cl !== undefined && Number(cl) <= SMALL_BODY_BYTES;
      const p = (async () => {
        const head = await readPrefix(req, small ? Infinity : SMALL_BODY_BYTES).catch(() => null);
        if (head === null) return; // aborted or cut by the rate guard: nothing to answer
        if (head.ended) preReads.set(req, head.buf);
        else prefixes.set(req, head.buf);
        if (active >= limits.maxConcurrentRequests) {
          requestsRejected.inc({ reason: 'concurrency' });
          return void send(req, res, 503, { error: 'SLUICE_OVERLOADED', reason: 'concurrency', limit: limits.maxConcurrentRequests }, { 'retry-after': retryAfter });
        }
        active++;
        holding.add(req);
        try {
          await (door ? door.handle(contextFor(req), req, res) : ingest(req, res));
        } finally {
          releaseSlot(req);
        }
      })()
        .catch((e) => {
          log(`ingest failed: ${(e as Error)?.stack ?? e}`);
          if (!res.headersSent) send(req, res, 500, { error: 'internal', message: String((e as Error)?.message ?? e) });
        })
        .finally(() => {
          stopGuard();
          inProgress.delete(p);
        });
      inProgress.add(p);
      return;
    }
    if (req.method !== 'GET') return void send(req, res, 405, { error: 'method not allowed', allow: 'GET' }, { allow: 'GET' });
    if (live.route(req, res)) return; // GET / (the live page) and GET /live/events
    if (path === '/healthz') {
      const state = pipeline.state();
      if (closing) return void send(req, res, 503, { status: 'closing', state, activeRequests: active });
      if (health && !health.isUp()) {
        // Degraded, not dead: requests are still taken while the queue has room, and retried
        // into the sink when it is back. A load balancer should prefer another door.
        const h = health.snapshot();
        return void send(req, res, 503, { status: 'degraded', reason: 'sink-down', sink: opts.sink.name, sinkCode: h.lastError?.sinkCode ?? null, message: h.lastError?.message ?? null, downForMs: Math.round(h.downForMs ?? 0), state, activeRequests: active }, { 'retry-after': retryAfter });
      }
      return void send(req, res, 200, { status: 'ok', state, activeRequests: active });
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
    send(req, res, 404, { error: 'not found', endpoints: ['POST /ingest', 'GET /metrics', 'GET /healthz', 'POST /_bulk', 'POST /{index}/_bulk', 'POST /v1/logs', 'POST /loki/api/v1/push'] });
  });
  // Slow-loris bounds: the headers within headersTimeoutMs, the whole request within
  // requestTimeoutMs, both checked every second (Node checks every 30 s by default, which let
  // 16 clients trickling bodies hold every slot for 77 s: issue 19); bodies also keep a
  // minimum rate (guardBodyRate).
  server.requestTimeout = limits.requestTimeoutMs;
  server.headersTimeout = limits.headersTimeoutMs;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${opts.tls ? 'https' : 'http'}://${host}:${addr.port}`;
  if (auth) log(`auth: ${auth.tenantNames().length} tenants from ${opts.auth!.tokensFile} (${auth.describeTenants()})`);
  else if (!opts.tls && !['127.0.0.1', '::1', 'localhost'].includes(opts.host ?? '127.0.0.1'))
    log(`warning: serving ${url} without TLS or tokens: anyone who reaches it may write (docs/serve.md, "Running it on a network")`);

  function reload(): void {
    // Read both before swapping either, so an invalid file changes nothing.
    const tokens = opts.auth ? loadTokensFile(opts.auth.tokensFile) : null;
    if (tokens) checkTargets(tokens, opts.sink, opts.auth!.tokensFile);
    if (opts.tls) reloadTls(server, opts.tls);
    if (tokens) auth!.replace(tokens);
    log(`reloaded:${opts.tls ? ` TLS files (${opts.tls.cert})` : ''}${tokens ? ` ${tokens.length} tokens (${auth!.tenantNames().length} tenants)` : ''}${!opts.tls && !tokens ? ' nothing to reload' : ''}`);
  }

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

  return { url, port: addr.port, pipeline, metrics, exposition, close, reload };
}

