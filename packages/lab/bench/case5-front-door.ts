/**
 * Case 5 — the front door: `sluice serve` (the CLI, defaults but the sink) against a bare
 * `node:http` server (case5-bare-server.ts) appending the same bodies to the same sink, both
 * driven by this process: an open-loop HTTP client (no autocannon: its rate limit waits for
 * a free connection, so a slow server would be offered less, coordinated omission).
 *
 * Each request is due at a fixed time (rate ÷ 100 records per body); it is sent then, on any
 * free keep-alive socket (a pool of `--sockets`, queued in the agent when all are busy), and
 * its latency runs from that intended time to the end of the answer (`ack: commit`: after the
 * request's records are committed). A ladder of steps raises the offered rate by `--factor`
 * each `--step-ms` (at least MIN_REQUESTS requests); a step passes when every request was answered 2xx with all its records
 * committed and p99 ≤ `--slo-ms`. A failing step is run once more; two failures in a row end the ladder; the result is the
 * last passing step's committed items/s. Every record is unique (the ids do not collide), and
 * at the end the sink is checked to hold exactly the records the answers said were committed.
 *
 *   node dist/bench/case5-front-door.js --contender sluice|bare --sink file|postgres --coding gzip|identity
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import pg from 'pg';
import { LatencyHistogram, type LatencySummary } from 'sluice';
import { RecordFactory } from '../src/records/records.js';
import { emit, main, num, parseArgs } from './lib/harness.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const SLUICE_BIN = join(HERE, '..', '..', '..', 'sluice', 'bin', 'sluice.js');
/** Requests per step, at least: p99 is then the 2nd-slowest of 200 or more. */
const MIN_REQUESTS = 200;
const NL = Buffer.from('\n');
const EMPTY = Buffer.alloc(0);
const URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const ROUTES = ['ingest', 'bulk', 'otlp', 'loki'] as const;
type Route = (typeof ROUTES)[number];
const ROUTE_PATH: Record<Route, string> = { ingest: '/ingest', bulk: '/bench/_bulk', otlp: '/v1/logs', loki: '/loki/api/v1/push' };
const BULK_ACTION = Buffer.from('{"index":{}}\n');

interface Step {
  offeredItemsPerSec: number;
  requests: number;
  committedItems: number;
  committedItemsPerSec: number;
  non2xx: number;
  failed: number;
  latencyMs: LatencySummary;
  pass: boolean;
}

/** /proc/<pid>/stat utime + stime, in µs (Linux; clock ticks of 10 ms). */
function cpuUsOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) * 10_000;
  } catch {
    return NaN;
  }
}

