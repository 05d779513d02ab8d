/**
 * Case 3 — PostgreSQL, the generic record model: every contender writes the same records
 * (RecordFactory's envelopes: an id and the JSON bytes as produced) into a table of the same
 * shape, PostgresSink's default `(id text primary key, received_at timestamptz default now(),
 * doc jsonb)`, so every contender pays for the same primary key.
 * - sluice:        Pipeline → PostgresSink in its default mode (`copy`: idempotent on id);
 * - sluice-append: the same in `append` mode (COPY, no conflict handling, not idempotent);
 * - sluice-staged: the same in `staged` mode (COPY into a temp table, INSERT … ON CONFLICT);
 * - sink-alone:    the default mode's write fed ready-made full batches back to back, no batcher;
 * - copy:          the limit: one `COPY … FROM STDIN` session streaming the same rows, as a
 *                  user's own loop would (text format: id, tab, the record's bytes escaped),
 *                  one transaction, acknowledged at its commit;
 * - copy-binary:   the same in binary format (no escaping; the faster of the two is the limit).
 * The Sluice contenders use a bulk-load window (BULK_MAX_ITEMS items, BULK_IN_FLIGHT batches in
 * flight on as many connections): one COPY per batch, one commit per batch.
 * CPU per item is this process's only: the server's work is not in it.
 *
 *   node --expose-gc dist/bench/case3-postgres.js --contender sluice --rows 200000
 *   node dist/bench/case3-postgres.js --probe        # {"reachable":true|false,…}
 */
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { PostgresSink, type PostgresWriteMode } from 'sluice';
import { copyBinary } from 'sluice';
import { RecordFactory, type EventRecord } from '../src/records/records.js';
import type { Envelope } from 'sluice';
import { LatencyHistogram } from 'sluice';
import { makeContender } from './lib/contenders.js';
import { AckSink, closedLoop, emit, main, measure, num, parseArgs, peakRssMb, rssMb, settle } from './lib/harness.js';

const URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';

/**
 * A bulk load's window. Per-batch costs (a COPY round trip, a commit) want large batches, but
 * every queued or in-flight item survives young-generation collections: in the window sweep of
 * docs/bench.md (case 3, `--max-items N --queue-items M`), client CPU per row was lowest at 2,048
 * items with a queue of one window (≈4.6 µs against ≈6.8 at 4,096 with two, ≈8.3 at 512).
 * Two in flight on two connections: encoding the next batch overlaps the server's COPY of
 * the last one, as raw COPY's single stream overlaps them (docs/bench.md, case 3).
 */
export const BULK_MAX_ITEMS = 2048;
export const BULK_IN_FLIGHT = 2;
/** The Sluice contenders' queue bound (items); `--queue-items` and `--max-items` override for experiments. */
export const BULK_QUEUE_ITEMS = BULK_MAX_ITEMS;

function sinkFor(table: string, mode?: PostgresWriteMode, connections = BULK_IN_FLIGHT): PostgresSink {
  return new PostgresSink({ connectionString: URL, table, mode, maxConnections: connections, connectTimeoutMs: 2_000 });
}

async function probe(): Promise<void> {
  const c = new pg.Client({ connectionString: URL, connectionTimeoutMillis: 2_000 });
  try {
    await c.connect();
    const r = await c.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    process.stdout.write(JSON.stringify({ reachable: true, serverVersion: r.rows[0].v }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ reachable: false, reason: `${URL.replace(/\/\/[^@]*@/, '//')}: ${(e as Error).message || (e as { code?: string }).code}` }) + '\n');
  } finally {
    await c.end().catch(() => {});
  }
}


type Writer = (f: RecordFactory, rows: number) => Promise<{ acked: number; latency: LatencyHistogram | null; extra: Record<string, unknown> }>;

const sluiceWriter =
  (sink: PostgresSink, w: { maxItems: number; queueItems: number }): Writer =>
  async (f, rows) => {
    const ack = new AckSink(sink, { latency: false });
    const c = makeContender<Envelope<EventRecord>>('sluice', ack, { sluiceMaxInFlight: BULK_IN_FLIGHT, sluiceMaxItems: w.maxItems, sluiceQueueItems: w.queueItems });
    await closedLoop(c, ack, { make: (i, stamp) => f.make(i, stamp), totalItems: rows });
    await c.close();
    return { acked: ack.acked, latency: c.latency(), extra: { ...c.extra(), mode: sink.mode, paths: sink.writesByPath(), maxItems: w.maxItems, queueItems: w.queueItems, maxInFlight: BULK_IN_FLIGHT } };
  };

