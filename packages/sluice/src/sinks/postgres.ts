/**
 * The PostgreSQL sink: any JSON record into the user's table, one commit per batch,
 * idempotent on the record's id by default.
 *
 * Record model (docs/sinks.md, "PostgreSQL"): each envelope gives
 * - the id, `env.id` (the idempotence key), or when absent the sha256 of the bytes as received
 *   (hex): the same bytes twice are one row;
 * - the document, `env.raw` (bytes as received), or `JSON.stringify(env.value)`;
 * - optional mapped columns, `columns: { column: 'field.path' }`, read from `env.value`.
 *
 * The table: created when missing as `(id text primary key, received_at timestamptz not null
 * default now(), doc jsonb not null)`. An existing table is introspected at `open()` and used as
 * it is, never ALTERed; a table the sink cannot fill (no id column, no unique index on it for
 * ON CONFLICT, a mapped column missing, a NOT NULL column without default that nothing fills)
 * is one SLUICE_INVALID_OPTION at start naming the table and the column.
 *
 * Write paths (`mode`), figures in docs/sinks.md (bench case 3 and bench/postgres-modes.ts):
 * - `copy` (default, idempotent): COPY straight into the table, in autocommit: one round trip,
 *   one commit, what a hand-written COPY loop costs. A COPY that meets an id already stored
 *   (a redelivered batch) fails whole with 23505 and commits nothing; the batch is then written
 *   through `staged`, which skips the stored ids. After such a conflict the next
 *   `conflictBatches` batches go through `staged` directly, so a source that redelivers
 *   often does not pay for two writes per batch.
 * - `staged` (idempotent): `BEGIN`; COPY into a per-connection temporary table;
 *   `INSERT … SELECT … ON CONFLICT (id) DO NOTHING; COMMIT`.
 * - `insert` (idempotent): one `INSERT … SELECT … FROM unnest($1::text[], …) ON CONFLICT DO NOTHING`.
 * - `json` (idempotent): one `INSERT … SELECT … FROM json_array_elements($1::json) ON CONFLICT
 *   DO NOTHING`, the batch sent as one JSON array holding each record's bytes as received.
 * - `auto` (idempotent): `json` below `copyMinRows` rows, `copy` from it.
 * - `append` (NOT idempotent): COPY straight into the table, no fallback: a redelivered batch
 *   fails with 23505, an item-level error. For tables fed exactly once.
 *
 * COPY goes in binary format when every column written is text-like or json/jsonb (the
 * default table: no text escaping in Node), in text format otherwise.
 *
 * Constraints are real (the poison experiments rely on them): a bad record makes PostgreSQL
 * reject the whole statement, and `write()` throws an item-level SinkError carrying the
 * SQLSTATE (22xxx data exception, 23xxx constraint); splitting the batch to find the record
 * is a decorator's job (splitAndRetry).
 */
import { Readable } from 'node:stream';
import { pipeline as streamPipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { ErrorCode, SinkError, SluiceError, invalidOption } from '../core/errors.js';
import { sha256Hex } from '../codec/record-id.js';

export type PostgresWriteMode = 'copy' | 'staged' | 'insert' | 'json' | 'append' | 'auto';
export const POSTGRES_WRITE_MODES: readonly PostgresWriteMode[] = ['copy', 'staged', 'insert', 'json', 'append', 'auto'];

/**
 * `copy`: in bench case 3 it runs at raw COPY's speed into the same table (both are one COPY
 * per batch), while `staged`, `insert` and `json` pay the server's ON CONFLICT insert path on
 * every row (docs/sinks.md, "Write paths measured"). It stays idempotent through its fallback.
 */
export const POSTGRES_DEFAULT_MODE: PostgresWriteMode = 'copy';

/** Every default of PostgresSinkOptions, in one place. */
export const POSTGRES_DEFAULTS = Object.freeze({
  mode: POSTGRES_DEFAULT_MODE,
  idColumn: 'id',
  /** Used when the table has a column of that name (the created table has). */
  docColumn: 'doc',
  /** `auto`: batches of at least this many rows go through COPY. */
  copyMinRows: 512,
  /** `copy`: batches sent straight through `staged` after a batch met a stored id. */
  conflictBatches: 16,
  /** Enough for the pipeline's `maxInFlight` up to 4; one batch holds one connection. */
  maxConnections: 4,
  /** A refused connection fails at once; this bounds one that hangs (firewall, wrong host). */
  connectTimeoutMs: 3_000,
  /** Far above any batch's write time (≈0.1 s for 4,096 rows here): only a hang reaches it. */
  statementTimeoutMs: 30_000,
});

export interface PostgresSinkOptions {
  /** e.g. `postgres://root@127.0.0.1:5432/test`. */
  connectionString: string;
  /** Target table, `name` or `schema.name` (letters, digits, `_`). Created if missing (only without `columns`). */
  table: string;
  /** How a batch is written (see the module comment). @default POSTGRES_DEFAULT_MODE ('copy') */
  mode?: PostgresWriteMode;
  /** The column holding the id; it needs a unique index (primary key) for every mode but `append`. @default 'id' */
  idColumn?: string;
  /**
   * The column holding the whole record (jsonb, json or text). `null`: none.
   * @default 'doc' when the table has such a column, else none
   */
  docColumn?: string | null;
  /**
   * Columns filled from record fields, `{ column: 'field' }` or a dotted path `'a.b.c'`. A field
   * that is missing or null writes NULL. Strings are sent as they are, objects and arrays as
   * JSON, numbers and booleans as their JavaScript text (integers beyond 2^53 lose precision:
   * send those as strings). A value the column's type refuses is an item-level error (22xxx).
   * @default {}
   */
  columns?: Record<string, string>;
  /** `auto` mode: batches of at least this many rows are written with COPY, smaller ones as one JSON statement. @default 512 */
  copyMinRows?: number;
  /** `copy` mode: after a batch met an already stored id, this many batches go through `staged` directly. @default 16 */
  conflictBatches?: number;
  /** Connections in the pool; one batch uses one connection. Size it to `maxInFlight`. @default 4 */
  maxConnections?: number;
  /** How long `open()` (and a pool checkout) waits for a connection before giving up. @default 3_000 */
  connectTimeoutMs?: number;
  /** Server-side statement timeout; a batch that hangs fails transient (57014). @default 30_000 */
  statementTimeoutMs?: number;
}

/** Transient SQLSTATE classes: connection (08), rollback/serialization (40), resources (53), operator intervention (57). */
const TRANSIENT_CLASSES = new Set(['08', '40', '53', '57']);
/** What CREATE … IF NOT EXISTS can still raise when another session created the same object meanwhile. */
export const CONCURRENT_CREATE: ReadonlySet<string> = new Set(['23505', '42P07', '42710']);
/** Item-level SQLSTATE classes: data exception (22), integrity constraint violation (23). */
const ITEM_CLASSES = new Set(['22', '23']);
/** Transient classes that should also page someone: the server is out of disk or memory (53). */
const ALERTING_CLASSES = new Set(['53']);
const TRANSIENT_ERRNO = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'ENETDOWN', 'EAI_AGAIN', 'ENOTFOUND', 'EADDRNOTAVAIL',
]);
/** node-pg reports a lost connection or a client-side timeout by message only. */
const TRANSIENT_MESSAGES: [RegExp, string][] = [
  [/connection terminated|connection ended|not queryable|client has encountered a connection error/i, 'ECONNCLOSED'],
  [/timeout/i, 'ETIMEDOUT'],
];

