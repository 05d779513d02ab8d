/**
 * Case 3 — PostgreSQL: Sluice into PostgresSink in its default mode (`json`, idempotent on
 * id; one connection, one batch in flight, the bench's 512-item window) and in `append` mode
 * (COPY straight into the table, no conflict handling, as raw COPY; 4,096-item windows, two
 * batches in flight on two connections),
 * against what the database itself takes, measured in the same run:
 * - copy:   one `COPY … FROM STDIN` session streaming the same rows (same factory, same
 *           table definition, text format) with no batching logic in front: one
 *           transaction, acknowledged at its commit (the named baseline);
 * - insert: the sink's own statement in its default mode (`INSERT … SELECT FROM
 *           json_populate_recordset(…) ON CONFLICT DO NOTHING`) fed ready-made 512-row
 *           batches back to back, no batcher.
 * Each contender writes `--rows` rows into a table of its own, dropped at the end.
 * CPU per item is this process's only: the server's work is not in it.
 *
 *   node --expose-gc dist/bench/case3-postgres.js --contender sluice --rows 200000
 *   node dist/bench/case3-postgres.js --probe        # {"reachable":true|false,…}
 */
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { PostgresSink, copyText, type PostgresWriteMode } from 'sluice';

import { RecordFactory, type EventRecord } from '../src/records/records.js';
import type { Envelope } from 'sluice';
import { LatencyHistogram } from 'sluice';
import { MAX_ITEMS, makeContender } from './lib/contenders.js';
import { AckSink, closedLoop, emit, main, measure, num, parseArgs, peakRssMb, rssMb, settle } from './lib/harness.js';

const URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const COLUMNS = 'id, ts, source, kind, amount, note, payload';

function sinkFor(table: string, mode?: PostgresWriteMode, connections = 1): PostgresSink {
  return new PostgresSink({ connectionString: URL, table, mode, maxConnections: connections, connectTimeoutMs: 2_000 });
}

/** The append variant writes two batches at once, on two connections: making the next batch's rows overlaps the server's COPY of the last one, as raw COPY's single stream overlaps them. */
const APPEND_IN_FLIGHT = 2;
/**
 * The append variant's window: 4,096 items (the top of the lab's window grid), queue bound 2
 * windows. A bulk load into PostgreSQL is what this variant stands for, and its per-statement
 * costs (a COPY round trip, a commit) want large batches. Measured 2026-11-27 07:3x UTC, two
 * alternations, 300k rows, rows/s against raw COPY's 132k and 153k: 512 → 65k and 76k,
 * 1,024 → 74k and 88k, 2,048 → 84k and 90k, 4,096 → 104k and 105k. What is left of the gap is
 * the items' lifetime, by a CPU profile of 420k rows each: held in the queue and in flight they
 * survive scavenges (GC 640 ms against raw COPY's 343), and making and encoding them costs
 * more (RecordFactory.make 279 ms against 86, copyText 555 against 453), as when the items are
 * no longer in cache by the time the batch is encoded.
 */
const APPEND_MAX_ITEMS = 4096;

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
  (sink: PostgresSink, maxInFlight = 1, maxItems = MAX_ITEMS, queueItems?: number): Writer =>
  async (f, rows) => {
    const ack = new AckSink(sink, { latency: false });
    const c = makeContender<Envelope<EventRecord>>('sluice', ack, { sluiceMaxInFlight: maxInFlight, sluiceMaxItems: maxItems, sluiceQueueItems: queueItems });
    await closedLoop(c, ack, { make: (i, stamp) => f.make(i, stamp), totalItems: rows });
    await c.close();
    return { acked: ack.acked, latency: c.latency(), extra: { ...c.extra(), mode: sink.mode } };
  };

const insertWriter =
  (sink: PostgresSink): Writer =>
  async (f, rows) => {
    const latency = new LatencyHistogram();
    let acked = 0;
    while (acked < rows) {
      const stamp = performance.now();
      const n = Math.min(MAX_ITEMS, rows - acked);
      const batch = Array.from({ length: n }, (_, k) => f.make(acked + k, stamp));
      await sink.write(batch);
      const now = performance.now();
      for (let k = 0; k < n; k++) latency.recordMs(now - stamp);
      acked += n;
    }
    return { acked, latency, extra: { mode: sink.mode, batchRows: MAX_ITEMS } };
  };

const copyWriter =
  (table: string): Writer =>
  async (f, rows) => {
    const client = new pg.Client({ connectionString: URL });
    await client.connect();
    const stamps: number[] = [];
    try {
      const stream = client.query(copyFrom(`COPY "${table}" (${COLUMNS}) FROM STDIN`));
      // Rows are made and encoded in chunks of 1,000 (as the other producers slice their
      // work), each chunk written with the stream's own back-pressure.
      let i = 0;
      while (i < rows) {
        const stamp = performance.now();
        const end = Math.min(i + 1000, rows);
        // The rows encoded exactly as the sink's COPY paths encode them (copyText).
        const chunk: Envelope<EventRecord>[] = [];
        for (; i < end; i++) chunk.push(f.make(i, stamp));
        const text = copyText(chunk);
        stamps.push(stamp, end);
        if (!stream.write(text)) await once(stream, 'drain');
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
    return { acked: rows, latency, extra: { transactions: 1 } };
  };

main(async () => {
  const a = parseArgs();
  if (a.probe) return probe();
  const contender = a.contender ?? 'sluice';
  const rows = num(a, 'rows', 200_000);
  const warmupRows = num(a, 'warmup-rows', 20_000);
  const table = `bench_pg_${contender.replace(/[^a-z]/g, '')}_${process.pid}`;
  const sink = contender === 'sluice-append' ? sinkFor(table, 'append', APPEND_IN_FLIGHT) : sinkFor(table);
  try {
    await sink.open();
    const writer: Writer =
      contender === 'sluice' || contender === 'sluice-append'
        ? contender === 'sluice-append'
          ? sluiceWriter(sink, APPEND_IN_FLIGHT, APPEND_MAX_ITEMS, 2 * APPEND_MAX_ITEMS)
          : sluiceWriter(sink)
        : contender === 'insert'
          ? insertWriter(sink)
          : contender === 'copy'
            ? copyWriter(table)
            : (() => {
                throw new Error(`unknown contender ${contender}: sluice, sluice-append, insert or copy`);
              })();
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
