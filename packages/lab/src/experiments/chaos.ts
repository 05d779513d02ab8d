/**
 * Experiment `chaos` (issue 19): faults an operator meets, injected into the real `sluice run`
 * and `sluice serve` (child processes of the CLI), with the real PostgreSQL, NATS and disk.
 *
 *   1. run  JetStream → PostgreSQL, PostgreSQL stopped for 8 s mid-run, then started;
 *   2. run  JetStream (a nats-server of our own) → PostgreSQL, NATS killed (SIGKILL) and
 *           restarted on the same store 8 s later;
 *   3. run  JetStream → file, `sluice run` killed with SIGKILL mid-stream and restarted;
 *   4. serve → PostgreSQL under open-loop load (20 requests/s of 50 records), PostgreSQL
 *           stopped for 8 s; every HTTP status recorded, /healthz polled;
 *   5. serve → file sink on a small tmpfs, filled up by the load, then space freed;
 *   6. serve → file, slow clients (headers a byte a second; bodies trickling a byte a second)
 *           while good requests continue.
 *
 * Records are not the lab's EventRecord: real telemetry lines (Zeek dns/ssl, Apache access
 * lines as `{"message": …}`) from ../shared/data when present, else generated log-like JSON.
 * Each case has its own stream, table and files, and restores what it broke in a `finally`
 * (and from process exit handlers: src/chaos-harness.ts). Figures come from reconciliation:
 * source ids (the stream, or what the clients sent) against the sink's ids and the DLQ.
 */
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, rm, statfs, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats, contentHashId, JetStreamProducer, openConsumableDlq, reconcileIds, sinkIds, type ReconcileReport } from 'sluice';
import { check } from '../checks.js';
import { mdTable } from '../runner.js';
import type { Check, Experiment, ExperimentContext, ResultEnvelope } from '../types.js';
import { freePort, mountTmpfs, OwnNats, pgIsReady, sleep, SluiceChild, stopPostgres, until, ensurePostgresUpSync, type Line } from '../chaos-harness.js';
import { openLoopIngest, slowClients, type Body, type OpenLoopResult, type SlowClientsResult } from '../chaos-clients.js';

const DEFAULT_DATABASE_URL = 'postgres://root@127.0.0.1:5432/test';
const DEFAULT_NATS = 'nats://127.0.0.1:4222';
const OUTAGE_MS = 8_000;

// ------------------------------------------------------------------ records

interface Payloads {
  source: string;
  lines: Buffer[];
}

/** Distinct real lines (so content-hash ids are distinct), or generated log-like JSON. */
function loadPayloads(sharedDataDir: string | null, max: number): Payloads {
  const seen = new Set<string>();
  const lines: Buffer[] = [];
  const sources: string[] = [];
  const add = (text: string, wrap: boolean) => {
    for (const raw of text.split('\n')) {
      if (lines.length >= max) return;
      const l = raw.trim();
      if (!l) continue;
      const s = wrap ? JSON.stringify({ message: l }) : l;
      if (seen.has(s)) continue;
      seen.add(s);
      lines.push(Buffer.from(s));
    }
  };
  if (sharedDataDir) {
    for (const kind of ['dns', 'ssl']) {
      const p = join(sharedDataDir, `payloads/zeek-wrccdc/${kind}.json.gz`);
      if (existsSync(p) && lines.length < max) {
        add(gunzipSync(readFileSync(p)).toString('utf8'), false);
        sources.push(`zeek-${kind}`);
      }
    }
    const p = join(sharedDataDir, 'payloads/apache-access/apache_logs');
    if (existsSync(p) && lines.length < max) {
      add(readFileSync(p, 'utf8'), true);
      sources.push('apache-access');
    }
  }
  if (lines.length === 0) {
    for (let i = 0; i < Math.min(max, 5000); i++)
      lines.push(Buffer.from(JSON.stringify({ level: i % 7 ? 'info' : 'warn', msg: `GET /api/items/${i} served`, latency_ms: (i * 37) % 900, host: `web-${i % 5}` })));
    sources.push('generated');
  }
  return { source: sources.join('+'), lines };
}

/** Record i: a distinct line while the pool lasts, then the pool's line wrapped with i (still distinct). */
function recordBytes(p: Payloads, i: number): Buffer {
  if (i < p.lines.length) return p.lines[i];
  return Buffer.from(`{"seq":${i},"record":${p.lines[i % p.lines.length].toString('utf8')}}`);
}

// ------------------------------------------------------------------ results

export interface Outage {
  /** What was broken, and for how long (ms from the fault to the service answering again). */
  what: string;
  startedAtMs: number;
  downMs: number;
  /** ms from the service answering again to Sluice saying so (its "back" log line), when it says. */
  sluiceSawBackAfterMs: number | null;
  /** ms from the service answering again until every record produced so far was committed (lag 0 / all clients answered). */
  caughtUpAfterMs: number | null;
}

