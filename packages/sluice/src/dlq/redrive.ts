/**
 * Re-drive (issue 6, docs/dlq.md): read the dead-letter queue, optionally apply a fix (a
 * schema migration on the PostgreSQL sink, or a versioned transform module), revalidate, and
 * publish the records that now pass back into the main stream (the embedded log or the
 * JetStream stream) with their original ids, so they go through the same pipeline again.
 * Records that fail again go back to the DLQ with `attempts + 1`, or to a quarantine.
 *
 * Crash safety (kill -9 at any point, then rerun: nothing lost, nothing duplicated):
 *
 *   1. plan     the pending entries, what becomes of each (publish these bytes | fail: why),
 *               the main stream's position before publishing and the time stamped on the
 *               returned entries → written to the cursor file (temp, fdatasync, rename,
 *               directory fsync) before anything is published;
 *   2. publish  in chunks (embedded log: append + fdatasync; JetStream: every PubAck, with a
 *               message id per entry so the server de-duplicates a retried publish); a rerun
 *               first reads the stream from the recorded position and skips the ids already
 *               there, so a record is never published twice;
 *   3. return   the failures to the DLQ (attempts + 1) or the quarantine; their fingerprints
 *               are deterministic (the time comes from the plan), so a rerun skips those
 *               already appended;
 *   4. resolve  only now are the planned entries removed from the DLQ (after step 2 is
 *               durable); then the cursor file is deleted.
 *
 * A rerun that finds a cursor finishes *that* plan (whatever the new flags say) before
 * anything else. Sinks are idempotent on the id (PostgreSQL `ON CONFLICT (id) DO NOTHING`, the
 * file sink's id index), so even a record consumed twice lands once.
 *
 * A lock (`acquireRedriveLock`: generation files `<cursor>.lock.<n>`, each holding pid,
 * process start time and a nonce) keeps two re-drives of one DLQ apart; a lock left by a dead
 * process (kill -9) is taken over without a window in which two takers both proceed.
 */
