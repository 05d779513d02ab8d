/**
 * Loki push: `POST /loki/api/v1/push` (docs/serve.md, "Loki push"). `application/json`
 * (optionally with a Content-Encoding), or `application/x-protobuf`: a snappy block holding a
 * `PushRequest`, whose declared length is checked against the decompressed cap before it is
 * decompressed. One record per entry: `{ ts, line, labels, metadata? }`. 204 on success;
 * entries refused by validation: 400 (the others are kept, as Loki does); backpressure:
 * 429/503 + Retry-After (clients resend the whole push; accepted entries keep their ids).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, SluiceError } from '../../core/errors.js';
import type { Envelope } from '../../core/types.js';
import { LokiDecodeError, lokiJsonEntries, lokiProtoEntries, snappyBlockDecode, type LokiEntry } from '../../codec/loki-push.js';
import { Ticket } from '../http.js';
import type { DoorContext } from './index.js';
import { Collector, countRejects, mediaType, stage } from './stage.js';

export async function lokiPush(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = ctx.arrivedAt(req);
  const type = mediaType(req);
  const proto = type === 'application/x-protobuf';
  if (!proto && type !== 'application/json' && type !== '') {
    ctx.requestsRejected.inc({ reason: 'unknown-content-type' });
    return ctx.send(req, res, 415, { error: ErrorCode.UnsupportedEncoding, reason: 'unknown-content-type', message: `content type "${type}" is not application/json or application/x-protobuf` });
  }
  const body = new Collector();
  if (!(await ctx.readBody(req, res, body))) return;

  let entries: LokiEntry[];
  try {
    entries = proto ? lokiProtoEntries(snappyBlockDecode(body.buffer(), ctx.limits.maxDecompressedBytes)) : lokiJsonEntries(body.buffer());
  } catch (e) {
    if (e instanceof SluiceError) return ctx.refuse(req, res, e);
    if (e instanceof LokiDecodeError) {
      ctx.requestsRejected.inc({ reason: 'malformed' });
      return ctx.send(req, res, 400, { error: ErrorCode.MalformedInput, reason: 'malformed', message: e.message });
    }
    throw e;
  }
  if (entries.length > ctx.limits.maxItemsPerRequest)
    return ctx.refuse(
      req,
      res,
      new SluiceError(ErrorCode.TooManyItems, `push holds ${entries.length} entries, more than ${ctx.limits.maxItemsPerRequest}`, {
        details: { cap: 'items', limit: ctx.limits.maxItemsPerRequest },
      }),
    );

  const ticket = new Ticket();
  const staged: Envelope<unknown>[] = [];
  const byReason = new Map<string, number>();
  const errors: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    const s = stage(ctx, Buffer.from(JSON.stringify(entries[i])), { ticket, line: i + 1 }, t0);
    if (s.ok) staged.push(s.env);
    else {
      byReason.set(s.reason, (byReason.get(s.reason) ?? 0) + 1);
      if (errors.length < ctx.maxErrorsListed) errors.push(`entry ${i}: ${s.reason}: ${s.message}`);
    }
  }
  countRejects(ctx, byReason);
  const { accepted, refused } = staged.length > 0 ? await ctx.enqueueStaged(staged, ticket) : { accepted: 0, refused: null };
  if (refused) {
    ctx.itemsRejected.inc({ reason: refused.code === ErrorCode.Closed ? 'closed' : 'queue-full' }, staged.length - accepted);
    return ctx.refuse(req, res, refused, { entries: entries.length, accepted, notAccepted: staged.length - accepted });
  }
  if (ticket.dropped > 0) {
    ctx.requestsRejected.inc({ reason: 'dropped' });
    return ctx.send(req, res, 503, { error: 'SLUICE_DROPPED', reason: 'dropped', dropped: ticket.dropped }, { 'retry-after': ctx.retryAfter });
  }
  const refusedEntries = entries.length - staged.length + ticket.deadLettered;
  if (refusedEntries > 0) {
    ctx.requestsRejected.inc({ reason: 'invalid-entries' });
    return ctx.send(req, res, 400, {
      error: ErrorCode.MalformedInput,
      reason: 'invalid-entries',
      entries: entries.length,
      accepted: staged.length,
      rejected: entries.length - staged.length,
      deadLettered: ticket.deadLettered,
      errors,
    });
  }
  ctx.sendBody(req, res, 204, '', 'text/plain');
}