export interface CaseResult {
  id: number;
  name: string;
  runnable: boolean;
  reason?: string;
  error?: string;
  produced: number;
  acknowledged: number;
  committed: number;
  deadLettered: number;
  transientInDlq: number;
  missing: number;
  duplicated: number;
  unconsumed: number;
  /** Records acknowledged to a client (HTTP) or to the log (ack floor) that are not in the sink. */
  ackedNotInSink: number;
  /** Lines in a file sink that do not parse (a torn write). */
  unparsableLines?: number;
  outage: Outage | null;
  statuses?: Record<string, number>;
  firstAttemptStatuses?: Record<string, number>;
  /** Answers other than 200, by `status/reason` (the body's reason). */
  statusReasons?: Record<string, number>;
  healthz?: Record<string, number>;
  maxRssMb: number;
  /** The Sluice process was alive when asked to stop, stopped with exit 0 and a balanced ledger (not required of a process killed on purpose). */
  survived: boolean;
  exit: { code: number | null; signal: string | null } | null;
  ledger: string | null;
  /** Sluice's own lines about the fault (sink down/back, NATS down/back, ENOSPC, …), times relative to the fault. */
  faultLines: { atMs: number; text: string }[];
  downLines: number;
  backLines: number;
  extra?: Record<string, unknown>;
  elapsedMs: number;
}

function emptyCase(id: number, name: string): CaseResult {
  return {
    id,
    name,
    runnable: true,
    produced: 0,
    acknowledged: 0,
    committed: 0,
    deadLettered: 0,
    transientInDlq: 0,
    missing: 0,
    duplicated: 0,
    unconsumed: 0,
    ackedNotInSink: 0,
    outage: null,
    maxRssMb: 0,
    survived: false,
    exit: null,
    ledger: null,
    faultLines: [],
    downLines: 0,
    backLines: 0,
    elapsedMs: 0,
  };
}

const FAULT_LINE = /sink down|sink back|went down|came back|ENOSPC|ECONNREFUSED|still down|giving up|error|fail/i;

function faultLines(child: SluiceChild, faultAtChildMs: number): { atMs: number; text: string }[] {
  return child.lines
    .filter((l: Line) => l.stream === 'stderr' && FAULT_LINE.test(l.text))
    .slice(0, 30)
    .map((l) => ({ atMs: Math.round(l.atMs - faultAtChildMs), text: l.text.slice(0, 300) }));
}

function ledgerOf(child: SluiceChild): string | null {
  const l = [...child.lines].reverse().find((x) => /ledger:? /.test(x.text));
  return l ? l.text.replace(/^.*ledger:? /, '') : null;
}

const balanced = (ledger: string | null) => ledger !== null && / balanced$/.test(ledger);

// ------------------------------------------------------------------ run cases (1–3)

interface RunCaseSpec {
  id: number;
  name: string;
  fault: 'pg-stop' | 'nats-restart' | 'kill9';
  sink: 'postgres' | 'file';
  records: number;
  rate: number;
  /** Fraction of the production time at which the fault strikes. */
  faultAt: number;
  ackWaitMs?: number;
}

