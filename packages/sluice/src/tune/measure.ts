/**
 * What `sluice tune` measures on the user's sink, with the user's records:
 *   - the sink, opened on a scratch file or table that tune creates and removes (`openScratch`);
 *   - the cost model: direct writes of batches of several sizes (and, when the records differ
 *     enough in size, of small and large records), fitted to fixed + per item + per byte;
 *   - paced runs: an open-loop Poisson load through the product's Pipeline at a rate and a
 *     window, latency from each item's intended arrival to its commit (`pacedRun`).
 * Every write is timed: a write longer than the SLO is a *stall* (no window can hide it).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { IntervalHistogram } from '../core/controller.js';
import { invalidOption } from '../core/errors.js';
import { Pipeline } from '../core/pipeline.js';
import { seededRng } from '../core/random.js';
import { envelope, type Envelope, type FlushInfo, type PipelineObserver, type Sink } from '../core/types.js';
import { FileSink } from '../sinks/file.js';
import { PostgresSink, type PostgresWriteMode } from '../sinks/postgres.js';
import { poissonArrivals, runOpenLoop } from '../sources/load.js';

// ------------------------------------------------------------------ records

export interface RecordShape {
  /** e.g. `sample events.ndjson (1000 records, 180–420 B, mean 260 B)`. */
  describe: string;
  meanBytes: number;
  /** Record `i` of a run (cycled from the sample), with an id unique to this tune session. */
  make(i: number, intendedAtMs?: number): Envelope<unknown>;
  /** Record lines sorted by size (the per-byte fit writes the small and the large ones). */
  bySize: { raw: Buffer; value: unknown }[];
}

/** Lines read from a sample at most (the sample is cycled). */
export const SAMPLE_MAX_LINES = 20_000;

function shape(describe: string, lines: { raw: Buffer; value: unknown }[]): RecordShape {
  const tag = randomBytes(4).toString('hex');
  const mean = lines.reduce((s, l) => s + l.raw.length, 0) / lines.length;
  let next = 0;
  return {
    describe,
    meanBytes: mean,
    bySize: [...lines].sort((a, b) => a.raw.length - b.raw.length),
    make(i, intendedAtMs) {
      const l = lines[i % lines.length];
      // Ids unique to the session: the sample's own ids would collide when it is cycled, and
      // an idempotent sink would skip the repeats (measuring a write that never happens).
      return envelope(l.value, { raw: l.raw, id: `tune-${tag}-${next++}`, intendedAtMs });
    },
  };
}

/** The user's record shape: an NDJSON sample (any JSON values, one per line). */
export function sampleRecords(path: string): RecordShape {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw invalidOption('--record-sample', path, `a readable NDJSON file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const lines: { raw: Buffer; value: unknown }[] = [];
  let n = 0;
  for (const line of text.split('\n')) {
    n++;
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw invalidOption('--record-sample', path, `one JSON value per line (line ${n} is not JSON)`);
    }
    lines.push({ raw: Buffer.from(line), value });
    if (lines.length >= SAMPLE_MAX_LINES) break;
  }
  if (lines.length === 0) throw invalidOption('--record-sample', path, 'an NDJSON file with at least one record');
  const sizes = lines.map((l) => l.raw.length);
  const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
  return shape(`sample ${basename(path)} (${lines.length} records, ${Math.min(...sizes)}–${Math.max(...sizes)} B, mean ${Math.round(mean)} B)`, lines);
}

/** Generated records of about `bytes` bytes each (when the user has no sample). */
export function generatedRecords(bytes: number): RecordShape {
  if (!(Number.isInteger(bytes) && bytes >= 32)) throw invalidOption('--record-bytes', bytes, 'an integer ≥ 32');
  const lines: { raw: Buffer; value: unknown }[] = [];
  // Sizes spread evenly over [0.5, 1.5] × bytes (mean `bytes`): the cost fit can then tell a
  // cost per byte from a cost per record.
  for (let i = 0; i < 64; i++) {
    const base = { seq: i, level: i % 7 === 0 ? 'warn' : 'info', msg: '' };
    const pad = Math.max(0, Math.round(bytes * (0.5 + i / 63)) - Buffer.byteLength(JSON.stringify(base)));
    const value = { ...base, msg: 'x'.repeat(pad) };
    lines.push({ raw: Buffer.from(JSON.stringify(value)), value });
  }
  return shape(`generated records of ${Math.round(bytes / 2)}–${Math.round(bytes * 1.5)} B (mean ${bytes} B)`, lines);
}

// ------------------------------------------------------------------ scratch sink

export interface SinkSpec {
  /** A file path, or a postgres:// URL. */
  sink: string;
  /** PostgreSQL: the user's table (its shape is copied into the scratch table). */
  table?: string;
  columns?: Record<string, string>;
  idColumn?: string;
  docColumn?: string | null;
  pgMode?: PostgresWriteMode;
}

export const isPg = (s: string) => /^postgres(ql)?:\/\//.test(s);

/** A write timed by a wrapper: every write's duration, for the cost fit and the stall count. */
export class TimedSink implements Sink<unknown> {
  readonly name: string;
  readonly fixedCostKind: Sink['fixedCostKind'];
  /** Write durations (ms) since the last `take()`. */
  private durations: number[] = [];
  constructor(private readonly inner: Sink<unknown>) {
    this.name = inner.name;
    this.fixedCostKind = inner.fixedCostKind;
  }
  async write(batch: readonly Envelope<unknown>[]): Promise<void> {
    const t0 = performance.now();
    await this.inner.write(batch);
    this.durations.push(performance.now() - t0);
  }
  fixedCostOps(): number {
    return this.inner.fixedCostOps();
  }
  take(): number[] {
    const d = this.durations;
    this.durations = [];
    return d;
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface Scratch {
  sink: TimedSink;
  /** What was written to, for the report: `file …` or `postgres table …`. */
  where: string;
  /** Closes the sink and removes the scratch file or table. Idempotent. */
  remove(): Promise<void>;
}

const qid = (s: string) => s.split('.').map((p) => `"${p.replace(/"/g, '""')}"`).join('.');