async function startServer(args: string[], nodeArgs: string[]): Promise<{ child: ChildProcess; url: string; out: () => string }> {
  const child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = /listening on (http:\/\/[^\s]+)/.exec(out);
    if (m) return { child, url: m[1], out: () => out };
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start: ${err.trim().split('\n').pop() ?? ''} ${out.trim()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

main(async () => {
  const a = parseArgs();
  // `--contender sluice-file-gzip` (as run.mjs names them), or `--contender sluice --sink file --coding gzip`.
  // `--contender sluice-file-gzip` (as run.mjs names them), with an optional suffix: a route
  // other than /ingest (`-bulk`, `-otlp`, `-loki`) or `-viewer` (one live-page viewer connected).
  const named = /^(sluice|bare)-(file|postgres)-(gzip|identity)(?:-(bulk|otlp|loki|viewer))?$/.exec(a.contender ?? '');
  const contender = named ? named[1] : (a.contender ?? 'sluice');
  const sinkKind = named ? named[2] : (a.sink ?? 'file');
  const coding = named ? named[3] : (a.coding ?? 'identity');
  const suffix = named?.[4];
  const route = (suffix && suffix !== 'viewer' ? suffix : (a.route ?? 'ingest')) as Route;
  const viewer = suffix === 'viewer' || a.viewer === 'true';
  if (!ROUTES.includes(route)) throw new Error(`unknown route ${route}: ${ROUTES.join(', ')}`);
  if (contender === 'bare' && (route !== 'ingest' || viewer)) throw new Error('the bare server has /ingest only and no live page');
  const perBody = num(a, 'records', 100);
  const sloMs = num(a, 'slo-ms', 20);
  const startRate = num(a, 'start-rate', 1_000);
  const factor = num(a, 'factor', 1.25);
  const stepMs = num(a, 'step-ms', 3_000);
  const minRequests = num(a, 'min-requests', MIN_REQUESTS);
  const maxSteps = num(a, 'max-steps', 30);
  const sockets = num(a, 'sockets', 64);
  if (!['sluice', 'bare'].includes(contender)) throw new Error(`unknown contender ${contender}: sluice, bare`);
  if (!['file', 'postgres'].includes(sinkKind)) throw new Error(`unknown sink ${sinkKind}: file, postgres`);
  if (!['gzip', 'identity'].includes(coding)) throw new Error(`unknown coding ${coding}: gzip, identity`);

  const dir = mkdtempSync(join(tmpdir(), `sluice-bench5-${process.pid}-`));
  const table = `bench_door_${contender}_${process.pid}`;
  const file = join(dir, 'ingest.ndjson');
  const serverArgs =
    contender === 'sluice'
      ? [SLUICE_BIN, 'serve', '--port', '0', ...(sinkKind === 'postgres' ? ['--sink', URL, '--table', table] : ['--data-dir', dir])]
      : [join(HERE, 'case5-bare-server.js'), ...(sinkKind === 'postgres' ? ['--sink', 'postgres', '--url', URL, '--table', table] : ['--sink', 'file', '--path', file, ...(a['bare-dedupe'] === 'false' ? [] : ['--dedupe', 'true'])])];
  const nodeArgs = a['cpu-prof-dir'] ? ['--cpu-prof', '--cpu-prof-dir', a['cpu-prof-dir']] : [];
  const db = sinkKind === 'postgres' ? new pg.Client({ connectionString: URL }) : null;
  // Another session's outage (a restarted server) must fail this run with a message, not crash it.
  db?.on('error', (e) => process.stderr.write(`postgres client: ${e.message}\n`));
  if (db) await db.connect();
  const srv = await startServer(serverArgs, nodeArgs);
  // Whatever ends this process (an uncaught error included), the server goes with it.
  process.on('exit', () => {
    if (srv.child.exitCode === null) srv.child.kill('SIGKILL');
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets });
  const { hostname, port } = new globalThis.URL(srv.url);
  const factory = new RecordFactory({ idPrefix: `d${process.pid}-` });
  let nextRecord = 0;

  /** One request body of `perBody` records in the route's own protocol (JSON for OTLP and Loki). */
  function bodyOf(recs: Buffer[]): Buffer {
    switch (route) {
      case 'ingest':
        return Buffer.concat(recs.flatMap((r) => [r, NL]));
      case 'bulk':
        return Buffer.concat(recs.flatMap((r) => [BULK_ACTION, r, NL]));
      case 'otlp':
        return Buffer.from(JSON.stringify({ resourceLogs: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'bench' } }] }, scopeLogs: [{ logRecords: recs.map((r, i) => ({ timeUnixNano: String(Date.now() * 1e6 + i), body: { stringValue: r.toString('utf8') } })) }] }] }));
      case 'loki':
        return Buffer.from(JSON.stringify({ streams: [{ stream: { job: 'bench' }, values: recs.map((r, i) => [String(Date.now() * 1e6 + i), r.toString('utf8')]) }] }));
    }
  }

  function bodies(n: number): Buffer[] {
    const out: Buffer[] = new Array(n);
    for (let k = 0; k < n; k++) {
      const recs: Buffer[] = [];
      for (let j = 0; j < perBody; j++) recs.push(factory.make(nextRecord++, 0).raw!);
      const b = bodyOf(recs);
      out[k] = coding === 'gzip' ? gzipSync(b) : b;
    }
    return out;
  }

  function post(body: Buffer): Promise<{ status: number; committed: number }> {
    return new Promise((resolve) => {
      const req = http.request(
        {
          agent, hostname, port, method: 'POST', path: ROUTE_PATH[route],
          headers: { 'content-type': route === 'otlp' || route === 'loki' ? 'application/json' : 'application/x-ndjson', 'content-length': body.length, ...(coding === 'gzip' ? { 'content-encoding': 'gzip' } : {}) },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (text += d));
          res.on('end', () => {
            // With --ack commit an answer is sent once its records are committed: /ingest says how
            // many; _bulk says per item (201); OTLP and Loki answer success only for the whole body.
            let committed = 0;
            const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;
            try {
              if (route === 'ingest') committed = Number(JSON.parse(text).committed) || 0;
              else if (route === 'bulk') committed = (JSON.parse(text) as { items: Record<string, { status: number }>[] }).items.filter((it) => Object.values(it)[0].status === 201).length;
              else if (route === 'otlp') committed = ok ? perBody - (Number(JSON.parse(text || '{}').partialSuccess?.rejectedLogRecords) || 0) : 0;
              else committed = ok ? perBody : 0;
            } catch {
              committed = 0;
            }
            resolve({ status: res.statusCode ?? 0, committed });
          });
        },
      );
      req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
      req.on('error', () => resolve({ status: 0, committed: 0 }));
      req.end(body);
    });
  }

  /** One step at `itemsPerSec` for `ms`: open loop, latency from each request's intended time. */
  async function step(itemsPerSec: number, ms: number): Promise<Step> {
    const reqPerSec = itemsPerSec / perBody;
    // At least MIN_REQUESTS per step (a slow step lasts longer), so that p99 is not just the
    // slowest request of a few dozen.
    const n = Math.max(minRequests, Math.round((reqPerSec * ms) / 1000));
    const bs = bodies(n);
    const latency = new LatencyHistogram();
    let non2xx = 0;
    let failed = 0;
    let committed = 0;
    let lastEnd = 0;
    const pending: Promise<void>[] = [];
    const t0 = performance.now() + 5;
    const gap = 1000 / reqPerSec;
    let sent = 0;
    while (sent < n) {
      const now = performance.now();
      while (sent < n && t0 + sent * gap <= now) {
        const intended = t0 + sent * gap;
        pending.push(
          post(bs[sent]).then((r) => {
            const end = performance.now();
            lastEnd = Math.max(lastEnd, end);
            latency.recordMs(end - intended);
            if (r.status === 0) failed++;
            else if (r.status < 200 || r.status >= 300) non2xx++;
            if (r.committed !== perBody) failed += r.status >= 200 && r.status < 300 ? 1 : 0;
            committed += r.committed;
          }),
        );
        bs[sent] = EMPTY;
        sent++;
      }
      const next = t0 + sent * gap - performance.now();
      await new Promise((r) => setTimeout(r, Math.max(0, Math.min(next, 50))));
    }
    await Promise.all(pending);
    const summary = latency.summary();
    const seconds = (lastEnd - t0) / 1000;
    return {
      offeredItemsPerSec: Math.round(itemsPerSec),
      requests: n,
      committedItems: committed,
      committedItemsPerSec: Math.round(committed / Math.max(seconds, ms / 1000)),
      non2xx,
      failed,
      latencyMs: summary,
      pass: non2xx === 0 && failed === 0 && summary.p99 <= sloMs,
    };
  }

  // One viewer of the live page (issue 25): an event-stream client like the page's own
  // EventSource, connected before the warm-up and for the whole ladder; it counts the
  // snapshots it receives (the design: at most one per second per viewer).
  let viewerEvents = 0;
  let viewerReq: http.ClientRequest | null = null;
  const viewerT0 = performance.now();
  if (viewer) {
    viewerReq = http.get({ hostname, port, path: '/live/events', headers: { accept: 'text/event-stream' } }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (d: string) => (viewerEvents += (d.match(/^data:/gm) ?? []).length));
    });
    viewerReq.on('error', () => {});
  }
  const steps: Step[] = [];
  let best: Step | null = null;
  let totalCommitted = 0;
  let cpu0 = NaN;
  let cpu1 = NaN;
  try {
    // Warm-up (not counted): the server's JIT, the sink's first writes, the sockets.
    const w = await step(startRate, stepMs);
    totalCommitted += w.committedItems;
    cpu0 = cpuUsOf(srv.child.pid!);
    let committedInLadder = 0;
    let rate = startRate;
    for (let s = 0; s < maxSteps; s++) {
      let r = await step(rate, stepMs);
      steps.push(r);
      totalCommitted += r.committedItems;
      committedInLadder += r.committedItems;
      if (!r.pass) {
        // One retry of a failing step: on a shared machine one descheduling of either
        // process can push a step's p99 past the SLO; two failures in a row end the ladder.
        r = await step(rate, stepMs);
        steps.push(r);
        totalCommitted += r.committedItems;
        committedInLadder += r.committedItems;
      }
      if (!r.pass) break;
      best = r;
      rate *= factor;
    }
    cpu1 = cpuUsOf(srv.child.pid!);
    const viewerSeconds = (performance.now() - viewerT0) / 1000;
    viewerReq?.destroy();
    const serverCpuUsPerItem = (cpu1 - cpu0) / Math.max(1, committedInLadder);
    agent.destroy();
    srv.child.kill('SIGTERM');
    const [code] = (await once(srv.child, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`server exited ${code}: ${srv.out().trim().split('\n').pop()}`);
    const stored = db
      ? Number((await db.query<{ n: string }>(`SELECT count(*)::bigint AS n FROM "${table}"`)).rows[0].n)
      : readFileSync(file).reduce((n, b) => n + (b === 10 ? 1 : 0), 0);
    if (stored !== totalCommitted) throw new Error(`${contender}: ${stored} records stored, answers said ${totalCommitted} committed`);
    const ledgerLine = /ledger (.*)$/m.exec(srv.out())?.[1] ?? null;
    const balanced = contender === 'sluice' ? ledgerLine !== null && /\bbalanced\b/.test(ledgerLine) && !/UNBALANCED/.test(ledgerLine) : null;
    emit({
      case: 'front-door',
      contender: `${contender}-${sinkKind}-${coding}${suffix ? `-${suffix}` : ""}`,
      items: best?.committedItems ?? 0,
      seconds: stepMs / 1000,
      itemsPerSec: best?.committedItemsPerSec ?? 0,
      cpuUsPerItem: serverCpuUsPerItem,
      peakRssMb: 0,
      baseRssMb: 0,
      latencyMs: best?.latencyMs ?? null,
      lost: 0,
      extra: {
        sink: sinkKind,
        coding,
        route,
        // perSec: snapshots after the first (sent on connect) per second connected.
        viewer: viewer ? { events: viewerEvents, seconds: Math.round(viewerSeconds * 10) / 10, perSec: Math.round((Math.max(0, viewerEvents - 1) / viewerSeconds) * 100) / 100 } : null,
        recordsPerBody: perBody,
        sloMs,
        bestOfferedItemsPerSec: best?.offeredItemsPerSec ?? 0,
        endedBy: steps.length > 0 && !steps[steps.length - 1].pass ? steps[steps.length - 1] : null,
        steps,
        stored,
        ledger: contender === 'sluice' ? { line: ledgerLine, balanced } : undefined,
      },
    });
  } finally {
    if (srv.child.exitCode === null) srv.child.kill('SIGKILL');
    if (db) {
      await db.query(`DROP TABLE IF EXISTS "${table}"`).catch(() => {});
      await db.query(`DROP TABLE IF EXISTS "${table}_dlq"`).catch(() => {});
      await db.end();
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