async function runCase(ctx: ExperimentContext, spec: RunCaseSpec, payloads: Payloads, dbUrl: string, systemNats: string): Promise<CaseResult> {
  const r = emptyCase(spec.id, spec.name);
  const t0 = performance.now();
  const tag = `chaos${spec.id}_${randomBytes(3).toString('hex')}`;
  const stream = tag.toUpperCase();
  const table = tag;
  let ownNats: OwnNats | null = null;
  let nc: NatsConnection | null = null;
  const children: SluiceChild[] = [];
  const fileSink = join(ctx.workDir, `${tag}.ndjson`);
  let pgStop: { start: () => void } | null = null;
  try {
    let natsUrl = systemNats;
    if (spec.fault === 'nats-restart') {
      ownNats = new OwnNats(await freePort(), join(ctx.workDir, `${tag}-nats`));
      await ownNats.start();
      natsUrl = ownNats.url;
    }
    nc = await connectNats(natsUrl, 3_000, null);
    const jsm: JetStreamManager = await jetstreamManager(nc);
    await jsm.streams.add({ name: stream, subjects: [`${stream}.in`], storage: 'file' as never });
    const source = `${natsUrl}/${stream}/sluice`;
    const sinkSpec = spec.sink === 'postgres' ? dbUrl : fileSink;
    const args = ['run', '--source', source, '--sink', sinkSpec, '--table', table, '--name', tag];
    if (spec.ackWaitMs) args.push('--ack-wait-ms', String(spec.ackWaitMs));
    const start = async () => {
      const c = new SluiceChild(args);
      children.push(c);
      await c.waitFor(/; ready$/, 30_000);
      return c;
    };
    let child = await start();

    // Producer: open loop at `rate`/s in 50 ms ticks; a publish that fails is retried until it lands.
    const producer = new JetStreamProducer(nc, stream);
    let produced = 0;
    const prodT0 = performance.now();
    const producing = (async () => {
      const perTick = Math.max(1, Math.round(spec.rate / 20));
      for (let i = 0; i < spec.records; i += perTick) {
        const due = ((i / spec.rate) * 1000) - (performance.now() - prodT0);
        if (due > 0) await sleep(due);
        const batch = [];
        for (let j = i; j < Math.min(spec.records, i + perTick); j++) batch.push({ id: `${tag}-${j}`, data: recordBytes(payloads, j), ts: Date.now() });
        for (;;) {
          try {
            await producer.publish(batch);
            break;
          } catch {
            if (performance.now() - t0 > 180_000) throw new Error('producer: could not publish for 3 minutes');
            await sleep(250);
          }
        }
        produced += batch.length;
      }
    })();

    // The fault, at faultAt of the production time.
    await sleep(spec.faultAt * (spec.records / spec.rate) * 1000);
    const faultAt = performance.now();
    const faultAtChild = faultAt - child.t0;
    let backAt: number;
    if (spec.fault === 'pg-stop') {
      pgStop = stopPostgres();
      await sleep(OUTAGE_MS);
      pgStop.start();
      pgStop = null;
      backAt = performance.now();
    } else if (spec.fault === 'nats-restart') {
      await ownNats!.kill9();
      await sleep(OUTAGE_MS);
      await ownNats!.start();
      backAt = performance.now();
    } else {
      child.kill9();
      const e = await child.exited;
      r.extra = { killedExit: e, producedAtKill: produced };
      child = await start();
      backAt = performance.now();
    }
    await producing;
    // Caught up: every record produced is acknowledged (nothing pending, nothing awaiting an ack).
    const caughtUp = await until(
      'the run to catch up',
      async () => {
        const ci = await jsm.consumers.info(stream, 'sluice');
        return ci.num_pending === 0 && ci.num_ack_pending === 0;
      },
      spec.ackWaitMs ? spec.ackWaitMs * 4 + 120_000 : 240_000,
      250,
    ).then(() => performance.now() - backAt, () => null);

    const backLine = child.lines.find((l) => l.stream === 'stderr' && /sink back|came back/.test(l.text) && l.atMs + child.t0 >= faultAt);
    r.outage = {
      what: spec.fault === 'pg-stop' ? 'PostgreSQL stopped (pg_ctlcluster stop), started 8 s later' : spec.fault === 'nats-restart' ? 'nats-server SIGKILLed, started again on its store 8 s later' : '`sluice run` SIGKILLed, started again',
      startedAtMs: Math.round(faultAt - t0),
      downMs: Math.round(backAt - faultAt),
      sluiceSawBackAfterMs: backLine ? Math.round(backLine.atMs + child.t0 - backAt) : null,
      caughtUpAfterMs: caughtUp === null ? null : Math.round(caughtUp),
    };
    const aliveBeforeStop = child.alive;
    const exit = await child.stop(60_000);
    r.exit = { code: exit.code, signal: exit.signal };
    r.ledger = ledgerOf(child);
    r.survived = aliveBeforeStop && exit.code === 0 && balanced(r.ledger);
    const lines = children.flatMap((c) => faultLines(c, faultAt - c.t0));
    r.faultLines = lines;
    r.downLines = lines.filter((l) => /sink down|went down/.test(l.text)).length;
    r.backLines = lines.filter((l) => /sink back|came back/.test(l.text)).length;
    r.maxRssMb = Math.max(...children.map((c) => c.maxRssMb));
    void faultAtChild;

    // Reconcile with the operator's tool.
    const rec = new SluiceChild(['reconcile', '--source', source, '--sink', sinkSpec, '--table', table, '--json']);
    await rec.exited;
    const json = rec.lines.find((l) => l.stream === 'stdout' && l.text.startsWith('{'));
    if (!json) throw new Error(`sluice reconcile printed no report:\n${rec.tail()}`);
    const rep = JSON.parse(json.text) as ReconcileReport;
    Object.assign(r, {
      produced: rep.produced,
      committed: rep.committed,
      deadLettered: rep.deadLettered,
      transientInDlq: rep.transientInDlq,
      missing: rep.missing,
      duplicated: rep.duplicated,
      unconsumed: rep.unconsumed,
      acknowledged: rep.produced - rep.unconsumed,
      // Acked at the source (at or below the ack floor) and neither in the sink nor the DLQ.
      ackedNotInSink: rep.missing,
    });
    const si = await jsm.streams.info(stream).catch(() => null);
    r.extra = { ...(r.extra ?? {}), streamMessages: si?.state.messages ?? null, reconcile: { ...rep, missingIds: rep.missingIds.slice(0, 5), duplicatedIds: rep.duplicatedIds.slice(0, 5) }, publishedRecords: produced };
  } catch (e) {
    r.error = (e as Error).stack ?? String(e);
    ctx.log(`chaos case ${spec.id}: ${(e as Error).message}`);
  } finally {
    if (pgStop) pgStop.start();
    for (const c of children) c.kill9();
    await Promise.all(children.map((c) => c.exited));
    if (children.length) r.maxRssMb = Math.max(r.maxRssMb, ...children.map((c) => c.maxRssMb));
    if (nc) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 3_000 });
        await jsm.streams.delete(stream);
      } catch {
        // own NATS is going anyway
      }
      await nc.close().catch(() => {});
    }
    await ownNats?.stop();
    if (spec.sink === 'postgres') await dropTables(dbUrl, [table, `${table}_dlq`]);
    await rm(fileSink, { force: true });
    await rm(`${fileSink}.ids`, { force: true });
    await rm(`${fileSink}.dlq.jsonl`, { force: true });
  }
  r.elapsedMs = Math.round(performance.now() - t0);
  return r;
}

async function dropTables(dbUrl: string, tables: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: dbUrl, connectionTimeoutMillis: 5_000 });
  try {
    await c.connect();
    for (const t of tables) await c.query(`DROP TABLE IF EXISTS "${t}"`);
  } catch {
    // best effort
  } finally {
    await c.end().catch(() => {});
  }
}

// ------------------------------------------------------------------ serve cases (4–6)

interface ServeHandle {
  child: SluiceChild;
  url: string;
  port: number;
}

async function startServe(args: string[]): Promise<ServeHandle> {
  const child = new SluiceChild(['serve', '--host', '127.0.0.1', '--port', '0', ...args]);
  const l = await child.waitFor(/listening on http:\/\/[^ ]+/, 30_000);
  const url = /listening on (http:\/\/[^ ]+)/.exec(l.text)![1];
  return { child, url, port: Number(new URL(url).port) };
}