/**
 * Opens the user's sink on a scratch target: for a file, `<dir>/.<name>.sluice-tune-<rand>`
 * next to it (same file system, same fdatasync); for PostgreSQL, the table
 * `<table>_sluice_tune_<rand>` created LIKE the user's table when it exists (same columns,
 * types, defaults, constraints, indexes), else in the sink's default shape. Nothing else of
 * the user's is written.
 */
export async function openScratch(spec: SinkSpec): Promise<Scratch> {
  const tag = randomBytes(4).toString('hex');
  if (isPg(spec.sink)) {
    const table = spec.table ?? 'sluice_records';
    const bare = table.includes('.') ? table.slice(table.indexOf('.') + 1) : table;
    // ≤ 63 characters (PostgreSQL's identifier limit): the user's name is shortened, never the tag.
    const scratch = `${bare.slice(0, 63 - '_sluice_tune_'.length - tag.length)}_sluice_tune_${tag}`;
    const { default: pg } = await import('pg');
    const admin = new pg.Client({ connectionString: spec.sink });
    await admin.connect();
    let created = false;
    const remove = async () => {
      if (!created) return;
      created = false;
      await admin.query(`DROP TABLE IF EXISTS ${qid(scratch)}`).catch(() => {});
    };
    try {
      const exists = (await admin.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [qid(table)])).rows[0].t !== null;
      const schema = table.includes('.') ? `${table.split('.')[0]}.` : '';
      const scratchQ = qid(schema + scratch);
      if (exists) await admin.query(`CREATE TABLE ${scratchQ} (LIKE ${qid(table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)`);
      created = true;
      const sink = await new PostgresSink({
        connectionString: spec.sink,
        table: schema + scratch,
        columns: spec.columns,
        idColumn: spec.idColumn,
        docColumn: spec.docColumn,
        mode: spec.pgMode,
        maxConnections: 2,
      }).open();
      created = true;
      const timed = new TimedSink(sink as unknown as Sink<unknown>);
      let done = false;
      return {
        sink: timed,
        where: `postgres table ${schema + scratch} (${exists ? `LIKE ${table}` : 'default shape'}; dropped at the end)`,
        async remove() {
          if (done) return;
          done = true;
          await timed.close().catch(() => {});
          await admin.query(`DROP TABLE IF EXISTS ${scratchQ}`).catch(() => {});
          await admin.end().catch(() => {});
        },
      };
    } catch (e) {
      await remove();
      await admin.end().catch(() => {});
      throw e;
    }
  }
  const path = join(dirname(spec.sink), `.${basename(spec.sink)}.sluice-tune-${tag}`);
  // As `sluice run` opens it: idempotent by id (docs/dlq.md), so the id index is paid for too.
  const sink = await new FileSink<unknown>({ path, dedupeById: true }).open();
  const timed = new TimedSink(sink);
  let done = false;
  return {
    sink: timed,
    where: `file ${path} (removed at the end)`,
    async remove() {
      if (done) return;
      done = true;
      await timed.close().catch(() => {});
      await rm(path, { force: true });
      await rm(`${path}.ids`, { force: true });
    },
  };
}

// ------------------------------------------------------------------ cost model

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

