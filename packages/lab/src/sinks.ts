/**
 * The sinks the lab runs against: the embedded durable file log by default, PostgreSQL
 * when asked (`--sink postgres`, `--database-url` / DATABASE_URL). Each comes with an
 * independent count of what is really stored, so experiments can check the pipeline's
 * `committed` against the sink's own contents.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Sink } from 'sluice';
import { FileSink } from 'sluice';
import pg from 'pg';
import { PostgresSink, type PostgresSinkOptions } from 'sluice';
import { invalidOption } from 'sluice';
import type { EventRecord } from './records/records.js';
import type { ExperimentContext } from './types.js';
import { ReplaySink, type WriteTrace } from './replay-sink.js';
import type { CostModel } from 'sluice';

export interface LabSink {
  sink: Sink<EventRecord>;
  /** e.g. "file (one O_DSYNC write per batch) /tmp/…/batched.ndjson" */
  describe: string;
  /** Records really stored (lines on disk, rows in the table). */
  countStored(): Promise<number>;
  /** Removes what the sink stored (file, table) so the next run starts empty. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The lab's table for EventRecord, created by the lab as any user creates theirs: the CHECK
 * and length constraints are what the poison and redrive experiments find their poison with
 * (a negative amount → 23514, a kind over 32 characters → 22001, "12.50 EUR" → 22P02).
 */
export function eventTableDdl(table: string): string {
  const q = table
    .split('.')
    .map((p) => `"${p}"`)
    .join('.');
  return `CREATE TABLE IF NOT EXISTS ${q} (
    id text PRIMARY KEY,
    ts bigint NOT NULL,
    source text NOT NULL,
    kind varchar(32) NOT NULL,
    amount numeric(12,2) NOT NULL CHECK (amount >= 0),
    note varchar(200),
    payload jsonb NOT NULL
  )`;
}

/** The column mapping the lab passes PostgresSink for its EventRecord table (no document column). */
export const EVENT_TABLE_MAPPING = Object.freeze({
  docColumn: null,
  columns: Object.freeze({ ts: 'ts', source: 'source', kind: 'kind', amount: 'amount', note: 'note', payload: 'payload' }),
}) satisfies Partial<PostgresSinkOptions>;

/** Creates the lab's EventRecord table if missing and opens a PostgresSink on it with the lab's mapping. */
export async function openEventTableSink(opts: Omit<PostgresSinkOptions, 'columns' | 'docColumn'>): Promise<PostgresSink> {
  const c = new pg.Client({ connectionString: opts.connectionString, connectionTimeoutMillis: opts.connectTimeoutMs ?? 3_000 });
  try {
    await c.connect();
    await c.query(eventTableDdl(opts.table));
  } catch {
    // Unreachable server, or two runs racing on the catalog (23505/42P07, the table exists):
    // the sink's open() below says which, with the endpoint and a stable code.
  } finally {
    await c.end().catch(() => {});
  }
  const sink = new PostgresSink({ ...opts, docColumn: EVENT_TABLE_MAPPING.docColumn, columns: { ...EVENT_TABLE_MAPPING.columns } });
  try {
    return await sink.open();
  } catch (e) {
    await sink.close();
    throw e;
  }
}

export async function openLabSink(ctx: ExperimentContext, label: string): Promise<LabSink> {
  if (ctx.sink === 'postgres') return openPostgresLabSink(ctx, label);
  const path = join(ctx.workDir, `${label}.ndjson`);
  await rm(path, { force: true });
  let sink = await new FileSink<EventRecord>({ path }).open();
  const lab: LabSink = {
    sink,
    describe: `file (one O_DSYNC write per batch) ${path}`,
    countStored: async () => countLines(path),
    reset: async () => {
      await sink.close();
      await rm(path, { force: true });
      sink = await new FileSink<EventRecord>({ path }).open();
      lab.sink = sink;
    },
    close: async () => {
      await sink.close();
    },
  };
  return lab;
}

async function countLines(path: string): Promise<number> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch {
    return 0;
  }
  let n = 0;
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

async function openPostgresLabSink(ctx: ExperimentContext, label: string): Promise<LabSink> {
  const url = ctx.databaseUrl ?? process.env.DATABASE_URL;
  if (!url) throw invalidOption('--database-url', undefined, 'a postgres:// URL (or DATABASE_URL) with --sink postgres');
  const table = `sluice_lab_${label.replace(/[^A-Za-z0-9_]/g, '_')}`.slice(0, 63);
  const sink = await openEventTableSink({ connectionString: url, table });
  try {
    // Start empty: a previous run that was killed may have left its table behind.
    await sink.truncate();
  } catch (e) {
    await sink.close();
    throw e;
  }
  return {
    sink,
    describe: `postgres (${sink.mode} mode, one commit per batch) ${sink.endpoint} table ${table}`,
    countStored: () => sink.countRows(),
    reset: async () => {
      await sink.truncate();
      // Each run starts from a checkpoint: the previous run's dirty pages are flushed now,
      // not by a spread checkpoint competing with this run's commits for the disk.
      await sink.checkpoint();
    },
    close: async () => {
      try {
        await sink.dropTable();
      } finally {
        await sink.close();
      }
    },
  };
}

/** The replay sink (src/lab/replay-sink.ts) as a LabSink: "stored" is what its writes returned for. */
export function replayLabSink(trace: WriteTrace, cost: CostModel, seed: number): LabSink {
  let sink = new ReplaySink<EventRecord>(trace, cost, seed);
  const lab: LabSink = {
    sink,
    describe: `replay of the real sink's measured writes (${trace.atMs.length} writes over ${Math.round(trace.durationMs)} ms: median ${trace.medianMs} ms, p99 ${trace.p99Ms} ms, max ${trace.maxMs} ms, ${trace.stalls} stalls) + ${Math.round(cost.perItemMs * 1e6) / 1000} µs per extra item, seed ${seed}`,
    countStored: async () => sink.storedCount(),
    reset: async () => {
      // Each run replays the trace from the same seeded offset: variants see the same stalls.
      sink = new ReplaySink<EventRecord>(trace, cost, seed);
      lab.sink = sink;
    },
    close: async () => {},
  };
  return lab;
}
