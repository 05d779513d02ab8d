/**
 * Elasticsearch `_bulk` (`POST /_bulk`, `POST /{index}/_bulk`) and the `GET /` version probe
 * (docs/serve.md, "Elasticsearch _bulk"). `index` and `create` actions become records (the
 * source document, as received, is the record; its `_index` is kept in the item's meta, see
 * recordIndex); `delete` and `update` are answered per item as unsupported.
 *
 * Backpressure is answered per item: the items from the first one the queue refused on get
 * 429 (`es_rejected_execution_exception`) in a 200 answer, with Retry-After. `helpers.bulk` of
 * @elastic/elasticsearch retries exactly those items, and fails the whole job on a request-level
 * 429 (lib/helpers.js, bulkOperation → tryBulk: only item statuses are retried).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { ErrorCode, SluiceError } from '../../core/errors.js';
import type { Envelope } from '../../core/types.js';
import { NdjsonFramer } from '../../codec/ndjson.js';
import { Ticket } from '../http.js';
import type { DoorContext } from './index.js';
import { countRejects, outcomeOf, stage, type DoorItemMeta } from './stage.js';

/** The Elasticsearch version `GET /` claims: clients of the 8.x line accept it. */
export const ES_COMPAT_VERSION = '8.19.0';
const CLUSTER_UUID = randomUUID();

/**
 * Optional sink capability for `create` (409 when the id is stored already) and `index` (a
 * no-op when it is): which of `ids` the sink holds. A sink without it gets every item, and
 * its own idempotence by id keeps the first (docs/serve.md, "What the sink sees").
 */
export interface StoredIds {
  storedIds(ids: readonly string[]): Promise<ReadonlySet<string>>;
}

export function hasStoredIds(sink: unknown): sink is StoredIds {
  return typeof (sink as Partial<StoredIds>)?.storedIds === 'function';
}

export function isBulkPath(path: string): boolean {
  return path === '/_bulk' || /^\/[^/_][^/]*\/_bulk$/.test(path);
}

export function isRefreshPath(path: string): boolean {
  return path === '/_refresh' || /^\/[^/_][^/]*\/_refresh$/.test(path);
}

/**
 * `_refresh` (helpers.bulk calls it at the end, `refreshOnCompletion`): with `ack: 'commit'` a
 * record is in the sink before its `_bulk` answer, so there is nothing to make visible.
 */
export async function esRefresh(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  ctx.send(req, res, 200, { _shards: { total: 1, successful: 1, failed: 0 } });
}

export async function esRoot(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method === 'HEAD') return void ctx.sendBody(req, res, 200, '', 'application/json');
  ctx.send(req, res, 200, {
    name: 'sluice',
    cluster_name: 'sluice',
    cluster_uuid: CLUSTER_UUID,
    version: {
      number: ES_COMPAT_VERSION,
      build_flavor: 'default',
      build_type: 'sluice',
      lucene_version: '9.12.0',
      minimum_wire_compatibility_version: '7.17.0',
      minimum_index_compatibility_version: '7.0.0',
    },
    tagline: 'You Know, for Search',
  });
}

type Op = 'index' | 'create' | 'delete' | 'update';
const OPS: readonly string[] = ['index', 'create', 'delete', 'update'];

interface ItemAnswer {
  op: Op;
  index?: string;
  id?: string;
  status: number;
  result?: string;
  error?: { type: string; reason: string };
  explicitId?: boolean;
}

function esError(type: string, reason: string, status: number) {
  return { error: { root_cause: [{ type, reason }], type, reason }, status };
}

/** Per-item answer in the shape Elasticsearch gives (compact; `_shards` etc. as one copy of a primary). */
function itemJson(a: ItemAnswer, seq: number): Record<string, unknown> {
  const body: Record<string, unknown> = { _index: a.index ?? null, _id: a.id ?? null };
  if (a.status < 300) Object.assign(body, { _version: 1, result: a.result, _shards: { total: 1, successful: 1, failed: 0 }, _seq_no: seq, _primary_term: 1 });
  body.status = a.status;
  if (a.error) body.error = a.error;
  return { [a.op]: body };
}

