/**
 * The PostgreSQL sink: one transaction and one commit per batch, into a table the sink
 * creates if missing. The fixed cost is the commit (a WAL flush on the server plus the
 * round-trips around it): a single-row batch through this sink measured ≈0.5 ms here (the
 * lab's calibration, quiet machine), so an unbatched pipeline tops out near 2k items/s.
 *
 * Write paths idempotent on `id` (`ON CONFLICT (id) DO NOTHING`), so a batch redelivered
 * after a lost acknowledgement neither fails nor duplicates (all but `append`):
 * - `insert`: one `INSERT … SELECT … FROM unnest($1::text[], …)` statement in autocommit
 *   (one statement = one round-trip = one commit). Arrays, not a VALUES list, so a batch of
 *   any size is 7 parameters and one cached prepared statement.
 * - `copy`: `BEGIN`; `COPY` into a per-connection temporary staging table
 *   (pg-copy-streams); `INSERT … SELECT … ON CONFLICT DO NOTHING; COMMIT`. COPY cannot skip
 *   conflicts itself, hence the staging table.
 * - `json`: one `INSERT … SELECT … FROM json_populate_recordset(NULL::table, $1::json)` in
 *   autocommit, `$1` being the batch as one JSON array made of each item's `raw` bytes (the
 *   record as the producer serialized it, as the file sink writes it) or its JSON. The
 *   server parses each record once; Node only joins strings.
 * - `auto`: `insert` below `copyMinRows` rows, `copy` from it.
 * - `append`: `COPY` straight into the table, in autocommit: the cheapest path for the
 *   server, and the only one that is *not* idempotent: a redelivered batch fails with 23505
 *   (unique violation), an item-level error. For tables fed exactly once.
 * `json` is the default (see POSTGRES_DEFAULT_MODE).
 *
 * Constraints are real (the poison-isolation issue relies on them): a bad record makes
 * PostgreSQL reject the whole statement, and `write()` throws an item-level SinkError
 * carrying the SQLSTATE; splitting the batch to find the record is a decorator's job.
 */
