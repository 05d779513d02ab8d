/** Shared by the doors: a mapped record becomes a staged envelope under the same checks as an /ingest line. */
import type { IncomingMessage } from 'node:http';
import type { ItemRejectReason } from '../../codec/validate.js';
import { envelope, type Envelope } from '../../core/types.js';
import type { ItemMeta, Ticket } from '../http.js';
import type { DoorContext } from './index.js';

/**
 * What a door keeps with an item besides its request ticket. `index` is the Elasticsearch
 * `_index` the record was sent to (docs/serve.md, "What the sink sees"); read it with
 * `recordIndex(env)`.
 */
export interface DoorItemMeta extends ItemMeta {
  index?: string;
}

/** The Elasticsearch `_index` a record was sent to, when it came through `_bulk` (also `env.attrs.index`). */
export function recordIndex(env: Envelope<unknown>): string | undefined {
  return env.attrs?.index ?? (env.meta as DoorItemMeta | undefined)?.index;
}

export type Staged = { ok: true; env: Envelope<unknown> } | { ok: false; reason: ItemRejectReason; message: string };

/**
 * `raw` (the record's bytes: as received for _bulk, the JSON of the mapped record for OTLP
 * and Loki) goes through the same ItemValidator as an /ingest line (size, UTF-8, depth, JSON,
 * schema), and its id through the same RecordIdRule (`messageId`: the `_id` of a _bulk action).
 */
export function stage(ctx: DoorContext, raw: Buffer, meta: DoorItemMeta, t0: number, messageId?: string): Staged {
  const r = ctx.validator.validate(raw);
  if (!r.ok) return r;
  const attrs = meta.index !== undefined ? { index: meta.index } : undefined;
  return { ok: true, env: envelope(r.value, { bytes: raw.length, intendedAtMs: t0, raw, id: ctx.idRule.id(raw, r.value, messageId), meta, attrs }) };
}

/** Counts item rejections by reason on the shared counter. */
export function countRejects(ctx: DoorContext, byReason: Map<string, number>): void {
  for (const [reason, n] of byReason) ctx.itemsRejected.inc({ reason }, n);
}

/** Collects a decoded body (already capped by readBody) into one buffer. */
export class Collector {
  private parts: Buffer[] = [];
  private n = 0;
  push(chunk: Buffer): void {
    this.parts.push(chunk);
    this.n += chunk.length;
  }
  buffer(): Buffer {
    return this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.n);
  }
}

/** The media type of a request, lower case, without parameters. */
export function mediaType(req: IncomingMessage): string {
  return String(req.headers['content-type'] ?? '')
    .split(';', 1)[0]
    .trim()
    .toLowerCase();
}

/** Per item of a request after the pipeline: committed, lost (dropped / dead-lettered), or not accepted. */
export function outcomeOf(ticket: Ticket): Map<number, 'dropped' | 'dead-lettered'> {
  const m = new Map<number, 'dropped' | 'dead-lettered'>();
  for (const l of ticket.lost) m.set(l.line, l.reason === 'dropped' ? 'dropped' : 'dead-lettered');
  return m;
}