import { createHash } from 'node:crypto';
import { link, mkdir, open, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { readFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import type { NatsConnection } from '@nats-io/transport-node';
import { headers } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';
import { EmbeddedLogWriter, readLog, type LogRecord } from '../sources/embedded-log.js';
import { ID_HEADER, TS_HEADER } from '../sources/jetstream.js';
import { connectNats, parseNatsUrl } from '../sources/nats.js';
import { fingerprint, isNatsUrl, isPgUrl, type ConsumableDlq } from './access.js';
import { streamIds } from './reconcile.js';
import type { DeadLetterEntry } from './store.js';
import { PostgresSink, type PostgresSinkOptions } from '../sinks/postgres.js';
import { envelope } from '../core/types.js';

// ------------------------------------------------------------------ main stream

/** Where re-driven records are published: the pipeline's own input. */
export interface MainStream {
  readonly describe: string;
  /** A position such that `idsSince(position)` covers everything published after now. */
  position(): Promise<number>;
  /** Ids of the records published after `position`. */
  idsSince(position: number): Promise<Set<string>>;
  /** Publishes durably, in order. `keys` (one per record) let the server de-duplicate retries. */
  publish(records: readonly LogRecord[], keys: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

class EmbeddedTarget implements MainStream {
  readonly describe: string;
  private constructor(
    private readonly path: string,
    private readonly w: EmbeddedLogWriter,
  ) {
    this.describe = `embedded:${path}`;
  }
  static async open(path: string): Promise<EmbeddedTarget> {
    // Never create a log: a relative path from another directory (or a typo) would publish into
    // a file no pipeline reads, and the DLQ entries would then be resolved — lost.
    try {
      await stat(path);
    } catch (cause) {
      throw new SluiceError(ErrorCode.SourceUnavailable, `main stream ${path} does not exist (${(cause as NodeJS.ErrnoException).code}): name the pipeline's log with --to`, { cause });
    }
    // Opening cuts a torn last line left by a writer killed mid-append.
    return new EmbeddedTarget(path, await EmbeddedLogWriter.open(path));
  }
  async position(): Promise<number> {
    return this.w.size();
  }
  async idsSince(position: number): Promise<Set<string>> {
    return new Set((await readLog(this.path)).filter((r) => r.offset >= position).map((r) => r.id));
  }
  async publish(records: readonly LogRecord[]): Promise<void> {
    if (records.length) await this.w.append(records, { sync: true });
  }
  close(): Promise<void> {
    return this.w.close();
  }
}

class JetStreamTarget implements MainStream {
  readonly describe: string;
  readonly subject: string;
  constructor(
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    readonly stream: string,
  ) {
    this.describe = `jetstream:${stream}`;
    this.subject = `${stream}.in`;
  }
  async position(): Promise<number> {
    const jsm = await jetstreamManager(this.nc);
    try {
      // Never create it: a stream nobody consumes would swallow the records.
      return (await jsm.streams.info(this.stream)).state.last_seq;
    } catch (cause) {
      throw new SluiceError(ErrorCode.SourceUnavailable, `main stream ${this.stream} does not exist: name the pipeline's stream with --to`, { cause });
    }
  }
  async idsSince(position: number): Promise<Set<string>> {
    const jsm = await jetstreamManager(this.nc);
    const last = (await jsm.streams.info(this.stream)).state.last_seq;
    return new Set((await streamIds(this.nc, this.stream, position + 1, last)).map((x) => x.id));
  }
  async publish(records: readonly LogRecord[], keys: readonly string[]): Promise<void> {
    const js = jetstream(this.nc);
    await Promise.all(
      records.map((r, i) => {
        const h = headers();
        h.set(ID_HEADER, r.id);
        h.set(TS_HEADER, String(r.ts ?? Date.now()));
        return js.publish(this.subject, r.data, { headers: h, msgID: `redrive:${keys[i]}` });
      }),
    );
  }
  async close(): Promise<void> {
    if (this.ownsConnection) await this.nc.close();
  }
}

/**
 * `path` → the embedded log; `nats://host:port/<stream>` → that stream's `<stream>.in`.
 * Without a spec, the source the entries came from (`embedded:<path>`, `jetstream:<stream>/…`).
 */
export async function openMainStream(spec: string | undefined, entries: readonly DeadLetterEntry[], opts: { natsUrl?: string; nc?: NatsConnection } = {}): Promise<MainStream> {
  let s = spec;
  if (!s) {
    const sources = [...new Set(entries.map((e) => e.source))];
    if (sources.length !== 1)
      throw invalidOption('--to', undefined, `the main stream (the entries come from ${sources.length === 0 ? 'no source' : sources.join(', ')})`);
    const src = sources[0];
    if (src.startsWith('embedded:')) s = src.slice('embedded:'.length);
    else if (src.startsWith('jetstream:')) {
      const base = opts.natsUrl ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
      s = `${base.replace(/\/+$/, '').replace(/^(nats:\/\/[^/]+).*$/, '$1')}/${src.slice('jetstream:'.length).split('/')[0]}`;
    } else throw invalidOption('--to', undefined, `the main stream (entries come from ${src}, which cannot be published to)`);
  }
  if (isNatsUrl(s)) {
    const { stream } = parseNatsUrl(s);
    if (!stream) throw invalidOption('--to', s, 'nats://host:port/<stream>');
    const nc = opts.nc ?? (await connectNats(s));
    return new JetStreamTarget(nc, !opts.nc, stream);
  }
  if (isPgUrl(s)) throw invalidOption('--to', s, 'an embedded log path or nats://host:port/<stream> (the pipeline input, not the sink)');
  return EmbeddedTarget.open(s);
}

// ------------------------------------------------------------------ fixes and revalidation

export interface Transform {
  path: string;
  version: string;
  transform(record: Record<string, unknown>): unknown;
}

/** Loads a transform module: `export const version` (string or number) and `export function transform(record)`. */
export async function loadTransform(path: string): Promise<Transform> {
  const abs = resolvePath(path);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(abs).href)) as Record<string, unknown>;
  } catch (cause) {
    throw new SluiceError(ErrorCode.InvalidOption, `cannot load transform ${path}: ${(cause as Error).message}`, { cause });
  }
  const version = mod.version;
  if (typeof mod.transform !== 'function') throw invalidOption('--transform', path, 'a module exporting transform(record)');
  if ((typeof version !== 'string' || version === '') && typeof version !== 'number') throw invalidOption('--transform', path, 'a module exporting a version (string or number)');
  return { path: abs, version: String(version), transform: mod.transform as Transform['transform'] };
}

/** `2` → `v2`; `amount-fix-2` stays as it is. */
export function versionLabel(version: string): string {
  return /^\d/.test(version) ? `v${version}` : version;
}

/** Applies the transform to a record's bytes: JSON in, JSON out, same id. Throws a reason. */
export async function applyTransform(t: Transform, data: Buffer, id: string): Promise<Buffer> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
  } catch {
    throw new Error('record is not UTF-8 JSON: a transform cannot read it');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('record is not a JSON object: a transform cannot read it');
  const out = await t.transform(v as Record<string, unknown>);
  if (out === null || typeof out !== 'object' || Array.isArray(out)) throw new Error(`transform ${versionLabel(t.version)} returned ${out === null ? 'null' : typeof out}, not a record`);
  const oid = (out as { id?: unknown }).id;
  if (oid !== undefined && oid !== id) throw new Error(`transform ${versionLabel(t.version)} changed the id (${id} → ${String(oid)})`);
  return Buffer.from(JSON.stringify(out));
}