/** GET /healthz every `everyMs` until stopped; counts `status/<body.status>`, and the times of each change. */
function pollHealth(url: string, t0: number, everyMs = 500) {
  const counts: Record<string, number> = {};
  const changes: { atMs: number; state: string }[] = [];
  let last = '';
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      let state: string;
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
        const b = (await res.json().catch(() => ({}))) as { status?: string; reason?: string };
        state = `${res.status} ${b.status ?? ''}${b.reason ? `/${b.reason}` : ''}`.trim();
      } catch {
        state = 'error';
      }
      counts[state] = (counts[state] ?? 0) + 1;
      if (state !== last) changes.push({ atMs: Math.round(performance.now() - t0), state });
      last = state;
      await sleep(everyMs);
    }
  })();
  return {
    counts,
    changes,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

function bodyMaker(payloads: Payloads, perRequest: number, offset: number): (k: number) => Body {
  return (k) => {
    const lines: Buffer[] = [];
    for (let j = 0; j < perRequest; j++) lines.push(recordBytes(payloads, offset + k * perRequest + j));
    return { lines, ids: lines.map((l) => contentHashId(l)) };
  };
}

/** The file sink's ids with multiplicity (content hash of each line, as `serve` computes it) and its lines that do not parse. */
async function fileSinkIds(path: string): Promise<{ ids: string[]; unparsable: number }> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ids: [], unparsable: 0 };
    throw e;
  }
  const ids: string[] = [];
  let unparsable = 0;
  let start = 0;
  while (start < buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    const line = buf.subarray(start, end);
    if (line.length > 0) {
      try {
        JSON.parse(line.toString('utf8'));
        ids.push(contentHashId(line));
      } catch {
        unparsable++;
      }
    }
    start = end + 1;
  }
  return { ids, unparsable };
}

function fillFromLoad(r: CaseResult, load: OpenLoopResult, rep: ReconcileReport, sinkIdList: string[]): void {
  const inSink = new Set(sinkIdList);
  let ackedNotInSink = 0;
  for (const id of load.ackedIds) if (!inSink.has(id)) ackedNotInSink++;
  Object.assign(r, {
    produced: rep.produced,
    acknowledged: load.ackedIds.size,
    committed: rep.committed,
    deadLettered: rep.deadLettered,
    transientInDlq: rep.transientInDlq,
    missing: rep.missing,
    duplicated: rep.duplicated,
    unconsumed: 0,
    ackedNotInSink,
    statuses: load.statusCounts,
    firstAttemptStatuses: load.firstAttemptStatusCounts,
  });
  r.statusReasons = tally(load.requests.flatMap((q) => q.attempts.filter((a) => a.status !== 200).map((a) => `${a.status}${a.reason ? `/${a.reason}` : ''}`)));
}

function latencySummary(xs: number[]): { n: number; p50: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * (s.length - 1)))] : NaN);
  return { n: s.length, p50: Math.round(q(0.5)), p99: Math.round(q(0.99)), max: Math.round(s.length ? s[s.length - 1] : NaN) };
}

async function dlqEntries(spec: string, table?: string) {
  const d = await openConsumableDlq({ dlq: spec, table });
  try {
    return (await d.exists()) ? await d.pending() : [];
  } finally {
    await d.close();
  }
}

async function serveStopAndLedger(r: CaseResult, h: ServeHandle): Promise<void> {
  const alive = h.child.alive;
  const exit = await h.child.stop(60_000);
  r.exit = { code: exit.code, signal: exit.signal };
  r.ledger = ledgerOf(h.child);
  r.survived = alive && exit.code === 0 && balanced(r.ledger);
  r.maxRssMb = h.child.maxRssMb;
}

function countFaultLines(r: CaseResult, child: SluiceChild, faultAtAbs: number): void {
  r.faultLines = faultLines(child, faultAtAbs - child.t0);
  r.downLines = r.faultLines.filter((l) => /sink down/.test(l.text)).length;
  r.backLines = r.faultLines.filter((l) => /sink back/.test(l.text)).length;
}

