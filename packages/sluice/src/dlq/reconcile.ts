/**
 * Reconciliation (issue 6): the ids produced at the source (the embedded log, the JetStream
 * stream) against the ids in the sink and in the DLQ (and quarantine).
 *
 *   produced     distinct ids at the source
 *   committed    produced ids present in the sink
 *   deadLettered produced ids pending in the DLQ and not in the sink
 *   quarantined  produced ids in the quarantine and neither in the sink nor the DLQ
 *   unconsumed   produced ids in none of them but not yet acknowledged at the source (beyond
 *                the embedded log's committed offset, or the JetStream consumer's ack floor
 *                when the URL names the consumer): in flight, redelivered on restart
 *   missing      produced ids in none of them and acknowledged — lost
 *   duplicated   ids present more than once in the sink (the file sink without its id index
 *                after a redelivery; PostgreSQL's primary key makes it impossible there)
 *   unexpected   ids in the sink that the source never produced
 *   inSinkAndDlq ids both committed and pending in the DLQ (an unfinished re-drive, or a
 *                record dead-lettered and later delivered again): accounted, listed apart
 *   transientInDlq ids pending in the DLQ with error class `transient` (or code
 *                SLUICE_RETRY_EXHAUSTED): good records dead-lettered because the sink was down
 *                (issue 19: an outage is backpressure, not poison). A finding: `ok` is false.
 *
 * A source read is a snapshot: reconcile a quiescent pipeline (lag 0) for a final verdict.
 */
