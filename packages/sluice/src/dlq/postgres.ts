/**
 * Dead letters in a PostgreSQL table (created if missing). One INSERT per batch of letters,
 * in autocommit: when it returns, the rows are committed (and durable with the server's
 * default synchronous_commit). `seq` keeps arrival order; an entry may appear again for
 * the same id after a failed re-drive, with its attempts incremented.
 */
import pg from 'pg';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';
import { parseEntry, type DeadLetterEntry, type DeadLetterStore } from './store.js';
import { CONCURRENT_CREATE } from '../sinks/postgres.js';

function quote(table: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/.test(table))
    throw invalidOption('dlq table', table, 'letters, digits and _ (optionally schema.table)');
  return table
    .split('.')
    .map((p) => `"${p}"`)
    .join('.');
}

export class PostgresDeadLetterStore implements DeadLetterStore {
  readonly describe: string;
  private readonly pool: pg.Pool;
  private readonly q: string;
  private ready: Promise<void> | null = null;

  constructor(connectionString: string, readonly table = 'sluice_dead_letters') {
    this.q = quote(table);
    this.describe = `postgres:${table}`;
    this.pool = new pg.Pool({ connectionString, max: 2, connectionTimeoutMillis: 3_000 });
    this.pool.on('error', () => {});
  }

  open(): Promise<void> {
    if (!this.ready) {
      this.ready = this.pool
        .query(
          `CREATE TABLE IF NOT EXISTS ${this.q} (
            seq bigserial PRIMARY KEY, id text NOT NULL, source text NOT NULL, "offset" bigint,
            pipeline text NOT NULL, sink text NOT NULL, error_class text NOT NULL, code text NOT NULL,
            sink_code text, message text NOT NULL, attempts int NOT NULL,
            first_failure_at timestamptz NOT NULL, dead_lettered_at timestamptz NOT NULL, data bytea NOT NULL)`,
        )
        .then(
          () => undefined,
          (cause) => {
            this.ready = null;
            const code = (cause as { code?: string }).code;
            if (CONCURRENT_CREATE.has(code ?? '')) return; // concurrent create: the table exists
            throw new SluiceError(ErrorCode.SinkUnavailable, `dead-letter table ${this.table}: ${(cause as Error).message}`, { cause, retryable: true });
          },
        );
    }
    return this.ready;
  }

  async append(entries: readonly DeadLetterEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.open();
    const col = <K extends keyof DeadLetterEntry>(k: K) => entries.map((e) => e[k]);
    await this.pool.query(
      `INSERT INTO ${this.q} (id, source, "offset", pipeline, sink, error_class, code, sink_code, message, attempts, first_failure_at, dead_lettered_at, data)
       SELECT id, source, off, pipeline, sink, cls, code, sc, msg, att, ff, dl, decode(b64, 'base64')
       FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::int[], $11::timestamptz[], $12::timestamptz[], $13::text[])
         AS t(id, source, off, pipeline, sink, cls, code, sc, msg, att, ff, dl, b64)`,
      [
        col('id'), col('source'), col('offset'), col('pipeline'), col('sink'), col('errorClass'), col('code'), col('sinkCode'),
        col('message'), col('attempts'), col('firstFailureAt'), col('deadLetteredAt'), col('data'),
      ],
    );
  }

  async list(): Promise<DeadLetterEntry[]> {
    await this.open();
    const r = await this.pool.query(
      `SELECT id, source, "offset", pipeline, sink, error_class, code, sink_code, message, attempts, first_failure_at, dead_lettered_at, encode(data, 'base64') AS data FROM ${this.q} ORDER BY seq`,
    );
    return r.rows.map((x, i) =>
      parseEntry(
        {
          v: 1, id: x.id, source: x.source, offset: x.offset === null ? null : Number(x.offset), pipeline: x.pipeline, sink: x.sink,
          errorClass: x.error_class, code: x.code, sinkCode: x.sink_code, message: x.message, attempts: x.attempts,
          firstFailureAt: new Date(x.first_failure_at).toISOString(), deadLetteredAt: new Date(x.dead_lettered_at).toISOString(),
          data: String(x.data).replace(/\n/g, ''),
        },
        `${this.table} row ${i + 1}`,
      ),
    );
  }

  async count(): Promise<number> {
    await this.open();
    const r = await this.pool.query<{ n: string }>(`SELECT count(*)::bigint AS n FROM ${this.q}`);
    return Number(r.rows[0].n);
  }

  async dropTable(): Promise<void> {
    await this.pool.query(`DROP TABLE IF EXISTS ${this.q}`);
    this.ready = null;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