/** Case 4: serve → PostgreSQL, 20 requests/s of 50 records, PostgreSQL stopped for 8 s. */
async function servePgCase(ctx: ExperimentContext, payloads: Payloads, dbUrl: string): Promise<CaseResult> {
  const r = emptyCase(4, 'serve → PostgreSQL, PostgreSQL stopped 8 s under 20 req/s × 50');
  const t0 = performance.now();
  const table = `chaos4_${randomBytes(3).toString('hex')}`;
  const durationMs = ctx.quick ? 24_000 : 40_000;
  let h: ServeHandle | null = null;
  let pgStop: { start: () => void } | null = null;
  try {
    h = await startServe(['--sink', dbUrl, '--table', table]);
    const health = pollHealth(h.url, t0);
    const loadT0 = performance.now();
    let faultAt = 0;
    let backAt = 0;
    const fault = (async () => {
      await sleep(durationMs * 0.25);
      faultAt = performance.now();
      pgStop = stopPostgres();
      await sleep(OUTAGE_MS);
      pgStop.start();
      pgStop = null;
      backAt = performance.now();
    })();
    const load = await openLoopIngest({ url: h.url, rps: 20, durationMs, retryDeadlineMs: durationMs + 60_000, body: bodyMaker(payloads, 50, 0) });
    await fault;
    await health.stop();
    // Caught up: the last first-attempt answer among requests sent before the sink came back.
    const lastAnswer = Math.max(...load.requests.filter((q) => loadT0 + q.intendedAtMs <= backAt).map((q) => loadT0 + q.attempts[q.attempts.length - 1].sentAtMs + q.attempts[q.attempts.length - 1].latencyMs));
    countFaultLines(r, h.child, faultAt);
    const backLine = h.child.lines.find((l) => /sink back/.test(l.text) && l.atMs + h!.child.t0 >= faultAt);
    r.outage = {
      what: 'PostgreSQL stopped (pg_ctlcluster stop), started 8 s later',
      startedAtMs: Math.round(faultAt - t0),
      downMs: Math.round(backAt - faultAt),
      sluiceSawBackAfterMs: backLine ? Math.round(backLine.atMs + h.child.t0 - backAt) : null,
      caughtUpAfterMs: Number.isFinite(lastAnswer) ? Math.max(0, Math.round(lastAnswer - backAt)) : null,
    };
    r.healthz = health.counts;
    await serveStopAndLedger(r, h);
    const sinkIdList = await sinkIds(dbUrl, table);
    const dlq = await dlqEntries(dbUrl, `${table}_dlq`);
    const rep = reconcileIds(load.producedIds, sinkIdList, dlq);
    fillFromLoad(r, load, rep, sinkIdList);
    const during = load.requests.filter((q) => loadT0 + q.intendedAtMs >= faultAt && loadT0 + q.intendedAtMs < backAt);
    r.extra = {
      healthzChanges: health.changes,
      requests: load.requests.length,
      gaveUp: load.requests.filter((q) => q.gaveUp).length,
      retried: load.requests.filter((q) => q.attempts.length > 1).length,
      latencyFirstAttemptMs: latencySummary(load.requests.map((q) => q.attempts[0].latencyMs)),
      latencyDuringOutageMs: latencySummary(during.map((q) => q.attempts[0].latencyMs)),
      outageFirstStatuses: tally(during.map((q) => String(q.attempts[0].status))),
    };
  } catch (e) {
    r.error = (e as Error).stack ?? String(e);
    ctx.log(`chaos case 4: ${(e as Error).message}`);
  } finally {
    if (pgStop) (pgStop as { start: () => void }).start();
    h?.child.kill9();
    await h?.child.exited;
    await dropTables(dbUrl, [table, `${table}_dlq`]);
  }
  r.elapsedMs = Math.round(performance.now() - t0);
  return r;
}

function tally(xs: string[]): Record<string, number> {
  const o: Record<string, number> = {};
  for (const x of xs) o[x] = (o[x] ?? 0) + 1;
  return o;
}

/** Case 5: serve → file sink on a small tmpfs filled up by the load, then space freed. */
async function serveDiskFullCase(ctx: ExperimentContext, payloads: Payloads): Promise<CaseResult> {
  const r = emptyCase(5, 'serve → file on a small tmpfs: disk full, then space freed');
  const t0 = performance.now();
  const mnt = join(ctx.workDir, 'tmpfs');
  // Room enough, once the ballast is deleted, for everything the load sends (full: 36,000
  // records ≈ 11 MB): the disk fills once, on purpose, and not again.
  const sizeBytes = 64 * 2 ** 20;
  let unmount: (() => void) | null = null;
  try {
    unmount = await mountTmpfs(mnt, sizeBytes);
  } catch (e) {
    r.runnable = false;
    r.reason = `cannot mount a tmpfs here (${(e as Error).message.split('\n')[0]}): needs root or CAP_SYS_ADMIN`;
    r.elapsedMs = Math.round(performance.now() - t0);
    return r;
  }
  let h: ServeHandle | null = null;
  try {
    // Leave ~2 MiB free (≈ 8 s of the load), so the disk fills soon after the load starts.
    const ballast = join(mnt, 'ballast');
    const st = await statfs(mnt);
    await writeFile(ballast, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 2 * 2 ** 20)));
    const dataDir = join(mnt, 'data');
    h = await startServe(['--data-dir', dataDir]);
    const health = pollHealth(h.url, t0);
    const loadT0 = performance.now();
    const durationMs = ctx.quick ? 24_000 : 36_000;
    let fullAt = 0;
    let freedAt = 0;
    const child = h.child;
    const fault = (async () => {
      // Full: Sluice says the sink is down (its line names the error), or 60 s without it.
      const deadline = performance.now() + durationMs - 8_000;
      while (performance.now() < deadline && !child.lines.some((l) => /sink down/.test(l.text))) await sleep(100);
      fullAt = performance.now();
      await sleep(5_000);
      await unlink(ballast);
      freedAt = performance.now();
    })();
    const load = await openLoopIngest({ url: h.url, rps: 20, durationMs, retryDeadlineMs: durationMs + 60_000, body: bodyMaker(payloads, 50, 0) });
    await fault;
    await health.stop();
    countFaultLines(r, h.child, fullAt);
    const backLine = h.child.lines.find((l) => /sink back/.test(l.text) && l.atMs + h!.child.t0 >= fullAt);
    const lastAnswer = Math.max(...load.requests.filter((q) => loadT0 + q.intendedAtMs <= freedAt).map((q) => loadT0 + q.attempts[q.attempts.length - 1].sentAtMs + q.attempts[q.attempts.length - 1].latencyMs));
    r.outage = {
      what: `disk full (tmpfs ${sizeBytes / 2 ** 20} MiB, ballast leaving 2 MiB), ballast deleted 5 s after Sluice said the sink was down`,
      startedAtMs: Math.round(fullAt - t0),
      downMs: Math.round(freedAt - fullAt),
      sluiceSawBackAfterMs: backLine ? Math.round(backLine.atMs + h.child.t0 - freedAt) : null,
      caughtUpAfterMs: Number.isFinite(lastAnswer) ? Math.max(0, Math.round(lastAnswer - freedAt)) : null,
    };
    r.healthz = health.counts;
    await serveStopAndLedger(r, h);
    const { ids, unparsable } = await fileSinkIds(join(dataDir, 'ingest.ndjson'));
    const dlq = await dlqEntries(join(dataDir, 'dlq.jsonl'));
    const rep = reconcileIds(load.producedIds, ids, dlq);
    fillFromLoad(r, load, rep, ids);
    r.unparsableLines = unparsable;
    r.extra = {
      healthzChanges: health.changes,
      requests: load.requests.length,
      gaveUp: load.requests.filter((q) => q.gaveUp).length,
      retried: load.requests.filter((q) => q.attempts.length > 1).length,
      enospcNamed: h.child.lines.filter((l) => /ENOSPC/.test(l.text)).length,
      latencyFirstAttemptMs: latencySummary(load.requests.map((q) => q.attempts[0].latencyMs)),
    };
  } catch (e) {
    r.error = (e as Error).stack ?? String(e);
    ctx.log(`chaos case 5: ${(e as Error).message}`);
  } finally {
    h?.child.kill9();
    await h?.child.exited;
    unmount?.();
  }
  r.elapsedMs = Math.round(performance.now() - t0);
  return r;
}

