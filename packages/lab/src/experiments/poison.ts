/**
 * Experiment `poison`: split-and-retry against abort-whole-batch, on a real log with real
 * offsets, measured as consumer lag.
 *
 * For each strategy, on a fresh log (embedded log, or a JetStream stream + durable consumer)
 * and a fresh sink (file sink with schema validation, or a PostgreSQL table with real
 * constraints): a producer appends the *same* records at a steady rate below capacity for a
 * fixed duration, one poison record every `poisonEvery` (several kinds; the jsontestsuite
 * `n_*` cases for the file sink when ../shared/data has them). A consumer reads the log into
 * the pipeline; acks (committed offset / JetStream ack) follow commit or durable
 * dead-lettering. Lag is sampled every 250 ms; its least-squares slope over the second half
 * of the run is the verdict: ≈ 0 for split-and-retry, ≈ the offered rate for
 * abort-whole-batch, which stalls by design on the first poison record. The latter is stopped
 * at the same fixed duration: the ledger is snapshotted (what it holds is in flight), then
 * its handler is aborted and what it held is counted dropped `aborted` and never acked.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { check } from '../checks.js';
import { mdTable } from '../runner.js';
import type { Check, ChartSpec, Experiment, ResultEnvelope } from '../types.js';
import { abortWholeBatch, splitAndRetry, type Isolation } from 'sluice';
import type { LedgerSnapshot } from 'sluice';
import type { BatchHandler, Sink } from 'sluice';
import { CallCountingSink } from 'sluice/testing';
import { FileSink } from 'sluice';
import { openEventTableSink } from '../sinks.js';
import { validateEventEnvelope } from '../records/event-schema.js';
import { FileDeadLetterStore } from 'sluice';
import { PostgresDeadLetterStore } from 'sluice';
import { deadLetterWriter, type DeadLetterStore } from 'sluice';
import { EmbeddedLogSource, EmbeddedLogWriter, type LogRecord, type OffsetSource } from 'sluice';
import { JetStreamProducer, JetStreamSource } from 'sluice';
import { connectNats, DEFAULT_NATS_URL } from 'sluice';
import { PoisonInput } from '../records/poison.js';
import { Ingest } from 'sluice';
import type { LatencySummary } from 'sluice';

export type PoisonStrategy = 'split-and-retry' | 'abort-whole-batch';
const DEFAULT_DATABASE_URL = 'postgres://root@127.0.0.1:5432/test';

export interface PoisonVariant {
  strategy: PoisonStrategy;
  source: 'embedded' | 'jetstream';
  sink: 'file' | 'postgres';
  offeredPerSec: number;
  durationMs: number;
  /** Records the producer appended/published during the run. */
  produced: number;
  achievedPerSec: number;
  poisonInjected: number;
  poisonByKind: Record<string, number>;
  /** Ledger at the stop (before the drain; the stalled baseline is judged here). */
  accepted: number;
  committed: number;
  deadLettered: number;
  inFlight: number;
  /** Records in the log never read (the reader was blocked by a full queue). */
  unread: number;
  ledgerAtStop: LedgerSnapshot;
  /** Ledger after the drain (the baseline's held records are dropped `aborted`, never acked). */
  ledgerFinal: LedgerSnapshot;
  /** Calls really made to the sink (counted by a wrapper, failed calls included). */
  sinkCalls: number;
  /** Latency of those calls (ms): whether "below capacity" held on this machine during the run. */
  sinkCallMs: { p50: number; p99: number; max: number };
  isolations: Isolation[];
  isolationSinkCallsMax: number;
  /** Share of the run the handler spent isolating poison (Σ isolation time ÷ duration). */
  isolationTimeShare: number;
  maxBatchSize: number;
  lagSamples: { tMs: number; lag: number }[];
  lagSlopePerSec: number;
  /** Lag after the stop and drain, read from the source. */
  finalLag: number;
  storedInSink: number;
  storedDistinct: number;
  /** Good (non-poison) records produced that the sink does not hold. */
  goodMissing: number;
  dlqIds: string[];
  poisonIds: string[];
  latencyMs: LatencySummary;
}

