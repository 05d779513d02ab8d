/**
 * Case 5's moving parts, shared by its two ladders (case5-front-door.ts): a server under test
 * (`sluice serve`, or the bare `node:http` server of case5-bare-server.ts) started in a fresh
 * process, the request bodies of each route, and one open-loop step against a server.
 *
 * A step sends each request at a fixed intended time (rate ÷ records per body), on any free
 * keep-alive socket of a pool (queued in the agent when all are busy), and times it from that
 * intended time to the end of the answer: a slow server is offered the same load, and its
 * queueing counts (no coordinated omission; autocannon's rate limit waits for a free
 * connection instead).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type pg from 'pg';
import { LatencyHistogram, type LatencySummary } from 'sluice';
import { RecordFactory } from '../../src/records/records.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const SLUICE_BIN = join(HERE, '..', '..', '..', '..', 'sluice', 'bin', 'sluice.js');
const BARE_SERVER = join(HERE, '..', 'case5-bare-server.js');
const NL = Buffer.from('\n');
const EMPTY = Buffer.alloc(0);
export const ROUTES = ['ingest', 'bulk', 'otlp', 'loki'] as const;
export type Route = (typeof ROUTES)[number];
const ROUTE_PATH: Record<Route, string> = { ingest: '/ingest', bulk: '/bench/_bulk', otlp: '/v1/logs', loki: '/loki/api/v1/push' };
const BULK_ACTION = Buffer.from('{"index":{}}\n');

export interface Step {
  offeredItemsPerSec: number;
  requests: number;
  committedItems: number;
  committedItemsPerSec: number;
  non2xx: number;
  failed: number;
  latencyMs: LatencySummary;
  /** The server's CPU (every thread, /proc schedstat) over the step ÷ the step's wall time: 1 = one core busy throughout. */
  serverBusy: number;
  pass: boolean;
}

/**
 * CPU time of every thread of `pid`, in µs: the sum of /proc/<pid>/task/<tid>/schedstat's first
 * field (ns on a CPU; Linux). /proc/<pid>/stat's utime + stime count 10 ms ticks, i.e. 0.5 µs
 * per item over a 10 s step at 2,000 items/s: too coarse for the live page's cost, whose
 * tolerance is the spread of repeated runs. Falls back to the ticks where schedstat is missing.
 * A thread that ended during the step takes its time with it (libuv's pool threads live on).
 */
export function cpuUsOf(pid: number): number {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // The thread ended between the listing and the read.
      }
    }
    if (ns > 0) return ns / 1000;
  } catch {
    // No task listing: the ticks below.
  }
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) * 10_000;
  } catch {
    return NaN;
  }
}

export interface ServerUnderTest {
  contender: 'sluice' | 'bare';
  child: ChildProcess;
  agent: http.Agent;
  hostname: string;
  port: number;
  /** What the sink holds: the table (PostgreSQL) or the NDJSON file. */
  table: string | null;
  file: string | null;
  dir: string;
  out: () => string;
  /** Items the answers said were committed, over the server's life (warm-up included). */
  committed: number;
}

export interface ServerOptions {
  contender: 'sluice' | 'bare';
  sink: 'file' | 'postgres';
  url: string;
  sockets: number;
  /** The bare server keeps the file sink's id index, as `sluice serve` writes it (default). */
  bareDedupe?: boolean;
  nodeArgs?: string[];
}

