/**
 * OTLP/HTTP logs: `POST /v1/logs`, `application/x-protobuf` or `application/json`, any coding
 * /ingest accepts (docs/serve.md, "OTLP/HTTP logs"). One record per log record
 * (codec/otlp-logs.ts). Answers follow the OTLP specification (OTLP/HTTP, "Failures"): 200 with
 * `partialSuccess` for records refused by validation, 429/503 + Retry-After under backpressure
 * (the exporter retries the whole request; the items already accepted get the same ids again
 * — a content hash, or `idField` — so an idempotent sink stores them once), 400/413/415 not
 * retried, error bodies a google.rpc.Status in the request's content type.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, SluiceError } from '../../core/errors.js';
import type { Envelope } from '../../core/types.js';
import { countOtlpLogRecords, decodeOtlpJson, decodeOtlpProto, OtlpDecodeError, otlpLogRecords, otlpResponse, otlpStatus } from '../../codec/otlp-logs.js';
import { Ticket } from '../http.js';
import type { DoorContext } from './index.js';
import { Collector, countRejects, mediaType, stage } from './stage.js';

export async function otlpLogs(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = ctx.arrivedAt(req);
  const type = mediaType(req);
  const json = type === 'application/json';
  const ct = json ? 'application/json' : 'application/x-protobuf';
  // gRPC status codes in the Status body: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE.
  const fail = (status: number, reason: string, message: string, headers: Record<string, string> = {}) => {
    ctx.requestsRejected.inc({ reason });
    ctx.sendBody(req, res, status, otlpStatus(json, status === 400 || status === 415 ? 3 : status === 413 || status === 429 ? 8 : 14, message), ct, headers);
  };
  if (!json && type !== 'application/x-protobuf') return fail(415, 'unknown-content-type', `content type "${type}" is not application/x-protobuf or application/json`);
  const body = new Collector();
  const onRefuse = (e: SluiceError) => {
    const status = e.code === ErrorCode.UnsupportedEncoding ? 415 : e.code === ErrorCode.MalformedInput ? 400 : e.code === ErrorCode.Closed ? 503 : 413;
    fail(status, String(e.details.cap ?? e.details.reason ?? 'refused'), e.message, status === 503 ? { 'retry-after': ctx.retryAfter } : {});
  };
  if (!(await ctx.readBody(req, res, body, onRefuse))) return;

  let request: unknown;
  try {
    request = json ? decodeOtlpJson(body.buffer()) : decodeOtlpProto(body.buffer());
  } catch (e) {
    if (e instanceof OtlpDecodeError) return fail(400, 'malformed', e.message);
    throw e;
  }
  const n = countOtlpLogRecords(request);
  if (n > ctx.limits.maxItemsPerRequest) return fail(413, 'items', `request holds ${n} log records, more than ${ctx.limits.maxItemsPerRequest}`);
  const mapped = otlpLogRecords(request, ctx.limits.maxDepth);

  const ticket = new Ticket();
  const staged: Envelope<unknown>[] = [];
  const byReason = new Map<string, number>();
  let firstError = '';
  const reject = (reason: string, message: string) => {
    byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
    firstError ||= message;
  };
  for (let i = 0; i < mapped.length; i++) {
    const m = mapped[i];
    if (!m.value) {
      reject('too-deep', m.error!);
      continue;
    }
    const s = stage(ctx, Buffer.from(JSON.stringify(m.value)), { ticket, line: i + 1 }, t0);
    if (s.ok) staged.push(s.env);
    else reject(s.reason, `log record ${i}: ${s.message}`);
  }
  countRejects(ctx, byReason);
  let rejected = mapped.length - staged.length;

  const { accepted, refused } = staged.length > 0 ? await ctx.enqueueStaged(staged, ticket) : { accepted: 0, refused: null };
  if (refused) {
    const closed = refused.code === ErrorCode.Closed;
    ctx.itemsRejected.inc({ reason: closed ? 'closed' : 'queue-full' }, staged.length - accepted);
    return fail(closed ? 503 : 429, closed ? 'closing' : 'queue-full', `${staged.length - accepted} of ${mapped.length} log records not accepted: ${refused.message}`, {
      'retry-after': ctx.retryAfter,
    });
  }
  if (ticket.dropped > 0) return fail(503, 'dropped', `${ticket.dropped} log records dropped after acceptance`, { 'retry-after': ctx.retryAfter });
  if (ticket.deadLettered > 0) {
    rejected += ticket.deadLettered;
    firstError ||= `${ticket.deadLettered} log records refused by the sink (dead-lettered)`;
  }
  ctx.sendBody(req, res, 200, otlpResponse(json, rejected, rejected > 0 ? firstError : ''), ct);
}