/** Least-squares slope (per second) of lag over the samples with tMs ≥ fromMs. */
export function lagSlopePerSec(samples: { tMs: number; lag: number }[], fromMs: number): number {
  const s = samples.filter((x) => x.tMs >= fromMs);
  if (s.length < 2) return NaN;
  const n = s.length;
  const mx = s.reduce((a, x) => a + x.tMs, 0) / n;
  const my = s.reduce((a, x) => a + x.lag, 0) / n;
  let num = 0;
  let den = 0;
  for (const x of s) {
    num += (x.tMs - mx) * (x.lag - my);
    den += (x.tMs - mx) ** 2;
  }
  return den === 0 ? NaN : (num / den) * 1000;
}

interface Backend {
  source: OffsetSource<unknown>;
  append(records: LogRecord[]): Promise<void>;
  sink: Sink<unknown>;
  dlq: DeadLetterStore;
  storedIds(): Promise<string[]>;
  cleanup(): Promise<void>;
}

async function openBackend(kind: { source: 'embedded' | 'jetstream'; sink: 'file' | 'postgres' }, ctx: Parameters<Experiment['run']>[0], label: string): Promise<Backend> {
  const cleanups: (() => Promise<unknown>)[] = [];
  const run = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  };
  try {
    let sink: Sink<unknown>;
    let dlq: DeadLetterStore;
    let storedIds: () => Promise<string[]>;
    const tag = `${label.replace(/-/g, '_')}_${randomBytes(3).toString('hex')}`;
    if (kind.sink === 'postgres') {
      const url = ctx.databaseUrl ?? process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
      const pg = await openEventTableSink({ connectionString: url, table: `sluice_lab_poison_${tag}` });
      const store = new PostgresDeadLetterStore(url, `sluice_lab_poison_${tag}_dlq`);
      await store.open();
      cleanups.push(() => pg.close(), () => pg.dropTable(), () => store.close(), () => store.dropTable());
      sink = pg as unknown as Sink<unknown>;
      dlq = store;
      storedIds = () => pg.ids();
    } else {
      const path = join(ctx.workDir, `${label}.sink.ndjson`);
      const fs = await new FileSink<unknown>({ path, validate: validateEventEnvelope }).open();
      const store = await new FileDeadLetterStore(join(ctx.workDir, `${label}.dlq.jsonl`)).open();
      cleanups.push(() => fs.close(), () => store.close());
      sink = fs;
      dlq = store;
      storedIds = async () =>
        (await readFile(path, 'utf8'))
          .split('\n')
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as { id: string }).id);
    }
    if (kind.source === 'jetstream') {
      const nc = await connectNats(ctx.natsUrl ?? process.env.NATS_URL ?? DEFAULT_NATS_URL);
      cleanups.push(() => nc.close());
      const stream = `SLUICE_LAB_POISON_${tag.toUpperCase()}`;
      const source = await JetStreamSource.open<unknown>({ nc, stream, consumer: 'poison', ackWaitMs: 120_000 });
      cleanups.push(() => source.destroy());
      const producer = new JetStreamProducer(nc, stream);
      return { source, sink, dlq, storedIds, append: async (r) => void (await producer.publish(r)), cleanup: run };
    }
    const logPath = join(ctx.workDir, `${label}.log`);
    const writer = await EmbeddedLogWriter.open(logPath);
    const source = await EmbeddedLogSource.open<unknown>({ path: logPath, pollMs: 2 });
    cleanups.push(() => writer.close(), () => source.close());
    return { source, sink, dlq, storedIds, append: async (r) => void (await writer.append(r)), cleanup: run };
  } catch (e) {
    await run();
    throw e;
  }
}