/** Case 6: slow clients against serve (file sink) while good requests continue. */
async function serveSlowClientsCase(ctx: ExperimentContext, payloads: Payloads): Promise<CaseResult> {
  const r = emptyCase(6, 'serve → file, slow clients (headers and bodies at 1 byte/s) beside good requests');
  const t0 = performance.now();
  let h: ServeHandle | null = null;
  const dataDir = join(ctx.workDir, 'slow-data');
  const headerConns = ctx.quick ? 1000 : 2000;
  const bodyConns = ctx.quick ? 32 : 64;
  const durationMs = ctx.quick ? 26_000 : 40_000;
  const attackFromMs = 3_000;
  const bodies = (['both', 'small', 'large'] as const).find((b) => b === ctx.args.slowBodies) ?? 'both';
  const attackMs = durationMs - 6_000;
  try {
    h = await startServe(['--data-dir', dataDir]);
    const loadT0 = performance.now();
    let attack: SlowClientsResult | null = null;
    const attacking = (async () => {
      await sleep(attackFromMs);
      attack = await slowClients({ port: h!.port, headerConns, bodyConns, durationMs: attackMs, bodies });
    })();
    const load = await openLoopIngest({ url: h.url, rps: 20, durationMs, retryDeadlineMs: durationMs + 60_000, body: bodyMaker(payloads, 50, 0) });
    await attacking;
    const a = attack as unknown as SlowClientsResult;
    await serveStopAndLedger(r, h);
    const { ids, unparsable } = await fileSinkIds(join(dataDir, 'ingest.ndjson'));
    const dlq = await dlqEntries(join(dataDir, 'dlq.jsonl'));
    const rep = reconcileIds(load.producedIds, ids, dlq);
    fillFromLoad(r, load, rep, ids);
    r.unparsableLines = unparsable;
    // Good requests whose intended send time fell inside the attack (after its 2 s ramp-up).
    const inAttack = load.requests.filter((q) => q.intendedAtMs >= attackFromMs + 2_000 && q.intendedAtMs < attackFromMs + attackMs);
    const lifetime = (kind: string) =>
      latencySummary(a.conns.filter((c) => c.kind === kind && c.closedAtMs !== null && !c.closedByUs).map((c) => c.closedAtMs! - c.openedAtMs));
    r.outage = null;
    r.extra = {
      attack: { headerConns, bodyConns, bodies, fromMs: attackFromMs, durationMs: attackMs, maxOpen: a.maxOpen, opened: a.conns.length, openFailures: a.openFailures },
      headerConnLifetimeMs: lifetime('headers'),
      smallBodyConnLifetimeMs: lifetime('body-small'),
      largeBodyConnLifetimeMs: lifetime('body-large'),
      slowAnswers: tally(a.conns.filter((c) => c.closedAtMs !== null && !c.closedByUs).map((c) => `${c.kind}:${c.status ?? 'closed-without-answer'}`)),
      goodInAttack: inAttack.length,
      goodInAttackFirst200: inAttack.filter((q) => q.attempts[0].status === 200).length,
      goodInAttackStatuses: tally(inAttack.map((q) => String(q.attempts[0].status))),
      latencyInAttackMs: latencySummary(inAttack.map((q) => q.attempts[0].latencyMs)),
      latencyOutsideAttackMs: latencySummary(load.requests.filter((q) => !inAttack.includes(q)).map((q) => q.attempts[0].latencyMs)),
      gaveUp: load.requests.filter((q) => q.gaveUp).length,
    };
    void loadT0;
  } catch (e) {
    r.error = (e as Error).stack ?? String(e);
    ctx.log(`chaos case 6: ${(e as Error).message}`);
  } finally {
    h?.child.kill9();
    await h?.child.exited;
    await rm(dataDir, { recursive: true, force: true });
  }
  r.elapsedMs = Math.round(performance.now() - t0);
  return r;
}

// ------------------------------------------------------------------ checks and report