interface PgLikeError {
  code?: unknown;
  message?: unknown;
  detail?: unknown;
  constraint?: unknown;
  column?: unknown;
  table?: unknown;
}

/**
 * Classifies any error from pg into a SinkError (already-classified errors pass through):
 * - SQLSTATE classes 08, 40, 53, 57 and network errors (ECONNREFUSED, ECONNRESET, timeouts,
 *   a terminated connection) → `transient`: retry the whole batch, never split.
 * - classes 22 (data exception: bad number, value too long) and 23 (constraint violation)
 *   → `item`: a record caused it; split to isolate it.
 * - anything else (42P01 table dropped, 42501 permission, XX000 …) → `transient` and
 *   `alerting`: retrying will not fix it, but no record caused it either, so a retry budget
 *   ends it rather than splitting good records into the dead-letter queue.
 * `sinkCode` is the SQLSTATE, or the errno / a synthetic E-code for client-side failures.
 */
export function classifyPgError(err: unknown): SinkError {
  if (err instanceof SinkError) return err;
  const e = (err ?? {}) as PgLikeError;
  const code = typeof e.code === 'string' ? e.code : undefined;
  const message = typeof e.message === 'string' ? e.message : String(err);
  const details: Record<string, unknown> = {};
  for (const k of ['detail', 'constraint', 'column', 'table'] as const) if (typeof e[k] === 'string') details[k] = e[k];
  const msg = `postgres sink: ${message}${typeof e.detail === 'string' ? ` (${e.detail})` : ''}`;
  if (code && /^[0-9A-Z]{5}$/.test(code)) {
    const cls = code.slice(0, 2);
    if (ITEM_CLASSES.has(cls)) return new SinkError('item', msg, { cause: err, sinkCode: code, details });
    if (TRANSIENT_CLASSES.has(cls))
      return new SinkError('transient', msg, { cause: err, sinkCode: code, alerting: ALERTING_CLASSES.has(cls), details });
    return new SinkError('transient', msg, { cause: err, sinkCode: code, alerting: true, details });
  }
  if (code && TRANSIENT_ERRNO.has(code)) return new SinkError('transient', msg, { cause: err, sinkCode: code, details });
  for (const [re, synthetic] of TRANSIENT_MESSAGES)
    if (re.test(message)) return new SinkError('transient', msg, { cause: err, sinkCode: code ?? synthetic, details });
  return new SinkError('transient', msg, { cause: err, sinkCode: code ?? 'UNKNOWN', alerting: true, details });
}

/** A source row: id, document, mapped values (text or NULL). */
type Row = (string | Buffer | null)[];
const textOf = (f: string | Buffer | null): string | null => (f === null || typeof f === 'string' ? f : f.toString('utf8'));

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Quotes `name` or `schema.name` after checking it is a plain identifier (no injection through options). */
function quoteTable(table: unknown): string {
  if (typeof table !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table))
    throw invalidOption('table', table, 'a table name: letters, digits and _ (optionally schema.table), at most 63 characters each');
  return table
    .split('.')
    .map((p) => `"${p}"`)
    .join('.');
}

const qi = (name: string): string => `"${name}"`;