/** The sink alone: full batches back to back, BULK_IN_FLIGHT at a time, no batcher in front. */
const sinkAloneWriter =
  (sink: PostgresSink): Writer =>
  async (f, rows) => {
    const latency = new LatencyHistogram();
    let made = 0;
    let acked = 0;
    const lane = async (): Promise<void> => {
      while (made < rows) {
        const stamp = performance.now();
        const n = Math.min(BULK_MAX_ITEMS, rows - made);
        const from = made;
        made += n;
        const batch = Array.from({ length: n }, (_, k) => f.make(from + k, stamp));
        await sink.write(batch);
        const now = performance.now();
        for (let k = 0; k < n; k++) latency.recordMs(now - stamp);
        acked += n;
      }
    };
    await Promise.all(Array.from({ length: BULK_IN_FLIGHT }, lane));
    return { acked, latency, extra: { mode: sink.mode, batchRows: BULK_MAX_ITEMS, inFlight: BULK_IN_FLIGHT } };
  };

/** COPY text format of one record: `id<TAB>bytes<LF>`, the four special characters escaped. */
function textRow(e: Envelope<EventRecord>): string {
  const doc = e.raw!.toString('utf8');
  return `${e.id}\t${/[\\\t\n\r]/.test(doc) ? doc.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : doc}\n`;
}

const copyWriter =
  (table: string, binary: boolean): Writer =>
  async (f, rows) => {
    const client = new pg.Client({ connectionString: URL });
    await client.connect();
    const stamps: number[] = [];
    try {
      const stream = client.query(copyFrom(`COPY "${table}" (id, doc) FROM STDIN${binary ? ' (FORMAT binary)' : ''}`));
      // Rows are made and encoded in chunks of 1,000 (as the other producers slice their
      // work), each chunk written with the stream's own back-pressure. Binary format is one
      // header, tuples, one trailer: chunks after the first drop the header, the last adds the trailer.
      let i = 0;
      while (i < rows) {
        const stamp = performance.now();
        const end = Math.min(i + 1000, rows);
        let chunk: Buffer;
        if (binary) {
          const tuples: Buffer[][] = [];
          for (; i < end; i++) {
            const e = f.make(i, stamp);
            tuples.push([Buffer.from(e.id!), e.raw!]);
          }
          const full = copyBinary(tuples, ['text', 'jsonb']);
          chunk = full.subarray(stamps.length === 0 ? 0 : 19, i === rows ? full.length : full.length - 2);
        } else {
          let text = '';
          for (; i < end; i++) text += textRow(f.make(i, stamp));
          chunk = Buffer.from(text);
        }
        stamps.push(stamp, end);
        if (!stream.write(chunk)) await once(stream, 'drain');
      }
      stream.end();
      await finished(stream);
    } finally {
      await client.end();
    }
    // One transaction: every row is acknowledged by the one commit at the end.
    const now = performance.now();
    const latency = new LatencyHistogram();
    let from = 0;
    for (let k = 0; k < stamps.length; k += 2) {
      for (let j = from; j < stamps[k + 1]; j++) latency.recordMs(now - stamps[k]);
      from = stamps[k + 1];
    }
    return { acked: rows, latency, extra: { transactions: 1, format: binary ? 'binary' : 'text' } };
  };

const SINK_MODE: Record<string, PostgresWriteMode | undefined> = { sluice: undefined, 'sluice-append': 'append', 'sluice-staged': 'staged', 'sink-alone': undefined };

main(async () => {
  const a = parseArgs();
  if (a.probe) return probe();
  const contender = a.contender ?? 'sluice';
  const rows = num(a, 'rows', 200_000);
  const warmupRows = num(a, 'warmup-rows', 20_000);
  const table = `bench_pg_${contender.replace(/[^a-z]/g, '')}_${process.pid}`;
  if (!(contender in SINK_MODE) && contender !== 'copy' && contender !== 'copy-binary')
    throw new Error(`unknown contender ${contender}: ${[...Object.keys(SINK_MODE), 'copy', 'copy-binary'].join(', ')}`);
  const sink = sinkFor(table, SINK_MODE[contender]);
  try {
    await sink.open();
    const writer: Writer =
      contender === 'copy' || contender === 'copy-binary'
        ? copyWriter(table, contender === 'copy-binary')
        : contender === 'sink-alone'
          ? sinkAloneWriter(sink)
          : sluiceWriter(sink, { maxItems: num(a, 'max-items', BULK_MAX_ITEMS), queueItems: num(a, 'queue-items', BULK_QUEUE_ITEMS) });
    if (warmupRows > 0) {
      await writer(new RecordFactory({ idPrefix: 'w' }), warmupRows);
      await sink.truncate();
    }
    settle();
    const baseRssMb = rssMb();
    const m = measure();
    m.start();
    const r = await writer(new RecordFactory({ idPrefix: 'r' }), rows);
    const t = m.stop(r.acked);
    const stored = await sink.countRows();
    if (stored !== rows) throw new Error(`${contender}: ${stored} rows stored, ${rows} expected`);
    emit({
      case: 'postgres',
      contender,
      items: r.acked,
      ...t,
      peakRssMb: peakRssMb(),
      baseRssMb,
      latencyMs: r.latency ? r.latency.summary() : null,
      lost: rows - r.acked,
      extra: { ...r.extra, stored },
    });
  } finally {
    await sink.dropTable().catch(() => {});
    await sink.close();
  }
});
