/**
 * Reading and consuming a dead-letter queue (issue 6): `sluice dlq list|show|redrive` and
 * `sluice reconcile` open the store through here.
 *
 * The stores of src/dlq/ are append-only histories: the pipeline appends while a re-drive may
 * be consuming. An entry is named by its *fingerprint* `id|deadLetteredAt|attempts` (the
 * JetStream store's message id); re-driving resolves entries by fingerprint:
 *
 * - file: resolved fingerprints are appended (fdatasync) to `<dlq>.resolved`, a JSON-lines
 *   sidecar; the DLQ file itself is never rewritten, so a `sluice run` appending to it at the
 *   same time loses nothing (a rewrite + rename would orphan its open handle);
 * - PostgreSQL: the rows are DELETEd (one statement, committed);
 * - JetStream: the messages are deleted by stream sequence.
 *
 * Pending = entries not resolved. Every operation is idempotent, so a re-drive interrupted
 * between any two steps can run them again. Reading never creates anything: an absent file,
 * table or stream is reported as absent.
 */
import { open, readFile, stat } from 'node:fs/promises';
import pg from 'pg';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';
import { connectNats, parseNatsUrl } from '../sources/nats.js';
import { FileDeadLetterStore } from './file.js';
import { JetStreamDeadLetterStore } from './jetstream.js';
import { PostgresDeadLetterStore } from './postgres.js';
import { parseEntry, type DeadLetterEntry, type DeadLetterStore } from './store.js';

export const isPgUrl = (s: string) => /^postgres(ql)?:\/\//.test(s);
export const isNatsUrl = (s: string) => s.startsWith('nats://');

/** The name of one DLQ entry: stable across reads, distinct for a re-dead-lettered copy (attempts, time). */
export function fingerprint(e: DeadLetterEntry): string {
  return `${e.id}|${e.deadLetteredAt}|${e.attempts}`;
}

export interface DlqSpec {
  /** JSON-lines path, `postgres://…` (with `table`), or `nats://host:port/<stream>`. */
  dlq: string;
  /** PostgreSQL table. @default 'sluice_dead_letters' */
  table?: string;
}

/** A DLQ as the re-drive consumes it. */
export interface ConsumableDlq {
  readonly describe: string;
  /** False when the file, table or stream does not exist (nothing was ever dead-lettered there). */
  exists(): Promise<boolean>;
  /** Entries not resolved, oldest first. Throws SLUICE_CORRUPT naming the bad line. */
  pending(): Promise<DeadLetterEntry[]>;
  /** Durable append (the store's own `append`). */
  append(entries: readonly DeadLetterEntry[]): Promise<void>;
  /** Durably removes entries from `pending()`. Idempotent. */
  resolve(entries: readonly DeadLetterEntry[]): Promise<void>;
  close(): Promise<void>;
}

// ------------------------------------------------------------------ file

class FileDlq implements ConsumableDlq {
  readonly describe: string;
  readonly resolvedPath: string;
  private store: FileDeadLetterStore;

  constructor(readonly path: string) {
    this.describe = `file:${path}`;
    this.resolvedPath = `${path}.resolved`;
    this.store = new FileDeadLetterStore(path);
  }

  async exists(): Promise<boolean> {
    try {
      await stat(this.path);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  private async resolved(): Promise<Set<string>> {
    let text: string;
    try {
      text = await readFile(this.resolvedPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
      throw e;
    }
    const out = new Set<string>();
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (!lines[i]) continue;
      try {
        out.add(JSON.parse(lines[i]) as string);
      } catch (cause) {
        // A torn last line (crash mid-append) resolved nothing: its append never returned.
        if (i === lines.length - 1) continue;
        throw new SluiceError(ErrorCode.Corrupt, `${this.resolvedPath}:${i + 1}: not valid JSON`, { cause, details: { line: i + 1 } });
      }
    }
    return out;
  }

  async pending(): Promise<DeadLetterEntry[]> {
    const all = await this.store.list();
    if (all.length === 0) return all;
    const done = await this.resolved();
    return done.size === 0 ? all : all.filter((e) => !done.has(fingerprint(e)));
  }

  append(entries: readonly DeadLetterEntry[]): Promise<void> {
    return this.store.append(entries);
  }

  async resolve(entries: readonly DeadLetterEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const fh = await open(this.resolvedPath, 'a+');
    try {
      // A torn line left by a crash is terminated first, so the new lines parse.
      const size = (await fh.stat()).size;
      let prefix = '';
      if (size > 0) {
        const last = Buffer.alloc(1);
        await fh.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
      await fh.write(prefix + entries.map((e) => JSON.stringify(fingerprint(e)) + '\n').join(''));
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

// ------------------------------------------------------------------ PostgreSQL

function quoteTable(table: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table))
    throw invalidOption('--dlq-table', table, 'letters, digits and _ (optionally schema.table)');
  return table
    .split('.')
    .map((p) => `"${p}"`)
    .join('.');
}

class PostgresDlq implements ConsumableDlq {
  readonly describe: string;
  private readonly store: PostgresDeadLetterStore;
  private readonly pool: pg.Pool;
  private readonly q: string;

  constructor(url: string, readonly table: string) {
    this.q = quoteTable(table);
    this.describe = `postgres:${table}`;
    this.store = new PostgresDeadLetterStore(url, table);
    this.pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 3_000 });
    this.pool.on('error', () => {});
  }

  async exists(): Promise<boolean> {
    try {
      const r = await this.pool.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [this.table]);
      return r.rows[0].t !== null;
    } catch (cause) {
      throw new SluiceError(ErrorCode.SinkUnavailable, `dead-letter table ${this.table}: ${(cause as Error).message}`, { cause });
    }
  }

  async pending(): Promise<DeadLetterEntry[]> {
    if (!(await this.exists())) return [];
    return this.store.list();
  }

  append(entries: readonly DeadLetterEntry[]): Promise<void> {
    return this.store.append(entries);
  }

  async resolve(entries: readonly DeadLetterEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.pool.query(
      `DELETE FROM ${this.q} t USING unnest($1::text[], $2::timestamptz[], $3::int[]) AS d(id, dl, att)
       WHERE t.id = d.id AND t.dead_lettered_at = d.dl AND t.attempts = d.att`,
      [entries.map((e) => e.id), entries.map((e) => e.deadLetteredAt), entries.map((e) => e.attempts)],
    );
  }

  async close(): Promise<void> {
    await this.store.close().catch(() => {});
    await this.pool.end();
  }
}

// ------------------------------------------------------------------ JetStream

class JetStreamDlq implements ConsumableDlq {
  readonly describe: string;
  private readonly store: JetStreamDeadLetterStore;
  /** Fingerprint → stream sequence, from the last `pending()`. */
  private seqs = new Map<string, number>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    readonly stream: string,
  ) {
    this.describe = `jetstream:${stream}`;
    this.store = new JetStreamDeadLetterStore(nc, stream);
  }