/** Host and port of a URL for error messages (never the password). */
function endpointOf(connectionString: string): string {
  try {
    const u = new URL(connectionString);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** The id of a record: the envelope's, else the sha256 (hex) of its document bytes. */
export function recordId(env: Envelope<unknown>, doc?: Buffer): string {
  if (typeof env.id === 'string') return env.id;
  return sha256Hex(doc ?? recordDoc(env));
}

/** The document of a record: the bytes as received, else its JSON. */
export function recordDoc(env: Envelope<unknown>): Buffer {
  return env.raw ?? Buffer.from(JSON.stringify(env.value ?? null));
}

/** A field of `value` by path segments; undefined when any step is missing. */
function fieldAt(value: unknown, path: readonly string[]): unknown {
  let v = value;
  for (let i = 0; i < path.length; i++) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[path[i]];
  }
  return v;
}

/** A mapped field as the text PostgreSQL parses (null for SQL NULL); into a json/jsonb column, any value as JSON. */
function fieldText(v: unknown, json: boolean): string | null {
  if (v === null || v === undefined) return null;
  if (json) return JSON.stringify(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// ------------------------------------------------------------------ COPY encoders

const BINARY_HEADER = Buffer.from([0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);

/** How a field is sent in binary COPY: the UTF-8 bytes (text, varchar, json), or jsonb's version byte 1 then them. */
type BinaryKind = 'text' | 'jsonb';

/**
 * Writes `s` as UTF-8 at `o`, returns the bytes written. Ids are short and mostly ASCII (content
 * hashes, UUIDs, counters): a byte loop for those skips `Buffer#write`'s argument handling, which
 * was the encoder's largest cost per row (docs/bench.md, case 3); anything else goes through it.
 */
function putUtf8(out: Buffer, s: string, o: number): number {
  const n = s.length;
  if (n <= 128) {
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      out[o + i] = c;
    }
    if (i === n) return n;
  }
  return out.write(s, o, 'utf8');
}

/** Big-endian int32 at `o` without `writeInt32BE`'s range checks (lengths here are < 2^31; -1 is NULL). */
function putInt32(out: Buffer, v: number, o: number): void {
  out[o] = v >>> 24;
  out[o + 1] = v >>> 16;
  out[o + 2] = v >>> 8;
  out[o + 3] = v;
}

/**
 * Rows of fields (strings, UTF-8 bytes, or null) in COPY binary format. No escaping: each
 * field is length-prefixed. Strings are written straight into the output (an intermediate
 * Buffer per id cost ≈2 µs per row in bench case 3's profile); bytes with `set` (a memcpy,
 * without `Buffer#copy`'s argument handling); the output is sized for the worst case
 * (3 bytes per UTF-16 unit) and trimmed. Written into `scratch` when it is large enough
 * (the sink's reused buffers, see `CopyBuffers`); the result is then a view of it.
 */
export function copyBinary(rows: readonly (readonly (Buffer | string | null)[])[], kinds: readonly BinaryKind[], scratch?: Buffer): Buffer {
  let size = BINARY_HEADER.length + 2;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    size += 2 + 4 * row.length;
    for (let j = 0; j < row.length; j++) {
      const f = row[j];
      if (f === null) continue;
      size += (typeof f === 'string' ? 3 * f.length : f.length) + (kinds[j] === 'jsonb' ? 1 : 0);
    }
  }
  const out = scratch !== undefined && scratch.length >= size ? scratch : Buffer.allocUnsafe(size);
  out.set(BINARY_HEADER, 0);
  let o = BINARY_HEADER.length;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    out[o] = row.length >>> 8;
    out[o + 1] = row.length;
    o += 2;
    for (let j = 0; j < row.length; j++) {
      const f = row[j];
      if (f === null) {
        putInt32(out, -1, o);
        o += 4;
        continue;
      }
      const at = o;
      o += 4;
      if (kinds[j] === 'jsonb') out[o++] = 1;
      if (typeof f === 'string') o += putUtf8(out, f, o);
      else {
        out.set(f, o);
        o += f.length;
      }
      putInt32(out, o - at - 4, at);
    }
  }
  out[o] = 0xff;
  out[o + 1] = 0xff;
  return out.subarray(0, o + 2);
}

/**
 * Reused COPY output buffers, one per batch in flight. A 4,096-row batch encodes to ≈0.8 MB: a
 * fresh `allocUnsafe` of that size is its own mmap, page-faulted in on every batch and counted as
 * external memory that triggers V8's full collections; reusing the buffer removed most of the
 * sink's system CPU in bench case 3 (docs/bench.md, case 3). A buffer goes back only after its
 * COPY completed (the server has read every byte, so no socket write still holds it); a failed
 * write drops its buffer.
 */
class CopyBuffers {
  private readonly free: Buffer[] = [];
  constructor(
    private readonly keep: number,
    private readonly maxBytes = 64 * 2 ** 20,
  ) {}
  take(): Buffer | undefined {
    return this.free.pop();
  }
  /** Keeps the whole buffer behind `data` when it owns one (not a slice of Node's small-buffer pool). */
  give(data: Buffer): void {
    const ab = data.buffer;
    if (data.byteOffset !== 0 || ab.byteLength < 64 * 1024 || ab.byteLength > this.maxBytes || this.free.length >= this.keep) return;
    this.free.push(Buffer.from(ab as ArrayBuffer));
  }
}

const NEEDS_ESCAPE = /[\\\t\n\r]/;
const ESCAPES = /[\\\t\n\r]/g;
const escapeChar = (c: string): string => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r');

/** One field in COPY text format: backslash, tab, newline and carriage return escaped; `\N` is NULL. */
function copyTextField(f: Buffer | string | null): string {
  if (f === null) return '\\N';
  const s = typeof f === 'string' ? f : f.toString('utf8');
  return NEEDS_ESCAPE.test(s) ? s.replace(ESCAPES, escapeChar) : s;
}

/** Rows of fields in COPY text format, one line per row. */
export function copyText(rows: readonly (readonly (Buffer | string | null)[])[]): Buffer {
  let text = '';
  for (const row of rows) {
    for (let j = 0; j < row.length; j++) text += (j > 0 ? '\t' : '') + copyTextField(row[j]);
    text += '\n';
  }
  return Buffer.from(text);
}

// ------------------------------------------------------------------ table plan

interface ColumnInfo {
  name: string;
  /** format_type without typmod: a cast to it never truncates (a cast to varchar(32) would). */
  baseType: string;
  /** pg_type.typname of the column's type (jsonb, text, int4, …). */
  typname: string;
  notNull: boolean;
  hasDefault: boolean;
  generated: boolean;
}

/** What `open()` learned about the table and how each write fills it. */
interface TablePlan {
  idColumn: ColumnInfo;
  docColumn: ColumnInfo | null;
  /** Mapped columns, in option order, with their field paths. */
  mapped: { column: ColumnInfo; path: string[]; json: boolean }[];
  /** Quoted target column list: id, doc (if any), mapped. */
  targetList: string;
  /** `INSERT … SELECT <casts> FROM ` (the source `s(id, doc, m0, …)` of text columns follows). */
  insertHead: string;
  /** ` ON CONFLICT (id) DO NOTHING` */
  conflictTail: string;
  /** Binary kinds of the target columns when every one is text-like or json/jsonb; null → text COPY. */
  directBinary: BinaryKind[] | null;
  /** Whether an ON CONFLICT on the id column works (a unique, non-partial, immediate index on it alone). */
  idUnique: boolean;
}

const TEXT_LIKE = new Set(['text', 'varchar', 'bpchar', 'json']);

function mismatch(table: string, column: string, why: string): SluiceError {
  return new SluiceError(ErrorCode.InvalidOption, `postgres sink: table ${table}, column ${column}: ${why}`, {
    details: { option: 'table', table, column, reason: why },
  });
}

export class PostgresSink implements Sink<unknown> {
  readonly name = 'postgres';
  readonly fixedCostKind: FixedCostKind = 'commit';
  readonly mode: PostgresWriteMode;
  readonly table: string;
  readonly endpoint: string;
  private readonly qtable: string;
  private readonly pool: pg.Pool;
  private readonly idColumnName: string;
  private readonly docColumnOpt: string | null | undefined;
  private readonly columnMap: [string, string[]][];
  private readonly connectTimeoutMs: number;
  private readonly copyMinRows: number;
  private readonly conflictBatches: number;
  private plan: TablePlan | null = null;
  private readonly paths = { copy: 0, staged: 0, insert: 0, json: 0, append: 0 };
  /** Connections that already hold this sink's temporary staging table. */
  private readonly staged = new WeakSet<pg.PoolClient>();
  /** `copy` mode: batches left to send through `staged` after a conflict. */
  private stagedAhead = 0;
  /** COPY output buffers reused across batches, at most one per connection. */
  private readonly copyBuffers: CopyBuffers;
  private conflicts = 0;
  private opening: Promise<void> | null = null;
  private closed = false;
  private commits = 0;
  private rollbacks = 0;
  private statements = 0;

  constructor(opts: PostgresSinkOptions) {
    if (!opts || typeof opts.connectionString !== 'string' || !/^postgres(ql)?:\/\//.test(opts.connectionString))
      throw invalidOption('connectionString', opts?.connectionString, 'a postgres:// URL');
    this.qtable = quoteTable(opts.table);
    this.table = opts.table;
    this.mode = opts.mode ?? POSTGRES_DEFAULTS.mode;
    if (!POSTGRES_WRITE_MODES.includes(this.mode)) throw invalidOption('mode', opts.mode, `one of ${POSTGRES_WRITE_MODES.join(', ')}`);
    this.idColumnName = opts.idColumn ?? POSTGRES_DEFAULTS.idColumn;
    if (typeof this.idColumnName !== 'string' || !IDENT.test(this.idColumnName)) throw invalidOption('idColumn', opts.idColumn, 'a column name: letters, digits and _');
    this.docColumnOpt = opts.docColumn;
    if (opts.docColumn !== undefined && opts.docColumn !== null && (typeof opts.docColumn !== 'string' || !IDENT.test(opts.docColumn)))
      throw invalidOption('docColumn', opts.docColumn, 'a column name (letters, digits and _) or null');
    if (opts.docColumn === this.idColumnName) throw invalidOption('docColumn', opts.docColumn, 'a column other than the id column');
    const columns = opts.columns ?? {};
    if (columns === null || typeof columns !== 'object' || Array.isArray(columns)) throw invalidOption('columns', opts.columns, 'an object { column: "field.path" }');
    this.columnMap = [];
    for (const [col, path] of Object.entries(columns)) {
      if (!IDENT.test(col)) throw invalidOption(`columns.${col}`, path, 'a column name of letters, digits and _');
      if (typeof path !== 'string' || path === '' || path.split('.').some((p) => p === '') || (path.startsWith('@') && !/^@[A-Za-z_][A-Za-z0-9_]*$/.test(path)))
        throw invalidOption(`columns.${col}`, path, 'a field name or dotted path such as "level" or "http.status", or an attribute such as "@index"');
      if (col === this.idColumnName || col === (opts.docColumn ?? POSTGRES_DEFAULTS.docColumn))
        throw invalidOption(`columns.${col}`, path, 'a column other than the id and document columns');
      this.columnMap.push([col, path.split('.')]);
    }
    this.copyMinRows = opts.copyMinRows ?? POSTGRES_DEFAULTS.copyMinRows;
    if (!Number.isInteger(this.copyMinRows) || this.copyMinRows < 1) throw invalidOption('copyMinRows', opts.copyMinRows, 'an integer ≥ 1');
    this.conflictBatches = opts.conflictBatches ?? POSTGRES_DEFAULTS.conflictBatches;
    if (!Number.isInteger(this.conflictBatches) || this.conflictBatches < 0) throw invalidOption('conflictBatches', opts.conflictBatches, 'an integer ≥ 0');
    const maxConnections = opts.maxConnections ?? POSTGRES_DEFAULTS.maxConnections;
    if (!Number.isInteger(maxConnections) || maxConnections < 1) throw invalidOption('maxConnections', opts.maxConnections, 'an integer ≥ 1');
    this.copyBuffers = new CopyBuffers(maxConnections);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? POSTGRES_DEFAULTS.connectTimeoutMs;
    if (!(this.connectTimeoutMs > 0)) throw invalidOption('connectTimeoutMs', opts.connectTimeoutMs, 'a number > 0');
    const statementTimeoutMs = opts.statementTimeoutMs ?? POSTGRES_DEFAULTS.statementTimeoutMs;
    if (!(statementTimeoutMs > 0)) throw invalidOption('statementTimeoutMs', opts.statementTimeoutMs, 'a number > 0');
    this.endpoint = endpointOf(opts.connectionString);
    this.pool = new pg.Pool({
      connectionString: opts.connectionString,
      max: maxConnections,
      connectionTimeoutMillis: this.connectTimeoutMs,
      statement_timeout: statementTimeoutMs,
      idleTimeoutMillis: 30_000,
    });
    // An idle pooled connection that dies (server restart) emits 'error' on the pool; without
    // a listener that would crash the process. The next checkout reconnects, and a write on
    // a dead connection throws a classified transient error.
    this.pool.on('error', () => {});
  }

  /** The id column's name (reconciliation reads it). */
  get idColumn(): string {
    return this.idColumnName;
  }

  /**
   * Connects eagerly (bounded by `connectTimeoutMs`), creates the table if missing and
   * introspects it, so an unreachable database fails at start-up with one
   * SLUICE_SINK_UNAVAILABLE naming the host and port, and a table the sink cannot fill with
   * one SLUICE_INVALID_OPTION naming the table and column, not at the first batch.
   * Idempotent; `write()` calls it too.
   */
  open(): Promise<this> {
    if (this.closed) return Promise.reject(new SluiceError(ErrorCode.Closed, `postgres sink ${this.table} is closed`));
    if (!this.opening) {
      this.opening = this.setUp();
      this.opening.catch(() => (this.opening = null));
    }
    return this.opening.then(() => this);
  }

  private async setUp(): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (cause) {
      const c = cause as PgLikeError;
      const msg = typeof c.message === 'string' ? c.message : String(cause);
      // A server-side refusal (3D000 no such database, 28000 no such role) is worth its message.
      const why = typeof c.code === 'string' ? (/^[0-9A-Z]{5}$/.test(c.code) ? `${msg}, SQLSTATE ${c.code}` : c.code) : msg;
      throw new SluiceError(ErrorCode.SinkUnavailable, `postgres sink: cannot connect to ${this.endpoint} (${why})`, {
        cause,
        retryable: true,
        details: { endpoint: this.endpoint, sinkCode: c.code },
      });
    }
    try {
      const exists = (await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [this.qtable])).rows[0].t !== null;
      if (!exists) await this.createTable(client);
      this.plan = await this.introspect(client);
      client.release();
    } catch (cause) {
      client.release(true);
      if (cause instanceof SluiceError) throw cause;
      throw new SluiceError(ErrorCode.SinkUnavailable, `postgres sink: cannot use table ${this.table} on ${this.endpoint}: ${(cause as Error).message}`, {
        cause,
        details: { endpoint: this.endpoint, sinkCode: (cause as PgLikeError).code },
      });
    }
  }

  private async createTable(client: pg.PoolClient): Promise<void> {
    if (this.columnMap.length > 0)
      throw mismatch(this.table, this.columnMap[0][0], 'the table does not exist; a column mapping needs an existing table (create it with the types you want)');
    const doc = this.docColumnOpt === null ? '' : `, ${qi(this.docColumnOpt ?? POSTGRES_DEFAULTS.docColumn)} jsonb NOT NULL`;
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS ${this.qtable} (${qi(this.idColumnName)} text PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now()${doc})`);
    } catch (cause) {
      // Two sinks creating the same table at once race on the catalog: the loser sees
      // 23505, 42P07 or 42710 (`type "…" already exists`: the table's row type, two workers
      // started together) although the table now exists, which is what we wanted.
      if (!CONCURRENT_CREATE.has(String((cause as PgLikeError).code ?? ''))) throw cause;
    }
  }

  private async introspect(client: pg.PoolClient): Promise<TablePlan> {
    const cols = (
      await client.query<{ name: string; base: string; typname: string; notnull: boolean; hasdef: boolean; generated: boolean }>(
        `SELECT a.attname AS name, format_type(a.atttypid, NULL) AS base,
                CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END AS typname,
                a.attnotnull AS notnull, (a.atthasdef OR a.attidentity <> '') AS hasdef, a.attgenerated <> '' AS generated
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
          WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
        [this.qtable],
      )
    ).rows;
    const byName = new Map<string, ColumnInfo>(
      cols.map((c) => [c.name, { name: c.name, baseType: c.base, typname: c.typname, notNull: c.notnull, hasDefault: c.hasdef, generated: c.generated }]),
    );
    const idColumn = byName.get(this.idColumnName);
    if (!idColumn) throw mismatch(this.table, this.idColumnName, `no such column (the id column; columns: ${cols.map((c) => c.name).join(', ')}); set idColumn`);
    if (idColumn.generated) throw mismatch(this.table, idColumn.name, 'the id column is generated; the sink must write it');
    const idUnique = (
      await client.query<{ ok: boolean }>(
        `SELECT EXISTS (
           SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indimmediate AND i.indnkeyatts = 1
              AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = $2) AS ok`,
        [this.qtable, this.idColumnName],
      )
    ).rows[0].ok;
    if (!idUnique && this.mode !== 'append')
      throw mismatch(this.table, idColumn.name, `no unique index on this column alone, so ON CONFLICT cannot skip a redelivered record (add a primary key or unique constraint on it, or use mode 'append')`);
    let docColumn: ColumnInfo | null = null;
    if (this.docColumnOpt !== null) {
      const name = this.docColumnOpt ?? POSTGRES_DEFAULTS.docColumn;
      docColumn = byName.get(name) ?? null;
      if (!docColumn && this.docColumnOpt !== undefined) throw mismatch(this.table, name, 'no such column (docColumn); set docColumn: null to store no document');
      if (docColumn?.generated) throw mismatch(this.table, name, 'the document column is generated; the sink must write it');
    }
    const mapped: TablePlan['mapped'] = [];
    for (const [name, path] of this.columnMap) {
      const column = byName.get(name);
      if (!column) throw mismatch(this.table, name, `no such column (mapped from field ${path.join('.')})`);
      if (column.generated) throw mismatch(this.table, name, 'a generated column cannot be written');
      mapped.push({ column, path, json: column.typname === 'json' || column.typname === 'jsonb' });
    }
    const filled = new Set([idColumn.name, ...(docColumn ? [docColumn.name] : []), ...mapped.map((m) => m.column.name)]);
    for (const c of byName.values())
      if (c.notNull && !c.hasDefault && !c.generated && !filled.has(c.name))
        throw mismatch(this.table, c.name, 'NOT NULL without a default, and nothing fills it (map a field to it with columns, or give it a default)');
    const targets = [idColumn, ...(docColumn ? [docColumn] : []), ...mapped.map((m) => m.column)];
    const sources = ['s.id', ...(docColumn ? ['s.doc'] : []), ...mapped.map((_, i) => `s.m${i}`)];
    const casts = targets.map((c, i) => `${sources[i]}::${c.baseType}`);
    const directBinary = targets.every((c) => TEXT_LIKE.has(c.typname) || c.typname === 'jsonb')
      ? targets.map((c): BinaryKind => (c.typname === 'jsonb' ? 'jsonb' : 'text'))
      : null;
    const targetList = targets.map((c) => qi(c.name)).join(', ');
    return {
      idColumn,
      docColumn,
      mapped,
      targetList,
      insertHead: `INSERT INTO ${this.qtable} (${targetList}) SELECT ${casts.join(', ')} FROM `,
      conflictTail: ` ON CONFLICT (${qi(idColumn.name)}) DO NOTHING`,
      directBinary,
      idUnique,
    };
  }

  /** The staging/source columns of every idempotent path: `id, doc, m0, …`, all text. */
  private sourceColumns(plan: TablePlan): string[] {
    return ['id', 'doc', ...plan.mapped.map((_, i) => `m${i}`)];
  }

  /** Each record as its source row `[id, doc, m0, …]` (the document is always there; a table without one drops it). */
  private fields(plan: TablePlan, batch: readonly Envelope<unknown>[]): Row[] {
    const out = new Array<Row>(batch.length);
    const k = plan.mapped.length;
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i];
      const doc = recordDoc(e);
      const id = recordId(e, doc);
      if (k === 0) {
        out[i] = [id, doc];
        continue;
      }
      const row: Row = [id, doc];
      for (let j = 0; j < k; j++) {
        const path = plan.mapped[j].path;
        // `@name`: an attribute the front door kept with the record (`@index`: the _bulk `_index`).
        const v = path[0].charCodeAt(0) === 0x40 ? e.attrs?.[path[0].slice(1)] : fieldAt(e.value, path);
        row.push(fieldText(v, plan.mapped[j].json));
      }
      out[i] = row;
    }
    return out;
  }

  async write(batch: readonly Envelope<unknown>[]): Promise<void> {
    if (batch.length === 0) return;
    if (this.closed) throw new SinkError('transient', `postgres sink ${this.table} is closed`, { sinkCode: 'CLOSED', alerting: true });
    try {
      if (!this.opening) await this.open();
      else await this.opening;
    } catch (cause) {
      // open() says SLUICE_SINK_UNAVAILABLE; a write must say how to handle it: transient
      // (the database may come back), alerting (someone should know it is gone).
      const code = (cause as SluiceError).details?.sinkCode;
      throw new SinkError('transient', (cause as Error).message, { cause, sinkCode: typeof code === 'string' ? code : 'UNAVAILABLE', alerting: true });
    }
    const plan = this.plan!;
    const path = this.mode === 'auto' ? (batch.length >= this.copyMinRows ? 'copy' : 'json') : this.mode;
    const rows = this.fields(plan, batch);
    if (path === 'copy') {
      if (this.stagedAhead > 0) {
        this.stagedAhead--;
        this.paths.staged++;
        return this.writeStaged(plan, rows);
      }
      this.paths.copy++;
      try {
        await this.writeDirect(plan, rows);
      } catch (err) {
        // A stored id (redelivery) or the same id twice in the batch: the COPY committed
        // nothing; the staged path skips what is stored. Another unique index's 23505 comes
        // back from it as an item error, as it would on any idempotent path.
        if (!(err instanceof SinkError) || err.sinkCode !== '23505' || !plan.idUnique) throw err;
        this.conflicts++;
        this.stagedAhead = this.conflictBatches;
        this.paths.staged++;
        await this.writeStaged(plan, rows);
      }
      return;
    }
    this.paths[path]++;
    if (path === 'append') return this.writeDirect(plan, rows);
    if (path === 'staged') return this.writeStaged(plan, rows);
    if (path === 'insert') return this.writeInsert(plan, rows);
    return this.writeJson(plan, rows);
  }

  /** The batch as COPY data for the target columns. */
  private directCopy(plan: TablePlan, rows: Row[]): { data: Buffer; binary: boolean } {
    const out = plan.docColumn !== null ? rows : rows.map((r) => [r[0], ...r.slice(2)]);
    return plan.directBinary ? { data: copyBinary(out, plan.directBinary, this.copyBuffers.take()), binary: true } : { data: copyText(out), binary: false };
  }

  /** COPY straight into the table, in autocommit: the COPY is its own transaction. */
  private async writeDirect(plan: TablePlan, rows: Row[]): Promise<void> {
    const { data, binary } = this.directCopy(plan, rows);
    const client = await this.checkout();
    let failed = false;
    try {
      this.statements++;
      await streamPipeline(
        Readable.from([data]),
        client.query(copyFrom(`COPY ${this.qtable} (${plan.targetList}) FROM STDIN${binary ? ' (FORMAT binary)' : ''}`)),
      );
      this.commits++;
      if (binary) this.copyBuffers.give(data);
    } catch (err) {
      // The server refused the data (a SQLSTATE: bad value, constraint, conflict): it ended the
      // COPY and the connection is ready for the next query; keeping it saves a reconnect per
      // failed sub-batch while split-and-retry isolates a poison record. Anything else
      // (network, client-side) leaves the connection in an unknown state: replace it.
      const code = (err as PgLikeError).code;
      failed = !(typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !TRANSIENT_CLASSES.has(code.slice(0, 2)));
      throw classifyPgError(err);
    } finally {
      client.release(failed);
    }
  }

  private async writeStaged(plan: TablePlan, rows: Row[]): Promise<void> {
    const cols = this.sourceColumns(plan);
    const data = copyBinary(
      rows,
      cols.map(() => 'text'),
      this.copyBuffers.take(),
    );
    const client = await this.checkout();
    // A connection whose ROLLBACK fails is gone: destroy it rather than return it to the pool.
    let destroy = false;
    try {
      this.statements++;
      await client.query('BEGIN');
      if (!this.staged.has(client)) {
        // Per connection, once: a temp table is private to its session, unlogged, emptied
        // at each commit. All text: the INSERT below casts, so its errors are the target's.
        this.statements++;
        await client.query(`CREATE TEMP TABLE IF NOT EXISTS sluice_staging (${cols.map((c) => `${c} text`).join(', ')}) ON COMMIT DELETE ROWS`);
        this.staged.add(client);
      }
      this.statements++;
      await streamPipeline(Readable.from([data]), client.query(copyFrom(`COPY pg_temp.sluice_staging (${cols.join(', ')}) FROM STDIN (FORMAT binary)`)));
      this.copyBuffers.give(data);
      // One simple-protocol message, one round-trip: the INSERT then the COMMIT. If the
      // INSERT fails the server skips the COMMIT and the transaction is left aborted.
      this.statements++;
      await client.query(`${plan.insertHead}pg_temp.sluice_staging s${plan.conflictTail}; COMMIT`);
      this.commits++;
    } catch (err) {
      // A staging table created in this transaction is rolled back with it.
      this.staged.delete(client);
      try {
        this.statements++;
        await client.query('ROLLBACK');
        this.rollbacks++;
      } catch {
        destroy = true;
      }
      throw classifyPgError(err);
    } finally {
      client.release(destroy);
    }
  }

  private async writeInsert(plan: TablePlan, rows: Row[]): Promise<void> {
    const cols = this.sourceColumns(plan);
    const arrays: (string | null)[][] = cols.map(() => new Array<string | null>(rows.length));
    for (let i = 0; i < rows.length; i++) for (let j = 0; j < cols.length; j++) arrays[j][i] = textOf(rows[i][j]);
    const src = `unnest(${cols.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS s(${cols.join(', ')})`;
    await this.autocommit(`sluice_ins_${cols.length}`, plan.insertHead + src + plan.conflictTail, arrays);
  }

  private async writeJson(plan: TablePlan, rows: Row[]): Promise<void> {
    // [[id, doc, m0, …], …]: each document inline as received, the server parses it once.
    let text = '[';
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      text += (i > 0 ? ',[' : '[') + JSON.stringify(r[0]) + ',' + textOf(r[1]);
      for (let j = 2; j < r.length; j++) text += ',' + JSON.stringify(r[j]);
      text += ']';
    }
    text += ']';
    const cols = this.sourceColumns(plan);
    const exprs = cols.map((c, i) => (c === 'doc' ? `(e->${i})::text AS doc` : `e->>${i} AS ${c}`));
    const src = `(SELECT ${exprs.join(', ')} FROM json_array_elements($1::json) e) s`;
    await this.autocommit(`sluice_json_${cols.length}`, plan.insertHead + src + plan.conflictTail, [text]);
  }

  /** One prepared statement in autocommit: the statement is its own transaction, its success one commit. */
  private async autocommit(name: string, text: string, values: unknown[]): Promise<void> {
    this.statements++;
    try {
      await this.pool.query({ name: `${name}_${this.table.replace(/\./g, '_')}`.slice(0, 63), text, values });
    } catch (err) {
      throw classifyPgError(err);
    }
    this.commits++;
  }

  /**
   * The single-record statement the idempotent paths amount to, for trial inserts (dlq
   * redrive's revalidation): `$1` id, `$2` document, `$3…` mapped values, all text.
   */
  async rowStatement(): Promise<{ text: string; values(env: Envelope<unknown>): (string | null)[] }> {
    await this.open();
    const plan = this.plan!;
    const cols = this.sourceColumns(plan);
    const src = `(SELECT ${cols.map((c, i) => `$${i + 1}::text AS ${c}`).join(', ')}) s`;
    return {
      text: plan.insertHead + src + (plan.idUnique ? plan.conflictTail : ''),
      values: (env) => {
        const [r] = this.fields(plan, [env]);
        return r.map(textOf);
      },
    };
  }

  /** A pooled connection, or a classified SinkError. */
  private async checkout(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (err) {
      throw classifyPgError(err);
    }
  }

  fixedCostOps(): number {
    return this.commits;
  }

  /** Batches sent through each path (attempts; `copy` mode's conflict fallback counts under both). */
  writesByPath(): { copy: number; staged: number; insert: number; json: number; append: number } {
    return { ...this.paths };
  }

  /** `copy` mode: batches whose COPY met a stored id and went through `staged`. */
  conflictCount(): number {
    return this.conflicts;
  }

  /** Transactions rolled back after a failed batch (staged path; autocommit failures roll back server-side). */
  rollbackCount(): number {
    return this.rollbacks;
  }

  /** Statements (round-trips) sent, including failed ones and the staged path's BEGIN/COPY. */
  statementCount(): number {
    return this.statements;
  }

  /**
   * Asks the server for a CHECKPOINT (superuser or the pg_checkpoint role): the lab starts
   * each run from one, so no run pays for flushing the pages an earlier run dirtied.
   * Answers false when the server refuses.
   */
  async checkpoint(): Promise<boolean> {
    await this.open();
    try {
      await this.pool.query('CHECKPOINT');
      return true;
    } catch {
      return false;
    }
  }

  async countRows(): Promise<number> {
    await this.open();
    const r = await this.pool.query<{ n: string }>(`SELECT count(*)::bigint AS n FROM ${this.qtable}`);
    return Number(r.rows[0].n);
  }

  /**
   * Which of `ids` the table holds: the optional `storedIds` capability the Elasticsearch
   * `_bulk` door uses to answer 409 to a `create` of an id already stored (docs/serve.md).
   * A transient failure throws a classified SinkError.
   */
  async storedIds(ids: readonly string[]): Promise<ReadonlySet<string>> {
    if (ids.length === 0) return new Set();
    try {
      await this.open();
      const r = await this.pool.query<{ id: string }>(`SELECT ${qi(this.idColumnName)}::text AS id FROM ${this.qtable} WHERE ${qi(this.idColumnName)}::text = ANY($1::text[])`, [ids]);
      return new Set(r.rows.map((x) => x.id));
    } catch (err) {
      throw classifyPgError(err);
    }
  }

  /** Every stored id, as text (reconciliation: compare with what the pipeline says it committed). */
  async ids(): Promise<string[]> {
    await this.open();
    const r = await this.pool.query<{ id: string }>(`SELECT ${qi(this.idColumnName)}::text AS id FROM ${this.qtable} ORDER BY 1`);
    return r.rows.map((x) => x.id);
  }

  /** Empties the table (the lab's reset between runs). */
  async truncate(): Promise<void> {
    await this.open();
    await this.pool.query(`TRUNCATE ${this.qtable}`);
  }

  async dropTable(): Promise<void> {
    await this.pool.query(`DROP TABLE IF EXISTS ${this.qtable}`);
  }

  /** Ends the pool. Idempotent. Does not drop the table. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