function caseChecks(c: CaseResult): Check[] {
  const p = `case ${c.id}`;
  if (!c.runnable) return [check(`${p}: runnable here (${c.reason})`, false, '==', true)];
  const out: Check[] = [check(`${p}: ran to the end without an error`, c.error === undefined, '==', true)];
  if (c.error !== undefined) return out;
  out.push(
    check(`${p}: records produced`, c.produced, '>', 0),
    check(`${p}: missing`, c.missing, '==', 0),
    check(`${p}: duplicated in the sink`, c.duplicated, '==', 0),
    check(`${p}: good records dead-lettered`, c.deadLettered + c.transientInDlq, '==', 0),
    check(`${p}: acknowledged but not in the sink`, c.ackedNotInSink, '==', 0),
    check(`${p}: not consumed at the end`, c.unconsumed, '==', 0),
  );
  if (c.unparsableLines !== undefined) out.push(check(`${p}: unparsable lines in the file sink`, c.unparsableLines, '==', 0));
  out.push(check(`${p}: the Sluice process survived (exit 0, ledger balanced)`, c.survived, '==', true));
  if (c.id === 1 || c.id === 4 || c.id === 5) {
    out.push(check(`${p}: one "sink down" line`, c.downLines, '==', 1), check(`${p}: one "sink back" line`, c.backLines, '==', 1));
  }
  if (c.id === 1 || c.id === 2) {
    // One process read the whole stream: its ledger counts each record id once, however many
    // times the broker delivered it (issue 19; redeliveries are counted apart).
    const accepted = Number(/accepted=(\d+)/.exec(c.ledger ?? '')?.[1] ?? NaN);
    out.push(check(`${p}: ledger accepted = records produced (a redelivery is not accepted twice)`, accepted, '==', c.produced));
  }
  if (c.id === 2) out.push(check(`${p}: one "NATS went down" line`, c.downLines, '==', 1), check(`${p}: one "NATS came back" line`, c.backLines, '==', 1));
  if (c.id === 4 || c.id === 5) {
    const degraded = Object.entries(c.healthz ?? {}).filter(([k]) => /^503 degraded/.test(k)).reduce((s, [, n]) => s + n, 0);
    out.push(check(`${p}: /healthz said 503 degraded during the outage (polls)`, degraded, '>=', 1));
    const gave = Number((c.extra?.gaveUp as number | undefined) ?? 0);
    out.push(check(`${p}: client requests given up`, gave, '==', 0));
  }
  if (c.id === 5) out.push(check(`${p}: Sluice named ENOSPC (log lines)`, Number(c.extra?.enospcNamed ?? 0), '>=', 1));
  if (c.id === 6) {
    const n = Number(c.extra?.goodInAttack ?? 0);
    const ok = Number(c.extra?.goodInAttackFirst200 ?? 0);
    out.push(check(`${p}: good requests sent during the attack`, n, '>', 0));
    out.push(check(`${p}: share of good requests answered 200 at first attempt during the attack`, n > 0 ? ok / n : 0, '>=', 0.99));
  }
  return out;
}