import { readFile, stat } from 'node:fs/promises';
import pg from 'pg';
import type { NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';
import { readCommitted, readLog } from '../sources/embedded-log.js';
import { ID_HEADER, MSG_ID_HEADER } from '../sources/jetstream.js';
import { RecordIdRule } from '../codec/record-id.js';
import { connectNats, parseNatsUrl } from '../sources/nats.js';
import { isNatsUrl, isPgUrl } from './access.js';

export interface ReconcileReport {
  produced: number;
  committed: number;
  deadLettered: number;
  quarantined: number;
  unconsumed: number;
  missing: number;
  duplicated: number;
  unexpected: number;
  inSinkAndDlq: number;
  /** DLQ entries of error class `transient`: good records dead-lettered during an outage (a finding). */
  transientInDlq: number;
  /** Up to 20 of each, for the operator. */
  missingIds: string[];
  transientInDlqIds: string[];
  duplicatedIds: string[];
  unexpectedIds: string[];
  ok: boolean;
}

/** A DLQ entry as reconcile needs it: its id, and how it failed when known. */
export type DlqRef = string | { id: string; errorClass?: string; code?: string };

const TRANSIENT_CODES = new Set(['SLUICE_RETRY_EXHAUSTED', 'SLUICE_SINK_TRANSIENT']);

/** A DLQ entry that a down sink put there, not its record (class transient or a transient code). */
export function isTransientEntry(e: DlqRef): boolean {
  return typeof e !== 'string' && (e.errorClass === 'transient' || (e.code !== undefined && TRANSIENT_CODES.has(e.code)));
}

/**
 * Pure comparison. `sinkIds` keeps multiplicity (one element per stored row/line). `dlq`
 * takes ids, or entries (`DeadLetterEntry` works as is) so that good records dead-lettered
 * with a transient error are reported.
 */
export function reconcileIds(
  produced: Iterable<string>,
  sinkIds: Iterable<string>,
  dlqRefs: Iterable<DlqRef>,
  quarantineIds: Iterable<string> = [],
  unackedIds: Iterable<string> = [],
): ReconcileReport {
  const unacked = new Set(unackedIds);
  const src = new Set(produced);
  const counts = new Map<string, number>();
  for (const id of sinkIds) counts.set(id, (counts.get(id) ?? 0) + 1);
  const dlq = new Set<string>();
  const transient = new Set<string>();
  for (const e of dlqRefs) {
    const id = typeof e === 'string' ? e : e.id;
    dlq.add(id);
    if (isTransientEntry(e)) transient.add(id);
  }
  const quarantine = new Set(quarantineIds);
  let committed = 0, deadLettered = 0, quarantined = 0, inSinkAndDlq = 0, unconsumed = 0;
  const missingIds: string[] = [];
  for (const id of src) {
    if (counts.has(id)) {
      committed++;
      if (dlq.has(id)) inSinkAndDlq++;
    } else if (dlq.has(id)) deadLettered++;
    else if (quarantine.has(id)) quarantined++;
    else if (unacked.has(id)) unconsumed++;
    else missingIds.push(id);
  }
  const duplicatedIds = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
  const unexpectedIds = [...counts.keys()].filter((id) => !src.has(id));
  // Committed since (a re-drive that went through) is no longer a good record stuck in the DLQ.
  const transientIds = [...transient].filter((id) => !counts.has(id));
  return {
    produced: src.size,
    committed,
    deadLettered,
    quarantined,
    unconsumed,
    missing: missingIds.length,
    duplicated: duplicatedIds.length,
    unexpected: unexpectedIds.length,
    inSinkAndDlq,
    transientInDlq: transientIds.length,
    missingIds: missingIds.slice(0, 20),
    transientInDlqIds: transientIds.slice(0, 20),
    duplicatedIds: duplicatedIds.slice(0, 20),
    unexpectedIds: unexpectedIds.slice(0, 20),
    ok: missingIds.length === 0 && duplicatedIds.length === 0 && transientIds.length === 0,
  };
}

export function formatReconcile(r: ReconcileReport): string {
  let s =
    `produced=${r.produced} committed=${r.committed} dead_lettered=${r.deadLettered} quarantined=${r.quarantined} unconsumed=${r.unconsumed} ` +
    `missing=${r.missing} duplicated=${r.duplicated} unexpected=${r.unexpected} in_sink_and_dlq=${r.inSinkAndDlq} transient_in_dlq=${r.transientInDlq} ${r.ok ? 'ok' : 'NOT OK'}`;
  if (r.unconsumed) s += `\n${r.unconsumed} not yet consumed at the source (in flight): reconcile again at lag 0 for a final verdict`;
  if (r.missing) s += `\nmissing: ${r.missingIds.join(' ')}${r.missing > r.missingIds.length ? ' …' : ''}`;
  if (r.duplicated) s += `\nduplicated: ${r.duplicatedIds.join(' ')}${r.duplicated > r.duplicatedIds.length ? ' …' : ''}`;
  if (r.transientInDlq)
    s +=
      `\n${r.transientInDlq} good record(s) dead-lettered with a transient error (the sink was down, not the record): ` +
      `${r.transientInDlqIds.join(' ')}${r.transientInDlq > r.transientInDlqIds.length ? ' …' : ''}; re-drive them (sluice dlq redrive)`;
  return s;
}

/**
 * Ids produced at a source and, of those, the ones not yet acknowledged: records at or beyond
 * the embedded log's committed offset, or (`nats://host:port/<stream>/<consumer>`) beyond the
 * consumer's ack floor (an upper bound: acks above a hole count as unacknowledged).
 */
export async function readSource(spec: string, nc?: NatsConnection, idRule: RecordIdRule = new RecordIdRule()): Promise<{ ids: string[]; unacked: string[] }> {
  if (isNatsUrl(spec)) {
    const { stream, consumer } = parseNatsUrl(spec);
    if (!stream) throw invalidOption('--source', spec, 'nats://host:port/<stream>[/<consumer>]');
    const conn = nc ?? (await connectNats(spec));
    try {
      const jsm = await jetstreamManager(conn);
      let info;
      try {
        info = await jsm.streams.info(stream);
      } catch (cause) {
        throw new SluiceError(ErrorCode.SourceUnavailable, `stream ${stream}: ${(cause as Error).message}`, { cause });
      }
      const all = await streamIds(conn, stream, info.state.first_seq, info.state.last_seq, idRule);
      let floor = Infinity;
      if (consumer) {
        try {
          floor = (await jsm.consumers.info(stream, consumer)).ack_floor.stream_seq;
        } catch (cause) {
          throw new SluiceError(ErrorCode.SourceUnavailable, `consumer ${stream}/${consumer}: ${(cause as Error).message}`, { cause });
        }
      }
      return { ids: all.map((x) => x.id), unacked: all.filter((x) => x.seq > floor).map((x) => x.id) };
    } finally {
      if (!nc) await conn.close();
    }
  }
  if (isPgUrl(spec)) throw invalidOption('--source', spec, 'an embedded log path or nats://host:port/<stream>');
  const log = await readLog(spec);
  const { offset } = await readCommitted(`${spec}.committed`);
  const idOf = (r: { id: string; data: Buffer }) => (idRule.options.idField === undefined ? r.id : idRule.id(r.data, parseOrUndefined(r.data), r.id));
  return { ids: log.map(idOf), unacked: log.filter((r) => r.offset >= offset).map(idOf) };
}

/** A record's JSON value for the id rule's field, or undefined when it is not JSON. */
function parseOrUndefined(data: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Ids produced at a source: an embedded log path, or `nats://host:port/<stream>`. */
export async function sourceIds(spec: string, nc?: NatsConnection): Promise<string[]> {
  return (await readSource(spec, nc)).ids;
}

/**
 * Ids of the stream's messages with sequence in [from, to], in order, by the record id rule
 * (docs/records.md): an ordered consumer. Without `idRule` only the `Sluice-Id` /
 * `Nats-Msg-Id` headers are read (`headers_only`, ≈10× faster than one direct get per
 * message); with it, bodies are fetched too, for the id field or the content hash.
 */
export async function streamIds(nc: NatsConnection, stream: string, from: number, to: number, idRule?: RecordIdRule): Promise<{ seq: number; id: string }[]> {
  const out: { seq: number; id: string }[] = [];
  if (to < from || to === 0) return out;
  const c = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, from), headers_only: !idRule });
  const iter = await c.consume({ max_messages: 1000 });
  try {
    for await (const m of iter) {
      const messageId = m.headers?.get(ID_HEADER) || m.headers?.get(MSG_ID_HEADER) || undefined;
      const id = idRule ? idRule.id(m.data, idRule.options.idField === undefined ? undefined : parseOrUndefined(m.data), messageId) : (messageId ?? `js:${m.seq}`);
      out.push({ seq: m.seq, id });
      // `pending` 0: nothing after this one (the last sequence itself may have been deleted).
      if (m.seq >= to || m.info.pending === 0) break;
    }
  } finally {
    await iter.close().catch(() => {});
  }
  return out;
}