async function runVariant(
  ctx: Parameters<Experiment['run']>[0],
  strategy: PoisonStrategy,
  o: { source: 'embedded' | 'jetstream'; sink: 'file' | 'postgres'; rate: number; durationMs: number; every: number },
): Promise<PoisonVariant> {
  const be = await openBackend(o, ctx, strategy);
  try {
    const input = new PoisonInput({ every: o.every, sink: o.sink, sharedDataDir: ctx.sharedDataDir, seed: 5 });
    const counted = new CallCountingSink(be.sink);
    const abort = new AbortController();
    const retry = { budget: 5, baseMs: 5, maxMs: 100, jitter: 0.5 };
    let split: ReturnType<typeof splitAndRetry<unknown>> | null = null;
    let handler: BatchHandler<unknown>;
    if (strategy === 'split-and-retry') {
      split = splitAndRetry(counted, { dlq: deadLetterWriter(be.dlq, { pipeline: `poison-${strategy}`, sink: be.sink.name, source: be.source.name }), retry, itemRetries: 0 });
      handler = split;
    } else {
      handler = abortWholeBatch(counted, { ...retry, budget: Infinity }, { signal: abort.signal });
    }
    const ingest = new Ingest<unknown>({
      source: be.source,
      sink: counted,
      handler,
      name: `poison-${strategy}`,
      window: { maxItems: 512, maxWaitMs: 5, maxInFlight: 1 },
      // The reader blocks on a full queue; it never drops (a log source need not).
      queue: { maxItems: 10_000, policy: 'block', blockTimeoutMs: 3_600_000 },
      sloMs: ctx.sloMs,
    });

    // Producer: open loop, catching up every tick; the same records for both strategies.
    const poisonIds: string[] = [];
    const poisonByKind: Record<string, number> = {};
    let produced = 0;
    const t0 = performance.now();
    const samples: { tMs: number; lag: number }[] = [];
    let sampling = false;
    const sampler = setInterval(() => {
      if (sampling) return;
      sampling = true;
      const asked = performance.now() - t0;
      // Stamped at the midpoint of the request: under load a JetStream info round-trip can
      // take tens of ms, and the count describes the moment the server answered.
      be.source
        .lag()
        .then((lag) => samples.push({ tMs: Math.round((asked + performance.now() - t0) / 2), lag }))
        .catch(() => {})
        .finally(() => (sampling = false));
    }, 250);
    ctx.progress.start(`poison: ${strategy} (${o.source} → ${o.sink})`, o.durationMs);
    // Open loop: each tick appends every record due by now, stamped with its own intended
    // time; appends are not awaited one by one (a slow PubAck must not slow the producer).
    // After the deadline the few records due before it but not yet appended are topped up,
    // so both strategies get exactly the same records.
    const target = Math.floor((o.durationMs / 1000) * o.rate);
    const epoch0 = Date.now();
    const pending = new Set<Promise<void>>();
    const produceUpTo = (due: number) => {
      const batch: LogRecord[] = [];
      for (; produced < due; produced++) {
        const m = input.make(produced, Math.round(epoch0 + (produced * 1000) / o.rate));
        if (m.poison) {
          poisonIds.push(m.rec.id);
          poisonByKind[m.poison] = (poisonByKind[m.poison] ?? 0) + 1;
        }
        batch.push(m.rec);
      }
      if (batch.length === 0) return;
      const p = be.append(batch).finally(() => pending.delete(p));
      pending.add(p);
    };
    while (true) {
      const el = performance.now() - t0;
      if (el >= o.durationMs) break;
      produceUpTo(Math.min(target, Math.floor((el / 1000) * o.rate)));
      if (pending.size > 64) await Promise.race(pending);
      ctx.progress.tick(0, `${produced} produced, committed ${ingest.stats().ledger.committed}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    produceUpTo(target);
    await Promise.all(pending);
    clearInterval(sampler);
    while (sampling) await new Promise((r) => setTimeout(r, 5));
    ctx.progress.done();

    let ledgerAtStop!: LedgerSnapshot;
    if (strategy === 'split-and-retry') {
      // Below capacity: let the consumer finish what was produced (bounded), then stop.
      const deadline = performance.now() + 10_000;
      while (performance.now() < deadline && (await be.source.lag()) > 0) await new Promise((r) => setTimeout(r, 20));
    }
    const ledgerFinal = await ingest.stop(() => {
      ledgerAtStop = ingest.stats().ledger;
      abort.abort();
    });
    const finalLag = await be.source.lag();
    const stored = await be.storedIds();
    const storedSet = new Set(stored);
    const poisonSet = new Set(poisonIds);
    let goodMissing = 0;
    for (let i = 0; i < produced; i++) {
      const id = `e${i}`;
      if (!poisonSet.has(id) && !storedSet.has(id)) goodMissing++;
    }
    const dlqIds = (await be.dlq.list()).map((e) => e.id);
    const isolations = split?.stats().isolations ?? [];
    const snap = ingest.metrics.snapshot();
    return {
      strategy,
      source: o.source,
      sink: o.sink,
      offeredPerSec: o.rate,
      durationMs: o.durationMs,
      produced,
      achievedPerSec: Math.round((produced / o.durationMs) * 1000),
      poisonInjected: poisonIds.length,
      poisonByKind,
      accepted: ledgerAtStop.accepted,
      committed: ledgerAtStop.committed,
      deadLettered: ledgerAtStop.deadLettered,
      inFlight: ledgerAtStop.inFlight,
      unread: produced - ledgerAtStop.accepted,
      ledgerAtStop,
      ledgerFinal,
      sinkCalls: counted.calls,
      sinkCallMs: quantiles(counted.callMs),
      isolations,
      isolationSinkCallsMax: isolations.reduce((m, x) => Math.max(m, x.sinkCalls), 0),
      isolationTimeShare: Math.round((isolations.reduce((a, x) => a + x.elapsedMs, 0) / o.durationMs) * 1000) / 1000,
      maxBatchSize: snap.batchSize.max,
      lagSamples: samples,
      lagSlopePerSec: lagSlopePerSec(samples, o.durationMs / 2),
      finalLag,
      storedInSink: stored.length,
      storedDistinct: storedSet.size,
      goodMissing,
      dlqIds,
      poisonIds,
      latencyMs: snap.latencyMs,
    };
  } finally {
    await be.cleanup();
  }
}

function quantiles(xs: number[]): { p50: number; p99: number; max: number } {
  if (xs.length === 0) return { p50: 0, p99: 0, max: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))] * 100) / 100;
  return { p50: q(0.5), p99: q(0.99), max: Math.round(s[s.length - 1] * 100) / 100 };
}

function sameSet(a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return s.size === a.length && b.every((x) => s.has(x));
}

export const poison: Experiment = {
  name: 'poison',
  title: 'Poison messages: split-and-retry isolates the bad record, abort-whole-batch stalls the log',
  description:
    'The same steady load below capacity, with one poison record every N (schema/constraint violations and the JSONTestSuite reject cases), ' +
    'is appended to a log (embedded log or JetStream stream) and consumed into a sink (file sink with schema validation or PostgreSQL with constraints) ' +
    'under two strategies: split-and-retry (bisect, commit the good halves, dead-letter the isolated record) and abort-whole-batch (retry the whole batch ' +
    'with backoff, never split). Consumer lag is sampled every 250 ms; its slope over the second half shows one strategy flat and the other stalled.',
  cliOptions: [
    { flags: '--source <kind>', description: 'source with offsets: embedded | jetstream', defaultValue: 'embedded' },
    { flags: '--poison-every <n>', description: 'one poison record per n records (default: file 1000 quick / 2500 full; postgres 2500)' },
    { flags: '--offered-per-sec <n>', description: 'steady offered rate (default: file 2000/s, postgres 1000/s)' },
  ],

  async run(ctx) {
    const source = ctx.args.source === 'jetstream' ? 'jetstream' : 'embedded';
    if (ctx.args.source !== undefined && ctx.args.source !== 'embedded' && ctx.args.source !== 'jetstream')
      throw new Error(`--source must be embedded or jetstream, got ${String(ctx.args.source)}`);
    const sink = ctx.sink;
    // PostgreSQL shares this host with everything else: 1,000/s keeps the offered load below
    // its capacity even when commits spike to hundreds of ms (measured: sink call p99 ≈ 300 ms
    // at load average 7 on 2 cores), which is the experiment's premise.
    const rate = Number(ctx.args.offeredPerSec ?? (sink === 'postgres' ? 1000 : 2000));
    const durationMs = ctx.quick ? 4_000 : 12_000;
    // PostgreSQL: one poison per 2,500 at 1,000/s (0.4 per second). A failed call there costs a
    // round-trip of ≈1–10 ms (≈0.1–0.3 ms for the file sink's validation), so isolating one
    // record in a batch of 512 (≤ 19 calls) takes up to ~0.2 s; denser poison would push the
    // consumer above its capacity on a loaded host and measure the host, not the strategy.
    const every = Number(ctx.args.poisonEvery ?? (sink === 'postgres' ? 2500 : ctx.quick ? 1000 : 2500));
    const variants: PoisonVariant[] = [];
    for (const strategy of ['split-and-retry', 'abort-whole-batch'] as const) {
      const v = await runVariant(ctx, strategy, { source, sink, rate, durationMs, every });
      variants.push(v);
      ctx.log(
        `${strategy}: produced ${v.produced}, committed ${v.committed}, dead-lettered ${v.deadLettered}, in flight ${v.inFlight}, unread ${v.unread}, ` +
          `lag slope ${v.lagSlopePerSec.toFixed(1)}/s, sink calls ${v.sinkCalls}`,
      );
    }
    const sp = variants[0];
    const ab = variants[1];
    const checks: Check[] = [
      check('same input for both strategies: records produced (split − abort)', sp.produced - ab.produced, '==', 0),
      check('records produced ÷ offered rate × duration', sp.produced / ((sp.offeredPerSec * sp.durationMs) / 1000), 'within', [0.999, 1]),
      check('poison records injected (split-and-retry run)', sp.poisonInjected, '>=', 2),
      check('split: DLQ holds exactly the injected poison records', sameSet(sp.dlqIds, sp.poisonIds), '==', true),
      check('split: dead-lettered (ledger) = poison injected', sp.ledgerFinal.deadLettered, '==', sp.poisonInjected),
      check('split: good records missing from the sink', sp.goodMissing, '==', 0),
      check('split: sink holds each good record exactly once (stored − distinct)', sp.storedInSink - sp.storedDistinct, '==', 0),
      check('split: committed = records in the sink', sp.ledgerFinal.committed === sp.storedInSink, '==', true),
      check('split: committed = produced − poison', sp.ledgerFinal.committed, '==', sp.produced - sp.poisonInjected),
      check('split: lag slope over the second half ÷ offered rate (%)', (100 * sp.lagSlopePerSec) / sp.offeredPerSec, 'within', [-2, 2]),
      check('split: batches whose isolation cost more than 1 + 2k⌈log2 B⌉ sink calls', sp.isolations.filter((i) => i.sinkCalls > i.bound).length, '==', 0),
      check('split: batches isolated (the bound was exercised)', sp.isolations.length, '>=', 1),
      check('abort: lag slope over the second half ÷ offered rate (%)', (100 * ab.lagSlopePerSec) / ab.offeredPerSec, 'within', [85, 115]),
      check('abort: nothing dead-lettered, nothing skipped past the poison', ab.dlqIds.length + ab.ledgerFinal.deadLettered, '==', 0),
      check('abort: committed = records in the sink', ab.ledgerFinal.committed === ab.storedInSink, '==', true),
      check('abort: records stuck at the stop (in flight + unread)', ab.inFlight + ab.unread, '>', 0),
      check('ledger balances at the stop and after the drain, every run', variants.every((v) => v.ledgerAtStop.balanced && v.ledgerFinal.balanced), '==', true),
      check(
        'lag after the stop = produced − committed − dead-lettered, every run',
        variants.every((v) => v.finalLag === v.produced - v.ledgerFinal.committed - v.ledgerFinal.deadLettered),
        '==',
        true,
      ),
    ];
    return { source, sink, offeredPerSec: rate, durationMs, poisonEvery: every, variants, checks };
  },

  markdown(r: ResultEnvelope) {
    const vs = r.variants as PoisonVariant[];
    const head =
      `### poison — ${r.source} log → ${r.sink} sink\n\n` +
      `Same input for both strategies: ${r.offeredPerSec} records/s for ${Number(r.durationMs) / 1000} s, one poison record per ${r.poisonEvery} ` +
      `(${Object.entries(vs[0].poisonByKind).map(([k, n]) => `${k} ${n}`).join(', ')}). Figures at the stop; lag slope by least squares over the second half.\n\n`;
    return (
      head +
      mdTable(
        ['strategy', 'produced', 'committed', 'dead-lettered', 'poison', 'in flight', 'unread', 'lag slope /s', 'final lag', 'sink calls', 'sink call p50/p99 ms', 'isolation calls max', 'max batch', 'p50 ms', 'p99 ms'],
        vs.map((v) => [
          v.strategy,
          v.produced,
          v.committed,
          v.deadLettered,
          v.poisonInjected,
          v.inFlight,
          v.unread,
          v.lagSlopePerSec.toFixed(1),
          v.finalLag,
          v.sinkCalls,
          `${v.sinkCallMs.p50}/${v.sinkCallMs.p99}`,
          v.isolationSinkCallsMax,
          v.maxBatchSize,
          v.latencyMs.p50,
          v.latencyMs.p99,
        ]),
      ) +
      `\n\nSplit-and-retry spent ${(100 * vs[0].isolationTimeShare).toFixed(1)}% of the run isolating poison ` +
      `(sink call p50 ${vs[0].sinkCallMs.p50} ms, p99 ${vs[0].sinkCallMs.p99} ms): the consumer keeps up only while that share plus the normal write time stays below 100%.` +
      '\n\nabort-whole-batch is stopped at the same fixed duration: its "in flight" and "unread" records were never committed nor acknowledged (after the stop they are dropped as `aborted`, still unacknowledged, and remain as lag).'
    );
  },

  charts(r: ResultEnvelope): ChartSpec[] {
    const vs = r.variants as PoisonVariant[];
    const values = vs.flatMap((v) => v.lagSamples.map((s) => ({ t: s.tMs / 1000, lag: s.lag, strategy: v.strategy })));
    return [
      {
        id: `poison-lag-${r.source}-${r.sink}`,
        title: `Consumer lag over time — ${r.source} log → ${r.sink} sink`,
        caption: 'Records not yet acknowledged, sampled every 250 ms: split-and-retry stays flat, abort-whole-batch grows at the offered rate from the first poison record.',
        spec: {
          $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
          width: 560,
          height: 280,
          data: { values },
          mark: { type: 'line', point: true },
          encoding: {
            x: { field: 't', type: 'quantitative', title: 'time since start (s)' },
            y: { field: 'lag', type: 'quantitative', title: 'lag (records)' },
            color: { field: 'strategy', type: 'nominal', title: 'strategy', legend: { labelLimit: 400 } },
          },
        },
      },
    ];
  },
};