export interface CostPoint {
  items: number;
  bytes: number;
  /** Median write time of the repetitions (ms). */
  medianMs: number;
  runs: number[];
}

export interface MeasuredCost {
  /** Cost of one write operation whatever it carries (ms). */
  fixedMs: number;
  /** Marginal cost per item, bytes apart (ms). */
  perItemMs: number;
  /** Marginal cost per byte (ms); null when the records did not differ enough in size to separate it from the per-item cost. */
  perByteMs: number | null;
  /** For the chooser: a single-record write, and each more record, at the mean record size (ms). */
  model: { fixedMs: number; perItemMs: number };
  points: CostPoint[];
  /** Every write of the measurement (ms), for the stall count. */
  writesMs: number[];
}

/** Least squares y = X·β (small dense normal equations, Gaussian elimination); null if singular. */
function lstsq(X: number[][], y: number[]): number[] | null {
  const k = X[0].length;
  const A = Array.from({ length: k }, () => new Array<number>(k + 1).fill(0));
  for (let r = 0; r < X.length; r++)
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) A[i][j] += X[r][i] * X[r][j];
      A[i][k] += X[r][i] * y[r];
    }
  for (let c = 0; c < k; c++) {
    let p = c;
    for (let r = c + 1; r < k; r++) if (Math.abs(A[r][c]) > Math.abs(A[p][c])) p = r;
    if (Math.abs(A[p][c]) < 1e-12 * Math.max(1, Math.abs(A[c][c]))) return null;
    [A[c], A[p]] = [A[p], A[c]];
    for (let r = 0; r < k; r++) {
      if (r === c) continue;
      const f = A[r][c] / A[c][c];
      for (let j = c; j <= k; j++) A[r][j] -= f * A[c][j];
    }
  }
  return A.map((row, i) => row[k] / row[i]);
}

/**
 * Writes batches of `sizes` items straight to the sink, `reps` times each, interleaved (every
 * size once per round, so a slow spell hits all sizes alike), with the smaller and the larger
 * records separately when they differ by ≥ 1.5× in mean size; fits the medians to
 * t = fixed + perItem·n + perByte·bytes (least squares; per byte dropped when not separable).
 */
export async function measureCost(sink: TimedSink, rec: RecordShape, sizes: readonly number[], reps: number, onStep?: () => void): Promise<MeasuredCost> {
  const third = Math.max(1, Math.floor(rec.bySize.length / 3));
  const small = rec.bySize.slice(0, third);
  const large = rec.bySize.slice(rec.bySize.length - third);
  const meanOf = (g: { raw: Buffer }[]) => g.reduce((s, l) => s + l.raw.length, 0) / g.length;
  const groups = meanOf(large) >= 1.5 * meanOf(small) ? [small, large] : [rec.bySize];
  const points = new Map<string, CostPoint>();
  const writesMs: number[] = [];
  let seq = 0;
  sink.take();
  for (let r = 0; r < reps; r++) {
    for (const g of groups)
      for (const n of sizes) {
        const batch = Array.from({ length: n }, (_, i) => {
          const l = g[(seq + i) % g.length];
          const e = rec.make(seq + i);
          e.value = l.value;
          e.raw = l.raw;
          e.bytes = l.raw.length;
          return e;
        });
        seq += n;
        const bytes = batch.reduce((s, e) => s + e.bytes, 0);
        await sink.write(batch);
        const ms = sink.take()[0];
        writesMs.push(ms);
        const key = `${n}/${g === large ? 'L' : 'S'}`;
        const p = points.get(key) ?? { items: n, bytes: 0, medianMs: 0, runs: [] };
        p.bytes = bytes;
        p.runs.push(ms);
        points.set(key, p);
        onStep?.();
      }
  }
  const pts = [...points.values()].map((p) => ({ ...p, medianMs: median(p.runs) }));
  let fit = groups.length > 1 ? lstsq(pts.map((p) => [1, p.items, p.bytes]), pts.map((p) => p.medianMs)) : null;
  let perByteMs: number | null = null;
  if (fit && fit[2] >= 0) perByteMs = fit[2];
  else fit = null;
  const fit2 = fit ?? lstsq(pts.map((p) => [1, p.items]), pts.map((p) => p.medianMs)) ?? [median(pts.map((p) => p.medianMs)), 0];
  const fixedMs = Math.max(0, fit2[0]);
  const perItemMs = Math.max(0, fit2[1]);
  const atMean = perItemMs + (perByteMs ?? 0) * rec.meanBytes;
  // The chooser's model: a single-record write, then each more record (at the mean size).
  return { fixedMs, perItemMs, perByteMs, model: { fixedMs: fixedMs + atMean, perItemMs: atMean }, points: pts, writesMs };
}