  async exists(): Promise<boolean> {
    const jsm = await jetstreamManager(this.nc);
    try {
      await jsm.streams.info(this.stream);
      return true;
    } catch {
      return false;
    }
  }

  async pending(): Promise<DeadLetterEntry[]> {
    if (!(await this.exists())) return [];
    const jsm = await jetstreamManager(this.nc);
    const info = await jsm.streams.info(this.stream);
    const out: DeadLetterEntry[] = [];
    this.seqs.clear();
    if (info.state.messages === 0) return out;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      // Resolved entries were deleted: the sequence has a gap there.
      const m = await jsm.streams.getMessage(this.stream, { seq }).catch(() => null);
      if (!m) continue;
      let v: unknown;
      try {
        v = m.json();
      } catch (cause) {
        throw new SluiceError(ErrorCode.Corrupt, `${this.stream} seq ${seq}: not valid JSON`, { cause, details: { seq } });
      }
      const e = parseEntry(v, `${this.stream} seq ${seq}`);
      out.push(e);
      this.seqs.set(fingerprint(e), seq);
    }
    return out;
  }

  append(entries: readonly DeadLetterEntry[]): Promise<void> {
    return this.store.append(entries);
  }

  async resolve(entries: readonly DeadLetterEntry[]): Promise<void> {
    if (entries.length === 0) return;
    if (entries.some((e) => !this.seqs.has(fingerprint(e)))) await this.pending();
    const jsm = await jetstreamManager(this.nc);
    for (const e of entries) {
      const seq = this.seqs.get(fingerprint(e));
      if (seq === undefined) continue; // already deleted
      await jsm.streams.deleteMessage(this.stream, seq, false).catch((err: Error) => {
        if (!/not found|no message/i.test(err.message)) throw err;
      });
      this.seqs.delete(fingerprint(e));
    }
  }

  async close(): Promise<void> {
    if (this.ownsConnection) await this.nc.close();
  }
}

/**
 * Opens a DLQ from its spec without creating anything. `nc` reuses a NATS connection (the
 * lab and tests); otherwise one is opened and closed with the DLQ.
 */
export async function openConsumableDlq(spec: DlqSpec, nc?: NatsConnection): Promise<ConsumableDlq> {
  if (isPgUrl(spec.dlq)) return new PostgresDlq(spec.dlq, spec.table ?? 'sluice_dead_letters');
  if (isNatsUrl(spec.dlq)) {
    const { stream } = parseNatsUrl(spec.dlq);
    const conn = nc ?? (await connectNats(spec.dlq));
    return new JetStreamDlq(conn, !nc, stream ?? 'SLUICE_DLQ');
  }
  return new FileDlq(spec.dlq);
}

/**
 * Opens a dead-letter store for appending (a pipeline's DLQ), creating it when missing: a
 * JSON-lines path, `postgres://…` (table `opts.table`), or `nats://host:port/<stream>`.
 */
export async function openDeadLetterStore(spec: string, opts: { table?: string; nc?: NatsConnection } = {}): Promise<DeadLetterStore> {
  if (isPgUrl(spec)) {
    const s = new PostgresDeadLetterStore(spec, opts.table ?? 'sluice_dead_letters');
    await s.open();
    return s;
  }
  if (isNatsUrl(spec)) {
    const { stream } = parseNatsUrl(spec);
    const nc = opts.nc ?? (await connectNats(spec));
    const s = await new JetStreamDeadLetterStore(nc, stream ?? 'SLUICE_DLQ').open();
    if (opts.nc) return s;
    // This store owns the connection it opened: closing it drains that connection too.
    return {
      describe: s.describe,
      append: (entries) => s.append(entries),
      list: () => s.list(),
      count: () => s.count(),
      close: async () => {
        await s.close();
        await nc.drain();
      },
    };
  }
  return new FileDeadLetterStore(spec).open();
}