/** Says of each record whether the sink would take it now: null = passes, else why not. */
export interface Revalidator {
  readonly describe: string;
  check(records: readonly { id: string; data: Buffer }[], opts?: { migrationSql?: string }): Promise<{ reason: string | null; sinkCode: string | null }[]>;
  close(): Promise<void>;
}

/**
 * Revalidation without a database: each record must be UTF-8 JSON, and pass `check` when one
 * is given (the user's `--schema`, or the lab's EventRecord rules). `check` throws to refuse.
 */
export function jsonRevalidator(check?: (value: unknown) => void, describe = check ? 'schema' : 'json'): Revalidator {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  return {
    describe,
    async check(records) {
      return records.map((r) => {
        try {
          let v: unknown;
          try {
            v = JSON.parse(utf8.decode(r.data));
          } catch (e) {
            throw new Error(`record is not UTF-8 JSON: ${(e as Error).message}`);
          }
          check?.(v);
          return { reason: null, sinkCode: null };
        } catch (e) {
          return { reason: (e as Error).message, sinkCode: 'VALIDATION' };
        }
      });
    },
    async close() {},
  };
}

export const noRevalidator: Revalidator = {
  describe: 'none',
  async check(records) {
    return records.map(() => ({ reason: null, sinkCode: null }));
  },
  async close() {},
};

function quoteTable(table: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table)) throw invalidOption('--table', table, 'letters, digits and _ (optionally schema.table)');
  return table
    .split('.')
    .map((p) => `"${p}"`)
    .join('.');
}

/**
 * The PostgreSQL sink's real constraints: each record is INSERTed (the statement PostgresSink's
 * idempotent paths amount to, same id rule, columns and casts: PostgresSink.rowStatement)
 * under a SAVEPOINT inside one transaction that is always rolled back, after the migration
 * when one is given (DDL is transactional: a dry run migrates nothing). `mapping` is the
 * sink's own (idColumn, docColumn, columns). Holds the table's lock for the duration of the
 * check: a live pipeline waits that long.
 */