import { Readable } from 'node:stream';
import { pipeline as streamPipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { ErrorCode, SinkError, SluiceError, invalidOption } from '../core/errors.js';
type EventRecord = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export type PostgresWriteMode = 'insert' | 'copy' | 'json' | 'append' | 'auto';
export const POSTGRES_WRITE_MODES: readonly PostgresWriteMode[] = ['insert', 'copy', 'json', 'append', 'auto'];

/**
 * Measured (bench/postgres-modes.ts; figures in docs/sinks.md): alone on the machine, `json`
 * is as fast as `insert` up to a few hundred rows and `copy` is fastest from about 1,000
 * (its text format parses fastest on the server); but `json` costs Node 2–5 µs of CPU per row
 * against 8–14 µs for the other two, and in a pipeline Node's CPU is shared with the
 * producer: at 15k rows/s on 2 loaded cores `json` kept p50 at ≈22 ms where `copy` and `auto`
 * fell behind (50–550 ms). Hence `json` is the default.
 */
export const POSTGRES_DEFAULT_MODE: PostgresWriteMode = 'json';

/** Every default of PostgresSinkOptions, in one place. */
export const POSTGRES_DEFAULTS = Object.freeze({
  mode: POSTGRES_DEFAULT_MODE,
  /** `auto`: batches of at least this many rows go through COPY (measured crossover ≈500 rows). */
  copyMinRows: 512,
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
  /** Target table, `name` or `schema.name` (letters, digits, `_`). Created if missing. */
  table: string;
  /** How a batch is written. @default POSTGRES_DEFAULT_MODE ('json') */
  mode?: PostgresWriteMode;
  /** `auto` mode: batches of at least this many rows are written with COPY, smaller ones with INSERT. @default 512 */
  copyMinRows?: number;
  /** Connections in the pool; one batch uses one connection. Size it to `maxInFlight`. @default 4 */
  maxConnections?: number;
  /** How long `open()` (and a pool checkout) waits for a connection before giving up. @default 3_000 */
  connectTimeoutMs?: number;
  /** Server-side statement timeout; a batch that hangs fails transient (57014). @default 30_000 */
  statementTimeoutMs?: number;
  /** Columns filled from record fields. */
  columns?: Record<string, string>;
}

const COLUMNS = ['id', 'ts', 'source', 'kind', 'amount', 'note', 'payload'] as const;

/** Transient SQLSTATE classes: connection (08), rollback/serialization (40), resources (53), operator intervention (57). */
const TRANSIENT_CLASSES = new Set(['08', '40', '53', '57']);
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

/** Quotes `name` or `schema.name` after checking it is a plain identifier (no injection through options). */
function quoteTable(table: unknown): string {
  if (typeof table !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table))
    throw invalidOption('table', table, 'a table name: letters, digits and _ (optionally schema.table), at most 63 characters each');
  return table
    .split('.')
    .map((p) => `"${p}"`)
    .join('.');
}

/** Host and port of a URL for error messages (never the password). */
function endpointOf(connectionString: string): string {
  try {
    const u = new URL(connectionString);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** COPY text format: backslash, tab, newline and carriage return escaped; `\N` is NULL. */
function copyField(v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[\\\t\n\r]/.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : s;
}

/** A batch in COPY text format, one line per record, the columns in COLUMNS order (bench case 3's raw COPY uses it too). */
export function copyText(batch: readonly Envelope<EventRecord>[]): Buffer {
  let text = '';
  for (let i = 0; i < batch.length; i++) {
    const v = batch[i].value;
    text +=
      copyField(v.id ?? batch[i].id) + '\t' + copyField(v.ts) + '\t' + copyField(v.source) + '\t' + copyField(v.kind) + '\t' +
      copyField(v.amount) + '\t' + copyField(v.note) + '\t' +
      // Always JSON-encoded, as the INSERT path does: a string payload is a JSON string on every path.
      copyField(v.payload === undefined || v.payload === null ? null : JSON.stringify(v.payload)) + '\n';
  }
  return Buffer.from(text);
}

export class PostgresSink implements Sink<EventRecord> {
  readonly name = 'postgres';
  readonly fixedCostKind: FixedCostKind = 'commit';
  readonly mode: PostgresWriteMode;
  readonly table: string;
  readonly endpoint: string;
  private readonly qtable: string;
  private readonly pool: pg.Pool;
  private readonly insertSql: string;
  private readonly insertName: string;
  private readonly jsonSql: string;
  private readonly jsonName: string;
  private readonly connectTimeoutMs: number;
  private readonly copyMinRows: number;
  private readonly paths = { insert: 0, copy: 0, json: 0, append: 0 };
  /** Connections that already hold this sink's temporary staging table (copy mode). */
  private readonly staged = new WeakSet<pg.PoolClient>();
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
    this.copyMinRows = opts.copyMinRows ?? POSTGRES_DEFAULTS.copyMinRows;
    if (!Number.isInteger(this.copyMinRows) || this.copyMinRows < 1) throw invalidOption('copyMinRows', opts.copyMinRows, 'an integer ≥ 1');
    const maxConnections = opts.maxConnections ?? POSTGRES_DEFAULTS.maxConnections;
    if (!Number.isInteger(maxConnections) || maxConnections < 1) throw invalidOption('maxConnections', opts.maxConnections, 'an integer ≥ 1');
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
    // Mode-specific SQL, built once. The column list and casts are the table's contract.
    this.insertName = `sluice_ins_${this.table.replace(/\./g, '_')}`.slice(0, 63);
    this.insertSql =
      `INSERT INTO ${this.qtable} (${COLUMNS.join(', ')}) ` +
      `SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::jsonb[]) ` +
      `ON CONFLICT (id) DO NOTHING`;
    this.jsonName = `sluice_json_${this.table.replace(/\./g, '_')}`.slice(0, 63);
    this.jsonSql =
      `INSERT INTO ${this.qtable} (${COLUMNS.join(', ')}) ` +
      `SELECT ${COLUMNS.join(', ')} FROM json_populate_recordset(NULL::${this.qtable}, $1::json) ` +
      `ON CONFLICT (id) DO NOTHING`;
  }

  /**
   * Connects eagerly (bounded by `connectTimeoutMs`) and creates the table if missing, so
   * an unreachable database fails at start-up with one SLUICE_SINK_UNAVAILABLE naming the
   * host and port, not at the first batch. Idempotent; `write()` calls it too.
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
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${this.qtable} (
          id text PRIMARY KEY,
          ts bigint NOT NULL,
          source text NOT NULL,
          kind varchar(32) NOT NULL,
          amount numeric(12,2) NOT NULL CHECK (amount >= 0),
          note varchar(200),
          payload jsonb NOT NULL
        )`,
      );
    } catch (cause) {
      // Two sinks creating the same table at once race on the catalog: the loser sees
      // 23505/42P07 although the table now exists, which is what we wanted.
      const code = (cause as PgLikeError).code;
      if (code !== '23505' && code !== '42P07') {
        client.release(true);
        throw new SluiceError(ErrorCode.SinkUnavailable, `postgres sink: cannot create table ${this.table} on ${this.endpoint}: ${(cause as Error).message}`, {
          cause,
          details: { endpoint: this.endpoint, sinkCode: code },
        });
      }
    }
    client.release();
  }

  async write(batch: readonly Envelope<EventRecord>[]): Promise<void> {
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
    const path = this.mode === 'auto' ? (batch.length >= this.copyMinRows ? 'copy' : 'insert') : this.mode;
    this.paths[path]++;
    if (path === 'insert') await this.writeInsert(batch);
    else if (path === 'json') await this.writeJson(batch);
    else if (path === 'append') await this.writeAppend(batch);
    else await this.writeCopy(batch);
  }

  private async writeJson(batch: readonly Envelope<EventRecord>[]): Promise<void> {
    let text = '[';
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i];
      if (i > 0) text += ',';
      // The envelope's id stands in for a record without one, as on the other paths.
      if ((e.value.id === undefined || e.value.id === null) && e.id !== undefined) text += JSON.stringify({ ...e.value, id: e.id });
      else text += e.raw ? e.raw.toString('utf8') : JSON.stringify(e.value);
    }
    text += ']';
    this.statements++;
    try {
      await this.pool.query({ name: this.jsonName, text: this.jsonSql, values: [text] });
    } catch (err) {
      throw classifyPgError(err);
    }
    this.commits++;
  }

  private async writeInsert(batch: readonly Envelope<EventRecord>[]): Promise<void> {
    const n = batch.length;
    const id: unknown[] = new Array(n), ts: unknown[] = new Array(n), source: unknown[] = new Array(n), kind: unknown[] = new Array(n);
    const amount: unknown[] = new Array(n), note: unknown[] = new Array(n), payload: unknown[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const v = batch[i].value;
      id[i] = v.id ?? batch[i].id;
      ts[i] = v.ts;
      source[i] = v.source;
      kind[i] = v.kind;
      amount[i] = v.amount;
      note[i] = v.note;
      payload[i] = v.payload === undefined || v.payload === null ? null : JSON.stringify(v.payload);
    }
    this.statements++;
    try {
      // Autocommit: the statement is its own transaction, so its success is one commit.
      await this.pool.query({ name: this.insertName, text: this.insertSql, values: [id, ts, source, kind, amount, note, payload] });
    } catch (err) {
      throw classifyPgError(err);
    }
    this.commits++;
  }

  private async writeCopy(batch: readonly Envelope<EventRecord>[]): Promise<void> {
    const client = await this.checkout();
    // A connection whose ROLLBACK fails is gone: destroy it rather than return it to the pool.
    let destroy = false;
    try {
      this.statements++;
      await client.query('BEGIN');
      if (!this.staged.has(client)) {
        // Per connection, once: a temp table is private to its session. No constraints
        // (LIKE copies only NOT NULL), so the INSERT below is where CHECK and PK apply.
        this.statements++;
        await client.query(`CREATE TEMP TABLE IF NOT EXISTS sluice_staging (LIKE ${this.qtable}) ON COMMIT DELETE ROWS`);
        this.staged.add(client);
      }
      this.statements++;
      await streamPipeline(Readable.from([copyText(batch)]), client.query(copyFrom(`COPY sluice_staging (${COLUMNS.join(', ')}) FROM STDIN`)));
      // One simple-protocol message, one round-trip: the INSERT then the COMMIT. If the
      // INSERT fails the server skips the COMMIT and the transaction is left aborted.
      this.statements++;
      await client.query(`INSERT INTO ${this.qtable} SELECT * FROM sluice_staging ON CONFLICT (id) DO NOTHING; COMMIT`);
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

  /** A pooled connection, or a classified SinkError. */
  private async checkout(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (err) {
      throw classifyPgError(err);
    }
  }

  private async writeAppend(batch: readonly Envelope<EventRecord>[]): Promise<void> {
    const client = await this.checkout();
    let failed = false;
    try {
      this.statements++;
      // Autocommit: the COPY is its own transaction, committed when the server answers it.
      await streamPipeline(Readable.from([copyText(batch)]), client.query(copyFrom(`COPY ${this.qtable} (${COLUMNS.join(', ')}) FROM STDIN`)));
      this.commits++;
    } catch (err) {
      failed = true;
      throw classifyPgError(err);
    } finally {
      // A connection whose COPY failed midway is not worth reasoning about: replace it.
      client.release(failed);
    }
  }

  fixedCostOps(): number {
    return this.commits;
  }

  /** Batches sent through each path (attempts; `auto` mode picks per batch). */
  writesByPath(): { insert: number; copy: number; json: number; append: number } {
    return { ...this.paths };
  }

  /** Transactions rolled back after a failed batch (copy mode; autocommit failures roll back server-side). */
  rollbackCount(): number {
    return this.rollbacks;
  }

  /** Statements (round-trips) sent, including failed ones and copy mode's BEGIN/COPY. */
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

  /** Every stored id (reconciliation: compare with what the pipeline says it committed). */
  async ids(): Promise<string[]> {
    await this.open();
    const r = await this.pool.query<{ id: string }>(`SELECT id FROM ${this.qtable} ORDER BY id`);
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