export async function esBulk(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = ctx.arrivedAt(req);
  const path = (req.url ?? '/').split('?', 1)[0];
  const pathIndex = path === '/_bulk' ? undefined : decodeURIComponent(path.slice(1, -'/_bulk'.length));
  const lines: Buffer[] = [];
  // Two lines per document: the framer's items cap counts lines, the documents are checked below.
  const framer = new NdjsonFramer((buf) => void lines.push(buf), {
    maxLineBytes: ctx.limits.maxLineBytes,
    maxItems: Math.min(2 * ctx.limits.maxItemsPerRequest, Number.MAX_SAFE_INTEGER),
  });
  if (!(await ctx.readBody(req, res, framer))) return;

  const answers: ItemAnswer[] = [];
  const staged: Envelope<unknown>[] = [];
  const stagedAt: number[] = [];
  const ticket = new Ticket();
  const byReason = new Map<string, number>();
  const rejectItem = (a: ItemAnswer, reason: string) => {
    answers.push(a);
    byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
  };
  for (let i = 0; i < lines.length; ) {
    let action: unknown;
    try {
      action = JSON.parse(lines[i].toString('utf8'));
    } catch (e) {
      ctx.requestsRejected.inc({ reason: 'malformed-action' });
      return ctx.send(req, res, 400, esError('x_content_parse_exception', `line ${i + 1}: malformed action/metadata line: ${(e as Error).message}`, 400));
    }
    const keys = action && typeof action === 'object' && !Array.isArray(action) ? Object.keys(action) : [];
    if (keys.length !== 1 || !OPS.includes(keys[0])) {
      ctx.requestsRejected.inc({ reason: 'malformed-action' });
      return ctx.send(req, res, 400, esError('illegal_argument_exception', `line ${i + 1}: malformed action/metadata line, expected one of ${OPS.join(', ')}`, 400));
    }
    const op = keys[0] as Op;
    const meta = ((action as Record<string, unknown>)[op] ?? {}) as Record<string, unknown>;
    const hasSource = op !== 'delete';
    if (hasSource && i + 1 >= lines.length) {
      ctx.requestsRejected.inc({ reason: 'malformed-action' });
      return ctx.send(req, res, 400, esError('action_request_validation_exception', `line ${i + 1}: ${op} action without a source line`, 400));
    }
    const source = hasSource ? lines[i + 1] : null;
    i += hasSource ? 2 : 1;
    if (answers.length >= ctx.limits.maxItemsPerRequest)
      return ctx.refuse(
        req,
        res,
        new SluiceError(ErrorCode.TooManyItems, `request holds more than ${ctx.limits.maxItemsPerRequest} items`, {
          details: { cap: 'items', limit: ctx.limits.maxItemsPerRequest, line: i },
        }),
      );
    const index = typeof meta._index === 'string' && meta._index.length > 0 ? meta._index : pathIndex;
    const rawId = meta._id;
    const id = typeof rawId === 'string' && rawId.length > 0 ? rawId : typeof rawId === 'number' && Number.isFinite(rawId) ? String(rawId) : undefined;
    if (op === 'delete' || op === 'update') {
      rejectItem({ op, index, id, status: 400, error: { type: 'illegal_argument_exception', reason: `sluice stores records once: ${op} is not supported` } }, 'unsupported-op');
      continue;
    }
    if (!index) {
      rejectItem({ op, id, status: 400, error: { type: 'action_request_validation_exception', reason: 'Validation Failed: 1: index is missing;' } }, 'no-index');
      continue;
    }
    if (rawId !== undefined && id === undefined) {
      rejectItem({ op, index, status: 400, error: { type: 'action_request_validation_exception', reason: 'Validation Failed: 1: an id must be a non-empty string;' } }, 'bad-id');
      continue;
    }
    const lineNo = answers.length + 1;
    const s = stage(ctx, source!, { ticket, line: lineNo, index } satisfies DoorItemMeta, t0, id);
    if (!s.ok) {
      rejectItem({ op, index, id, status: 400, error: { type: 'document_parsing_exception', reason: `${s.reason}: ${s.message}` } }, s.reason);
      continue;
    }
    if (s.env.value === null || typeof s.env.value !== 'object' || Array.isArray(s.env.value)) {
      rejectItem({ op, index, id, status: 400, error: { type: 'document_parsing_exception', reason: 'the document must be a JSON object' } }, 'not-an-object');
      continue;
    }
    answers.push({ op, index, id: s.env.id, status: 0, explicitId: id !== undefined });
    staged.push(s.env);
    stagedAt.push(answers.length - 1);
  }
  if (answers.length === 0) {
    ctx.requestsRejected.inc({ reason: 'empty' });
    return ctx.send(req, res, 400, esError('action_request_validation_exception', 'Validation Failed: 1: no requests added;', 400));
  }

  // create of an id already stored (or twice in this request): 409; index of one: a no-op (200).
  // Only an explicit `_id` conflicts: without one, Elasticsearch makes a fresh id, and here the
  // id is a content hash, so a stored one means this is a re-send of the same document.
  const stored = hasStoredIds(ctx.sink) && staged.length > 0 ? await ctx.sink.storedIds(staged.map((e) => e.id!)) : new Set<string>();
  const seen = new Set<string>();
  const toEnqueue: Envelope<unknown>[] = [];
  const enqueuedAt: number[] = [];
  for (let k = 0; k < staged.length; k++) {
    const env = staged[k];
    const a = answers[stagedAt[k]];
    const dup = stored.has(env.id!) || seen.has(env.id!);
    seen.add(env.id!);
    if (dup && a.op === 'create' && a.explicitId) {
      a.status = 409;
      a.error = { type: 'version_conflict_engine_exception', reason: `[${env.id}]: version conflict, document already exists` };
      byReason.set('conflict', (byReason.get('conflict') ?? 0) + 1);
    } else if (dup) {
      a.status = 200;
      a.result = 'noop';
    } else {
      toEnqueue.push(env);
      enqueuedAt.push(stagedAt[k]);
    }
  }
  countRejects(ctx, byReason);

  const { accepted, refused } = toEnqueue.length > 0 ? await ctx.enqueueStaged(toEnqueue, ticket) : { accepted: 0, refused: null };
  if (toEnqueue.length === 0) ticket.finishEnqueue();
  const lost = outcomeOf(ticket);
  let retryable = 0;
  for (let k = 0; k < toEnqueue.length; k++) {
    const a = answers[enqueuedAt[k]];
    const line = (toEnqueue[k].meta as DoorItemMeta).line;
    const l = lost.get(line);
    if (k >= accepted || l === 'dropped') {
      retryable++;
      a.status = 429;
      a.error = {
        type: 'es_rejected_execution_exception',
        reason: k >= accepted ? `sluice refused the item: ${refused?.message ?? 'queue full'}` : 'sluice dropped the item after accepting it (overflow policy or sink failure)',
      };
    } else if (l === 'dead-lettered') {
      a.status = 400;
      a.error = { type: 'document_parsing_exception', reason: 'the sink refused this record; it is in the dead-letter store' };
    } else {
      a.status = 201;
      a.result = 'created';
    }
  }
  if (retryable > 0) ctx.itemsRejected.inc({ reason: refused?.code === ErrorCode.Closed ? 'closed' : 'queue-full' }, retryable);
  let errors = false;
  const items = answers.map((a, n) => {
    if (a.status >= 300) errors = true;
    return itemJson(a, n);
  });
  ctx.send(req, res, 200, { took: Math.round(performance.now() - t0), errors, items }, retryable > 0 ? { 'retry-after': ctx.retryAfter } : {});
}
