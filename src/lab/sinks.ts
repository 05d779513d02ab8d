/**
 * The sinks the lab runs against: the embedded durable file log by default, PostgreSQL
 * when asked (`--sink postgres`, `--database-url` / DATABASE_URL). Each comes with an
 * independent count of what is really stored, so experiments can check the pipeline's
 * `committed` against the sink's own contents.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Sink } from '../core/types.js';
import { FileSink } from '../sinks/file.js';
import { PostgresSink } from '../sinks/postgres.js';
import { invalidOption } from '../core/errors.js';
import type { EventRecord } from '../sources/records.js';
import type { ExperimentContext } from './types.js';
import { ReplaySink, type WriteTrace } from './replay-sink.js';
import type { CostModel } from '../core/window-chooser.js';

export interface LabSink {
  sink: Sink<EventRecord>;
  /** e.g. "file (fdatasync per batch) /tmp/…/batched.ndjson" */
  describe: string;
  /** Records really stored (lines on disk, rows in the table). */
  countStored(): Promise<number>;
  /** Removes what the sink stored (file, table) so the next run starts empty. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export async function openLabSink(ctx: ExperimentContext, label: string): Promise<LabSink> {
  if (ctx.sink === 'postgres') return openPostgresLabSink(ctx, label);
  const path = join(ctx.workDir, `${label}.ndjson`);
  await rm(path, { force: true });
  let sink = await new FileSink<EventRecord>({ path }).open();
  const lab: LabSink = {
    sink,
    describe: `file (write + fdatasync per batch) ${path}`,
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
  const sink = new PostgresSink({ connectionString: url, table });
  try {
    await sink.open();
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