export class PostgresRevalidator implements Revalidator {
  readonly describe: string;
  private readonly pool: pg.Pool;
  private readonly q: string;
  private readonly sink: PostgresSink;
  constructor(url: string, readonly table: string, mapping: Pick<PostgresSinkOptions, 'idColumn' | 'docColumn' | 'columns'> = {}) {
    this.q = quoteTable(table);
    this.describe = `postgres:${table} (trial insert, rolled back)`;
    this.pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 3_000 });
    this.pool.on('error', () => {});
    this.sink = new PostgresSink({ connectionString: url, table, ...mapping, maxConnections: 1, connectTimeoutMs: 3_000 });
  }
  async migrate(sql: string): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(sql);
      await c.query('COMMIT');
    } catch (cause) {
      await c.query('ROLLBACK').catch(() => {});
      throw new SluiceError(ErrorCode.SinkItem, `migration failed: ${(cause as Error).message}`, { cause });
    } finally {
      c.release();
    }
  }
  async check(records: readonly { id: string; data: Buffer }[], opts: { migrationSql?: string } = {}) {
    const row = await this.sink.rowStatement();
    const c = await this.pool.connect();
    const out: { reason: string | null; sinkCode: string | null }[] = [];
    try {
      await c.query('BEGIN');
      if (opts.migrationSql) await c.query(opts.migrationSql);
      for (const r of records) {
        let v: unknown;
        try {
          v = JSON.parse(r.data.toString('utf8'));
        } catch (e) {
          out.push({ reason: `record is not JSON (${(e as Error).message})`, sinkCode: 'VALIDATION' });
          continue;
        }
        await c.query('SAVEPOINT r');
        try {
          await c.query(row.text, row.values(envelope(v, { bytes: r.data.length, intendedAtMs: 0, id: r.id, raw: r.data })));
          out.push({ reason: null, sinkCode: null });
        } catch (e) {
          const code = (e as { code?: string }).code ?? null;
          out.push({ reason: `postgres: ${(e as Error).message}`, sinkCode: code });
        }
        await c.query('ROLLBACK TO SAVEPOINT r');
      }
    } finally {
      await c.query('ROLLBACK').catch(() => {});
      c.release();
    }
    return out;
  }
  async close(): Promise<void> {
    await this.sink.close();
    await this.pool.end();
  }
}

// ------------------------------------------------------------------ cursor and lock

export type RedrivePhase = 'planned' | 'published' | 'returned';

export interface PlanItem {
  /** Fingerprint of the DLQ entry this item consumes. */
  key: string;
  entry: DeadLetterEntry;
  action: 'publish' | 'fail';
  /** Base64 bytes to publish (after the transform). */
  data?: string;
  reason?: string;
  sinkCode?: string | null;
}

export interface RedriveCursor {
  v: 1;
  startedAt: string;
  dlq: string;
  target: string;
  /** Main stream position before the first publish. */
  positionBefore: number;
  /** Stamped as `deadLetteredAt` on returned entries: the same on a rerun, so they are recognised. */
  returnAt: string;
  onFail: 'dlq' | 'quarantine';
  transform: { path: string; version: string } | null;
  migrationSha256: string | null;
  phase: RedrivePhase;
  items: PlanItem[];
}

async function writeDurably(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(text);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export async function readCursor(path: string): Promise<RedriveCursor | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const c = JSON.parse(text) as RedriveCursor;
    if (c.v !== 1 || !Array.isArray(c.items) || !['planned', 'published', 'returned'].includes(c.phase)) throw new Error('unexpected shape');
    return c;
  } catch (cause) {
    // Written by rename only: a corrupt cursor is not a torn write. Say so; touch nothing.
    throw new SluiceError(ErrorCode.Corrupt, `re-drive cursor ${path} is corrupt (${(cause as Error).message}); inspect it before removing it`, { cause });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A process's start time in clock ticks since boot (Linux /proc/<pid>/stat field 22), or null elsewhere. */
function procStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

interface LockHolder {
  pid: number;
  start: string | null;
  nonce: string;
  released?: boolean;
}

/** Holds iff its process is alive and is the same process (start time), and it has not released. */
function holderAlive(h: LockHolder | null): boolean {
  if (!h || h.released) return false;
  if (h.pid === process.pid) return h.start === procStart(process.pid) || h.start === null;
  if (!Number.isInteger(h.pid) || h.pid <= 0 || !pidAlive(h.pid)) return false;
  const now = procStart(h.pid);
  return h.start === null || now === null || now === h.start; // a reused pid is another process
}

async function readHolder(path: string): Promise<LockHolder | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as LockHolder;
  } catch {
    return null; // gone (cleaned up) or never complete: it cannot be complete-and-unreadable (link publishes whole files)
  }
}