/** Ids in a sink, one per stored row/line: a file sink path (NDJSON with `id`) or a postgres:// URL + table. */
export async function sinkIds(spec: string, table = 'sluice_records', idColumn = 'id'): Promise<string[]> {
  if (isPgUrl(spec)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table)) throw invalidOption('--table', table, 'letters, digits and _');
    const client = new pg.Client({ connectionString: spec, connectionTimeoutMillis: 3_000 });
    try {
      await client.connect();
    } catch (cause) {
      throw new SluiceError(ErrorCode.SinkUnavailable, `cannot connect to the sink: ${(cause as Error).message}`, { cause });
    }
    try {
      const exists = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table]);
      if (exists.rows[0].t === null) return [];
      const q = table.split('.').map((p) => `"${p}"`).join('.');
      if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(idColumn)) throw invalidOption('--id-column', idColumn, 'letters, digits and _');
      return (await client.query<{ id: string }>(`SELECT "${idColumn}"::text AS id FROM ${q}`)).rows.map((r) => r.id);
    } finally {
      await client.end();
    }
  }
  const indexed = await indexIds(spec);
  if (indexed) return indexed;
  let text: string;
  try {
    text = await readFile(spec, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]) continue;
    let id: unknown;
    try {
      id = (JSON.parse(lines[i]) as { id?: unknown }).id;
    } catch (cause) {
      throw new SluiceError(ErrorCode.Corrupt, `${spec}:${i + 1}: not a JSON record`, { cause, details: { line: i + 1 } });
    }
    if (typeof id !== 'string') throw new SluiceError(ErrorCode.Corrupt, `${spec}:${i + 1}: record without a string id`, { details: { line: i + 1 } });
    out.push(id);
  }
  return out;
}

/**
 * Ids of a file sink written with `dedupeById`, from its sidecar index `<path>.ids` (one entry
 * per batch, `{end, ids}`; records need no `id` field): entries past the data's size (a batch
 * that never landed) are left out. null when there is no index, or when it does not cover
 * the whole file (lines appended without the index): then the lines' `id` fields are read.
 */
async function indexIds(path: string): Promise<string[] | null> {
  let text: string;
  let size: number;
  try {
    text = await readFile(`${path}.ids`, 'utf8');
    size = (await stat(path)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const out: string[] = [];
  let covered = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    let e: { end?: unknown; ids?: unknown };
    try {
      e = JSON.parse(line);
    } catch {
      continue; // a torn last entry
    }
    if (typeof e.end !== 'number' || !Array.isArray(e.ids) || e.end > size) continue;
    covered = Math.max(covered, e.end);
    for (const id of e.ids) if (typeof id === 'string') out.push(id);
  }
  return covered === size ? out : null;
}