export const chaos: Experiment = {
  name: 'chaos',
  title: 'Chaos: outages, crashes, a full disk and slow clients, with nothing lost',
  description:
    'Faults injected into the real `sluice run` and `sluice serve` (child processes of the CLI) with the real PostgreSQL, NATS and disk: PostgreSQL stopped 8 s under `run` and under `serve` at 20 requests/s of 50 records; a NATS server killed and restarted under `run`; `run` killed with SIGKILL and restarted; `serve` filling a small tmpfs until ENOSPC, then space freed; thousands of slow clients beside good requests. Each case reconciles what was produced against the sink and the DLQ: nothing missing, nothing duplicated, no good record dead-lettered, every acknowledged record in the sink, the process alive.',
  async run(ctx) {
    const dbUrl = ctx.databaseUrl ?? process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
    const natsUrl = ctx.natsUrl ?? process.env.NATS_URL ?? DEFAULT_NATS;
    const payloads = loadPayloads(ctx.sharedDataDir, 60_000);
    const runRecords = ctx.quick ? 6_000 : 20_000;
    const runRate = ctx.quick ? 500 : 1_000;
    const only = typeof ctx.args.cases === 'string' ? new Set((ctx.args.cases as string).split(',').map(Number)) : null;
    const want = (id: number) => !only || only.has(id);
    const cases: CaseResult[] = [];
    const notRunnable = (id: number, name: string, reason: string) => ({ ...emptyCase(id, name), runnable: false, reason });
    const pgOk = pgIsReady();
    let natsOk = false;
    try {
      const nc = await connectNats(natsUrl, 2_000, null);
      await nc.close();
      natsOk = true;
    } catch {
      natsOk = false;
    }
    const step = (id: number, name: string) => ctx.log(`chaos: case ${id}: ${name}`);
    try {
      const runSpecs: RunCaseSpec[] = [
        { id: 1, name: 'run JetStream → PostgreSQL, PostgreSQL stopped 8 s', fault: 'pg-stop', sink: 'postgres', records: runRecords, rate: runRate, faultAt: 0.3 },
        { id: 2, name: 'run JetStream (own nats-server) → PostgreSQL, NATS SIGKILLed and restarted 8 s later', fault: 'nats-restart', sink: 'postgres', records: runRecords, rate: runRate, faultAt: 0.3 },
        { id: 3, name: 'run JetStream → file, `sluice run` SIGKILLed mid-stream and restarted', fault: 'kill9', sink: 'file', records: runRecords, rate: runRate, faultAt: 0.4, ackWaitMs: 10_000 },
      ];
      for (const s of runSpecs) {
        if (!want(s.id)) continue;
        step(s.id, s.name);
        if (!pgOk && s.sink === 'postgres') cases.push(notRunnable(s.id, s.name, `PostgreSQL not reachable at ${dbUrl}`));
        else if (s.fault === 'nats-restart' && !OwnNats.available()) cases.push(notRunnable(s.id, s.name, 'no /usr/sbin/nats-server to start a NATS of our own'));
        else if (s.fault !== 'nats-restart' && !natsOk) cases.push(notRunnable(s.id, s.name, `NATS not reachable at ${natsUrl}`));
        else cases.push(await runCase(ctx, s, payloads, dbUrl, natsUrl));
      }
      if (want(4)) {
        step(4, 'serve → PostgreSQL, PostgreSQL stopped 8 s');
        cases.push(pgOk ? await servePgCase(ctx, payloads, dbUrl) : notRunnable(4, 'serve → PostgreSQL', `PostgreSQL not reachable at ${dbUrl}`));
      }
      if (want(5)) {
        step(5, 'serve → file on a small tmpfs, disk full');
        cases.push(await serveDiskFullCase(ctx, payloads));
      }
      if (want(6)) {
        step(6, 'serve, slow clients');
        cases.push(await serveSlowClientsCase(ctx, payloads));
      }
    } finally {
      // Whatever happened above, the system PostgreSQL answers again before we leave.
      if (pgOk) ensurePostgresUpSync();
    }
    for (const c of cases) ctx.log(`chaos: case ${c.id}: ${c.runnable ? (c.error ? `ERROR ${c.error.split('\n')[0]}` : `produced=${c.produced} acked=${c.acknowledged} committed=${c.committed} dlq=${c.deadLettered} missing=${c.missing} dup=${c.duplicated} survived=${c.survived}`) : `not runnable: ${c.reason}`}`);
    return {
      payloadSource: payloads.source,
      outageMs: OUTAGE_MS,
      runRecords,
      runRatePerSec: runRate,
      cases,
      checks: cases.flatMap(caseChecks),
    };
  },
  cliOptions: [
    { flags: '--cases <list>', description: 'run only these cases, e.g. 1,4' },
    { flags: '--slow-bodies <which>', description: 'case 6: trickling bodies declared small (10 kB), large (1 MB) or both (default)' },
  ],
  markdown(result: ResultEnvelope): string {
    const cases = result.cases as CaseResult[];
    const s = (n: number | null | undefined) => (n === null || n === undefined ? '—' : (n / 1000).toFixed(1));
    const st = (o: Record<string, number> | undefined) => (o ? Object.entries(o).map(([k, v]) => `${k}×${v}`).join(' ') : '—');
    const rows = cases.map((c) =>
      c.runnable
        ? [
            `${c.id}. ${c.name}`,
            c.produced,
            c.acknowledged,
            c.committed,
            c.deadLettered + c.transientInDlq,
            c.missing,
            c.duplicated,
            c.ackedNotInSink,
            s(c.outage?.downMs),
            s(c.outage?.sluiceSawBackAfterMs),
            s(c.outage?.caughtUpAfterMs),
            st(c.statuses),
            c.maxRssMb,
            c.error ? `error: ${c.error.split('\n')[0]}` : c.survived ? 'yes' : `no (${c.exit?.code ?? c.exit?.signal})`,
          ]
        : [`${c.id}. ${c.name}`, '—', '—', '—', '—', '—', '—', '—', '—', '—', '—', '—', '—', `not runnable: ${c.reason}`],
    );
    const out = [
      `# Chaos (${result.quick ? 'quick' : 'full'})`,
      '',
      `Records: ${String(result.payloadSource)}; run cases: ${String(result.runRecords)} records at ${String(result.runRatePerSec)}/s; outages ${OUTAGE_MS / 1000} s.`,
      '',
      mdTable(
        ['case', 'produced', 'acked', 'committed', 'dead-lettered', 'missing', 'duplicated', 'acked ∉ sink', 'outage s', 'Sluice saw it back s', 'caught up s', 'HTTP statuses (all attempts)', 'max RSS MB', 'survived'],
        rows,
      ),
      '',
    ];
    for (const c of cases) {
      if (!c.runnable || c.error) continue;
      const bits: string[] = [];
      if (c.healthz) bits.push(`/healthz polls: ${st(c.healthz)}`);
      if (c.firstAttemptStatuses) bits.push(`first-attempt statuses: ${st(c.firstAttemptStatuses)}`);
      if (c.statusReasons) bits.push(`non-200 answers by reason: ${st(c.statusReasons)}`);
      if (c.unparsableLines !== undefined) bits.push(`unparsable lines: ${c.unparsableLines}`);
      if (c.ledger) bits.push(`ledger: ${c.ledger}`);
      if (c.extra) {
        for (const k of ['latencyFirstAttemptMs', 'latencyDuringOutageMs', 'latencyInAttackMs', 'latencyOutsideAttackMs', 'headerConnLifetimeMs', 'smallBodyConnLifetimeMs', 'largeBodyConnLifetimeMs', 'slowAnswers', 'goodInAttackStatuses', 'outageFirstStatuses', 'attack', 'retried', 'streamMessages', 'killedExit', 'producedAtKill'])
          if (c.extra[k] !== undefined) bits.push(`${k}: ${JSON.stringify(c.extra[k])}`);
      }
      bits.push(`Sluice's lines: ${c.faultLines.map((l) => `[${(l.atMs / 1000).toFixed(1)} s] ${l.text}`).join(' | ') || 'none'}`);
      out.push(`**Case ${c.id}.** ${bits.join('; ')}`, '');
    }
    return out.join('\n');
  },
};