export async function startServer(o: ServerOptions): Promise<ServerUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), `sluice-bench5-${process.pid}-`));
  const table = o.sink === 'postgres' ? `bench_door_${o.contender}_${process.pid}` : null;
  const file = o.sink === 'file' ? join(dir, 'ingest.ndjson') : null;
  const args =
    o.contender === 'sluice'
      ? [SLUICE_BIN, 'serve', '--port', '0', ...(table ? ['--sink', o.url, '--table', table] : ['--data-dir', dir])]
      : [BARE_SERVER, ...(table ? ['--sink', 'postgres', '--url', o.url, '--table', table] : ['--sink', 'file', '--path', file!, ...(o.bareDedupe === false ? [] : ['--dedupe', 'true'])])];
  const child = spawn(process.execPath, [...(o.nodeArgs ?? []), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Whatever ends this process (an uncaught error included), the server goes with it.
  process.on('exit', () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = /listening on (http:\/\/[^\s]+)/.exec(out);
    if (m) {
      const { hostname, port } = new globalThis.URL(m[1]);
      const agent = new http.Agent({ keepAlive: true, maxSockets: o.sockets });
      return { contender: o.contender, child, agent, hostname, port: Number(port), table, file, dir, out: () => out, committed: 0 };
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${o.contender} server did not start: ${err.trim().split('\n').pop() ?? ''} ${out.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface StopResult {
  stored: number;
  ledgerLine: string | null;
  /** Sluice's ledger line says balanced; null for the bare server (it keeps none). */
  balanced: boolean | null;
}

/**
 * SIGTERM (the server drains), then checks the sink holds exactly the records the answers said
 * were committed: a server that answers "committed" for a record it lost fails the run.
 */
export async function stopServer(s: ServerUnderTest, db: pg.Client | null): Promise<StopResult> {
  s.agent.destroy();
  s.child.kill('SIGTERM');
  const [code] = (await once(s.child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${s.contender} server exited ${code}: ${s.out().trim().split('\n').pop()}`);
  const stored = db
    ? Number((await db.query<{ n: string }>(`SELECT count(*)::bigint AS n FROM "${s.table}"`)).rows[0].n)
    : readFileSync(s.file!).reduce((n, b) => n + (b === 10 ? 1 : 0), 0);
  if (stored !== s.committed) throw new Error(`${s.contender}: ${stored} records stored, answers said ${s.committed} committed`);
  const ledgerLine = /ledger (.*)$/m.exec(s.out())?.[1] ?? null;
  const balanced = s.contender === 'sluice' ? ledgerLine !== null && /\bbalanced\b/.test(ledgerLine) && !/UNBALANCED/.test(ledgerLine) : null;
  return { stored, ledgerLine, balanced };
}

/** Kills a server still running and removes what it wrote (its table, its directory). */
export async function cleanupServer(s: ServerUnderTest, db: pg.Client | null): Promise<void> {
  if (s.child.exitCode === null) s.child.kill('SIGKILL');
  if (db && s.table) {
    await db.query(`DROP TABLE IF EXISTS "${s.table}"`).catch(() => {});
    await db.query(`DROP TABLE IF EXISTS "${s.table}_dlq"`).catch(() => {});
  }
  rmSync(s.dir, { recursive: true, force: true });
}

export interface LoadOptions {
  route: Route;
  coding: 'gzip' | 'identity';
  perBody: number;
  sloMs: number;
  minRequests: number;
}

/** Request bodies of unique records (ids never collide across servers or steps) and the open-loop step. */
export class FrontDoorLoad {
  private readonly factory = new RecordFactory({ idPrefix: `d${process.pid}-` });
  private nextRecord = 0;

  constructor(private readonly o: LoadOptions) {}

  /** One request body of `perBody` records in the route's own protocol (JSON for OTLP and Loki). */
  private bodyOf(recs: Buffer[]): Buffer {
    switch (this.o.route) {
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

  private bodies(n: number): Buffer[] {
    const out: Buffer[] = new Array(n);
    for (let k = 0; k < n; k++) {
      const recs: Buffer[] = [];
      for (let j = 0; j < this.o.perBody; j++) recs.push(this.factory.make(this.nextRecord++, 0).raw!);
      const b = this.bodyOf(recs);
      out[k] = this.o.coding === 'gzip' ? gzipSync(b) : b;
    }
    return out;
  }

  private post(s: ServerUnderTest, body: Buffer): Promise<{ status: number; committed: number }> {
    const { route, coding, perBody } = this.o;
    return new Promise((resolve) => {
      const req = http.request(
        {
          agent: s.agent, hostname: s.hostname, port: s.port, method: 'POST', path: ROUTE_PATH[route],
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

  /**
   * One step against `s` at `itemsPerSec` for `ms`, and at least `minRequests` requests (a slow
   * step lasts longer), so that p99 is not just the slowest request of a few dozen. It passes
   * when every answer is 2xx with all its records committed and p99 ≤ the SLO.
   */
  async step(s: ServerUnderTest, itemsPerSec: number, ms: number): Promise<Step> {
    const { perBody, sloMs, minRequests } = this.o;
    const reqPerSec = itemsPerSec / perBody;
    const n = Math.max(minRequests, Math.round((reqPerSec * ms) / 1000));
    const bs = this.bodies(n);
    const latency = new LatencyHistogram();
    let non2xx = 0;
    let failed = 0;
    let committed = 0;
    let lastEnd = 0;
    const pending: Promise<void>[] = [];
    const cpu0 = cpuUsOf(s.child.pid!);
    const t0 = performance.now() + 5;
    const gap = 1000 / reqPerSec;
    let sent = 0;
    while (sent < n) {
      const now = performance.now();
      while (sent < n && t0 + sent * gap <= now) {
        const intended = t0 + sent * gap;
        pending.push(
          this.post(s, bs[sent]).then((r) => {
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
    const cpu1 = cpuUsOf(s.child.pid!);
    s.committed += committed;
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
      serverBusy: Math.round(((cpu1 - cpu0) / 1e6 / Math.max(seconds, 1e-3)) * 1000) / 1000,
      pass: non2xx === 0 && failed === 0 && summary.p99 <= sloMs,
    };
  }
}