/**
 * The re-drive lock: at most one holder, even when several processes take over a stale lock at
 * once (issue 19). The lock is a series of generation files `<base>.<n>`, each created with
 * link(2) — O_EXCL semantics, and the file is complete before its name appears — and never
 * reused: the holder is the creator of the highest generation, while its process lives.
 *
 * To take it: read the highest generation n; if its holder is alive (pid signalable and the
 * same /proc start time, so a reused pid does not count) the lock is busy; otherwise create
 * n + 1. Only one taker can create n + 1. A taker that created a generation then lists the
 * directory again and backs off if a higher one exists (it acted on a stale listing). Why no
 * two proceed: a taker that sees no higher generation after creating n+1 can only be
 * overtaken by someone who observed n+1's holder dead, and it is alive. Release marks the
 * file released (rename of a complete file over it) and is never a delete of the highest
 * generation, so numbers are never reused; lower generations are deleted by the next holder.
 * The previous scheme (O_EXCL create, unlink a stale lock, create again) let a slow taker
 * unlink the lock a faster one had just created, and both proceeded.
 */
export async function acquireRedriveLock(base: string): Promise<() => Promise<void>> {
  const dir = dirname(base);
  const prefix = `${basename(base)}.`;
  await mkdir(dir, { recursive: true });
  const generations = async (): Promise<number[]> =>
    (await readdir(dir))
      .filter((f) => f.startsWith(prefix) && /^\d+$/.test(f.slice(prefix.length)))
      .map((f) => Number(f.slice(prefix.length)))
      .sort((a, b) => a - b);
  const me: LockHolder = { pid: process.pid, start: procStart(process.pid), nonce: randomBytes(8).toString('hex') };
  for (let tries = 0; tries < 20; tries++) {
    const gens = await generations();
    const top = gens.length ? gens[gens.length - 1] : 0;
    if (top > 0) {
      const h = await readHolder(`${base}.${top}`);
      if (holderAlive(h)) throw new SluiceError(ErrorCode.InvalidOption, `another re-drive (pid ${h!.pid}) holds ${base}.${top}`, { details: { pid: h!.pid } });
    }
    const mine = `${base}.${top + 1}`;
    const tmp = `${base}.tmp-${me.nonce}`;
    await writeFile(tmp, JSON.stringify(me));
    try {
      await link(tmp, mine);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue; // another taker got n + 1: look again
      throw e;
    } finally {
      await unlink(tmp).catch(() => {});
    }
    const after = await generations();
    if (after[after.length - 1] !== top + 1) {
      // Acted on a stale listing: a higher generation exists. Give ours up and look again.
      await releaseFile(mine, me);
      continue;
    }
    for (const g of after) if (g < top + 1) await unlink(`${base}.${g}`).catch(() => {});
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      await releaseFile(mine, me);
    };
  }
  throw new SluiceError(ErrorCode.InvalidOption, `cannot take the re-drive lock ${base}`);
}

async function releaseFile(path: string, me: LockHolder): Promise<void> {
  const tmp = `${path}.rel-${me.nonce}`;
  try {
    await writeFile(tmp, JSON.stringify({ ...me, released: true }));
    await rename(tmp, path);
  } catch {
    await unlink(tmp).catch(() => {});
  }
}