// ------------------------------------------------------------------ paced runs

export interface PacedRun {
  ratePerSec: number;
  maxItems: number;
  maxWaitMs: number;
  durationMs: number;
  /** p99 from intended arrival to commit (ms); Infinity when the load could not be offered or items were lost. */
  p99Ms: number;
  p50Ms: number;
  committed: number;
  offered: number;
  /** Items scheduled but never offered (the producer stalled) plus refused ones. */
  notOffered: number;
  /** Time the producer waited on a full queue (backpressure from the sink), ms. */
  blockedMs: number;
  /** Fixed-cost operations per committed item. */
  opsPerItem: number;
  batches: number;
  /** Median items per batch. */
  medianBatch: number;
  /** Share of cuts by size (or bytes). */
  sizeCutShare: number;
  /** accepted = committed + dropped + dead-lettered + in flight, after the drain. */
  balanced: boolean;
  /** Writes of this run longer than the SLO, and the longest write (ms). */
  stalls: number;
  writes: number;
  maxWriteMs: number;
}

/** A run is usable when it offered (nearly) all its load and lost nothing. */
export const MAX_NOT_OFFERED_SHARE = 0.01;

class RunObserver implements PipelineObserver<unknown> {
  readonly hist = new IntervalHistogram();
  committed = 0;
  sizeCuts = 0;
  cuts = 0;
  batchSizes: number[] = [];
  onFlush(info: FlushInfo): void {
    if (info.reason === 'drain') return;
    this.cuts++;
    if (info.reason === 'size' || info.reason === 'bytes') this.sizeCuts++;
    this.batchSizes.push(info.items);
  }
  onCommitted(batch: readonly Envelope<unknown>[], now: number): void {
    for (let i = 0; i < batch.length; i++) this.hist.recordMs(now - batch[i].intendedAtMs);
    this.committed += batch.length;
  }
}

let seedCounter = 1;

export async function pacedRun(
  sink: TimedSink,
  rec: RecordShape,
  o: { ratePerSec: number; durationMs: number; maxItems: number; maxWaitMs: number; sloMs: number },
  /** Every write's duration (ms) is appended here (the session's stall count). */
  collect?: number[],
): Promise<PacedRun> {
  const obs = new RunObserver();
  // Queue: room for a second of the load (at least 4 windows), so the window, not the queue, cuts.
  const qItems = Math.max(4 * o.maxItems, Math.ceil(o.ratePerSec), 10_000);
  const pipeline = new Pipeline<unknown>({
    sink,
    window: { maxItems: o.maxItems, maxWaitMs: o.maxWaitMs, maxBytes: 64 * 2 ** 20 },
    queue: { maxItems: qItems, maxBytes: Math.max(64 * 2 ** 20, Math.ceil(qItems * rec.meanBytes * 2)), policy: 'block', blockTimeoutMs: 5000 },
    observers: [obs],
    name: 'tune',
  });
  sink.take();
  const ops0 = sink.fixedCostOps();
  const load = await runOpenLoop({
    schedule: poissonArrivals(o.ratePerSec, seededRng(seedCounter++)),
    durationMs: o.durationMs,
    make: (i, t) => rec.make(i, t),
    target: pipeline,
  });
  await pipeline.close();
  const ledger = pipeline.stats().ledger;
  const writes = sink.take();
  if (collect) for (const w of writes) collect.push(w);
  const ops = sink.fixedCostOps() - ops0;
  const notOffered = load.notSent + load.rejected;
  const scheduled = load.offered + load.notSent;
  const usable = ledger.balanced && ledger.committed === ledger.accepted && notOffered <= MAX_NOT_OFFERED_SHARE * Math.max(1, scheduled);
  return {
    ratePerSec: o.ratePerSec,
    maxItems: o.maxItems,
    maxWaitMs: o.maxWaitMs,
    durationMs: o.durationMs,
    p99Ms: usable ? round3(obs.hist.percentileMs(99)) : Infinity,
    p50Ms: round3(obs.hist.percentileMs(50)),
    committed: obs.committed,
    offered: load.offered,
    notOffered,
    blockedMs: round3(load.blockedMs),
    opsPerItem: obs.committed > 0 ? ops / obs.committed : Infinity,
    batches: obs.cuts,
    medianBatch: median(obs.batchSizes) || 0,
    sizeCutShare: obs.cuts > 0 ? obs.sizeCuts / obs.cuts : 0,
    balanced: ledger.balanced,
    stalls: writes.filter((w) => w > o.sloMs).length,
    writes: writes.length,
    maxWriteMs: round3(writes.length ? Math.max(...writes) : 0),
  };
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