/** The default cursor: beside a file DLQ, else in the working directory, named after the DLQ. */
export function defaultCursorPath(dlq: ConsumableDlq): string {
  if (dlq.describe.startsWith('file:')) return `${dlq.describe.slice(5)}.redrive.json`;
  return resolvePath(`.sluice-redrive-${dlq.describe.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
}

// ------------------------------------------------------------------ the job

export interface RedriveOptions {
  dlq: ConsumableDlq;
  /** Opened lazily with the pending entries (to default to their source). */
  openTarget: (entries: readonly DeadLetterEntry[]) => Promise<MainStream>;
  revalidator?: Revalidator;
  transform?: Transform | null;
  /** SQL run on the PostgreSQL sink before revalidation (needs a PostgresRevalidator). */
  migrationSql?: string | null;
  dryRun?: boolean;
  /** Where records that fail again go. @default 'dlq' */
  onFail?: 'dlq' | 'quarantine';
  quarantine?: ConsumableDlq | null;
  cursorPath?: string;
  /** Records per publish (each chunk is durable before the next). @default 500 */
  chunk?: number;
  /** Progress events (`planned n`, `published k/n`, `returned n`, `resolved n`): the kill test keys on them. */
  onProgress?: (event: string) => void;
  now?: () => Date;
}

export interface RedriveReport {
  dlq: string;
  target: string | null;
  dryRun: boolean;
  /** A cursor from an interrupted run was found and its plan finished. */
  resumed: boolean;
  pending: number;
  /** Records that pass revalidation (published, or would be with --dry-run). */
  pass: number;
  /** Records that fail again (returned / quarantined, or would be). */
  fail: number;
  /** Records written to the main stream by this run. */
  published: number;
  /** Already in the main stream from the interrupted run: not published again. */
  alreadyPublished: number;
  returnedToDlq: number;
  quarantined: number;
  /** Entries removed from the DLQ. */
  resolved: number;
  failures: { id: string; reason: string; attempts: number }[];
  transform: { path: string; version: string } | null;
  migrated: boolean;
}

async function plan(o: RedriveOptions, pending: readonly DeadLetterEntry[]): Promise<PlanItem[]> {
  const items: PlanItem[] = [];
  const candidates: { idx: number; id: string; data: Buffer }[] = [];
  for (const entry of pending) {
    const original = Buffer.from(entry.data, 'base64');
    const item: PlanItem = { key: fingerprint(entry), entry, action: 'publish' };
    let data: Buffer = original;
    if (o.transform) {
      try {
        data = await applyTransform(o.transform, original, entry.id);
      } catch (e) {
        item.action = 'fail';
        item.reason = `transform ${versionLabel(o.transform.version)}: ${(e as Error).message}`;
        item.sinkCode = 'TRANSFORM';
      }
    }
    if (item.action === 'publish') {
      item.data = data.toString('base64');
      candidates.push({ idx: items.length, id: entry.id, data });
    }
    items.push(item);
  }
  const rv = o.revalidator ?? noRevalidator;
  const verdicts = await rv.check(candidates, { migrationSql: o.dryRun ? (o.migrationSql ?? undefined) : undefined });
  verdicts.forEach((v, i) => {
    if (v.reason === null) return;
    const it = items[candidates[i].idx];
    it.action = 'fail';
    it.reason = v.reason;
    it.sinkCode = v.sinkCode;
    delete it.data;
  });
  return items;
}

function returnedEntry(c: RedriveCursor, it: PlanItem): DeadLetterEntry {
  const how = c.transform ? ` after transform ${versionLabel(c.transform.version)}` : '';
  return {
    ...it.entry,
    errorClass: 'item',
    code: ErrorCode.SinkItem,
    sinkCode: it.sinkCode ?? null,
    message: `re-drive at ${c.returnAt}${how}: still failing: ${it.reason ?? 'unknown'}`.slice(0, 2000),
    attempts: it.entry.attempts + 1,
    deadLetteredAt: c.returnAt,
  };
}

export async function redrive(o: RedriveOptions): Promise<RedriveReport> {
  const now = o.now ?? (() => new Date());
  const progress = o.onProgress ?? (() => {});
  const cursorPath = o.cursorPath ?? defaultCursorPath(o.dlq);
  const chunk = o.chunk ?? 500;
  if (!Number.isInteger(chunk) || chunk < 1) throw invalidOption('chunk', o.chunk, 'an integer ≥ 1');
  const onFail = o.onFail ?? 'dlq';
  if (onFail === 'quarantine' && !o.quarantine) throw invalidOption('--quarantine', undefined, 'a quarantine store (path or URL) with --on-fail quarantine');
  const report: RedriveReport = {
    dlq: o.dlq.describe, target: null, dryRun: Boolean(o.dryRun), resumed: false, pending: 0, pass: 0, fail: 0, published: 0, alreadyPublished: 0,
    returnedToDlq: 0, quarantined: 0, resolved: 0, failures: [], transform: o.transform ? { path: o.transform.path, version: o.transform.version } : null, migrated: false,
  };

  if (o.dryRun) {
    // Reads and revalidates only: no lock, no cursor, no publish, no DLQ change.
    const existing = await readCursor(cursorPath);
    if (existing) throw new SluiceError(ErrorCode.InvalidOption, `an interrupted re-drive (${existing.phase}, ${existing.items.length} entries) must be finished first: rerun without --dry-run (cursor ${cursorPath})`);
    const pending = await o.dlq.pending();
    report.pending = pending.length;
    const items = await plan(o, pending);
    tally(report, items);
    return report;
  }

  const unlock = await acquireRedriveLock(`${cursorPath}.lock`);
  let target: MainStream | null = null;
  try {
    let c = await readCursor(cursorPath);
    if (c) {
      report.resumed = true;
      progress(`resume ${c.phase} ${c.items.length}`);
    } else {
      // Read first: a corrupt or empty DLQ stops the run before the migration changes anything.
      const pending = await o.dlq.pending();
      if (pending.length === 0) {
        progress('nothing pending');
        return report;
      }
      if (o.migrationSql) {
        if (!(o.revalidator instanceof PostgresRevalidator)) throw invalidOption('--migrate', 'sql', 'a PostgreSQL sink (--sink postgres://…) to migrate');
        await o.revalidator.migrate(o.migrationSql);
        report.migrated = true;
        progress('migrated');
      }
      const items = await plan(o, pending);
      target = await o.openTarget(pending);
      c = {
        v: 1, startedAt: now().toISOString(), dlq: o.dlq.describe, target: target.describe, positionBefore: await target.position(),
        returnAt: now().toISOString(), onFail, transform: report.transform, migrationSha256: o.migrationSql ? createHash('sha256').update(o.migrationSql).digest('hex') : null,
        phase: 'planned', items,
      };
      await writeDurably(cursorPath, JSON.stringify(c));
      progress(`planned ${items.length}`);
    }
    report.pending = c.items.length;
    report.transform = c.transform;
    tally(report, c.items);
    target ??= await o.openTarget(c.items.map((i) => i.entry));
    report.target = target.describe;
    if (target.describe !== c.target) throw new SluiceError(ErrorCode.InvalidOption, `the interrupted re-drive published to ${c.target}, not ${target.describe}: rerun with --to for it`);

    if (c.phase === 'planned') {
      const toPublish = c.items.filter((i) => i.action === 'publish');
      const already = await target.idsSince(c.positionBefore);
      const remaining = toPublish.filter((i) => !already.has(i.entry.id));
      report.alreadyPublished = toPublish.length - remaining.length;
      for (let i = 0; i < remaining.length; i += chunk) {
        const part = remaining.slice(i, i + chunk);
        await target.publish(
          part.map((it) => ({ id: it.entry.id, data: Buffer.from(it.data!, 'base64'), ts: Date.parse(it.entry.firstFailureAt) || undefined })),
          part.map((it) => it.key),
        );
        report.published += part.length;
        progress(`published ${i + part.length}/${remaining.length}`);
      }
      c.phase = 'published';
      await writeDurably(cursorPath, JSON.stringify(c));
    }

    if (c.phase === 'published') {
      const failing = c.items.filter((i) => i.action === 'fail');
      if (failing.length > 0) {
        const dest = c.onFail === 'quarantine' ? o.quarantine : o.dlq;
        if (!dest) throw invalidOption('--quarantine', undefined, 'the quarantine store the interrupted re-drive was using');
        const returned = failing.map((it) => returnedEntry(c!, it));
        const there = new Set((await dest.pending()).map(fingerprint));
        const missing = returned.filter((e) => !there.has(fingerprint(e)));
        await dest.append(missing);
        if (c.onFail === 'quarantine') report.quarantined = missing.length;
        else report.returnedToDlq = missing.length;
      }
      c.phase = 'returned';
      await writeDurably(cursorPath, JSON.stringify(c));
      progress(`returned ${failing.length}`);
    }

    // Only now, with every publish and return durable, leave the DLQ.
    await o.dlq.resolve(c.items.map((i) => i.entry));
    report.resolved = c.items.length;
    progress(`resolved ${c.items.length}`);
    await unlink(cursorPath);
    await fsyncDir(dirname(cursorPath));
    progress('done');
    return report;
  } finally {
    await target?.close().catch(() => {});
    await unlock();
  }
}

function tally(r: RedriveReport, items: readonly PlanItem[]): void {
  r.pass = items.filter((i) => i.action === 'publish').length;
  r.fail = items.length - r.pass;
  r.failures = items.filter((i) => i.action === 'fail').map((i) => ({ id: i.entry.id, reason: i.reason ?? '', attempts: i.entry.attempts }));
}
