/**
 * Child-process entry: open-loop HTTP load from a second process at a steady rate, with a
 * cycle of request kinds (e.g. three good batches then one bomb), counting answers per kind
 * and status. Used by the `bomb` experiment and by test/integration/serve.test.ts.
 *
 *   node --import tsx src/lab/mixed-load.ts '<json MixedLoadSpec>'   (or dist/src/lab/mixed-load.js)
 *
 * Prints one JSON line (MixedLoadResult) on stdout.
 *
 * Open loop, no coordinated omission: request i has an intended send time `start + i / rate`
 * fixed in advance, whatever the server does; its latency is measured from that intended time
 * to the last byte of the answer. A stalled server (or a stalled generator) therefore shows up
 * in the percentiles instead of slowing the load down. Requests share a keep-alive pool of
 * `connections` sockets; a request that finds them all busy waits for one, and that wait is
 * part of its latency. (autocannon, used before, is not open loop: with a rate set, each
 * connection sends back to back until its per-second quota is spent, then pauses until the next
 * second — a burst of `rate` requests at the top of every second — and its correction assumes
 * an expected interval of ⌈1/rate⌉ = 1 ms.)
 *
 * Besides the latency from the intended time, the result reports the generator's own lag
 * (actual send − intended send; the generator's overhead and event-loop delay, included in the
 * latency) and the service time (actual send → answer) per kind, to tell the two apart.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface MixedLoadSpec {
  url: string;
  durationSec: number;
  /** Keep-alive sockets at most (requests beyond wait for one, and the wait counts). */
  connections: number;
  /** Requests per second, all connections together, evenly spaced. */
  overallRate: number;
  /** Cycled in order. */
  requests: { kind: string; bodyFile: string; headers: Record<string, string> }[];
  timeoutSec?: number;
  /**
   * Before the schedule starts, one GET of this path (e.g. `/healthz`) per connection, not
   * counted: opens the sockets and warms the generator's own code paths, whose first use
   * otherwise delays the first measured requests (≈10–20 ms measured). @default none
   */
  warmupPath?: string;
  /**
   * Wall-clock time (Date.now(), ms) at which the schedule starts, after the warm-up: lets two
   * generators started together begin at the same moment, once both processes are up (their
   * start-up, ≈100–300 ms of CPU each, otherwise overlaps the other's first requests). A time
   * already past starts at once. @default at once
   */
  startAtMs?: number;
}

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
  n: number;
}

export interface MixedLoadResult {
  /** kind → status → count (status 0: no answer). */
  byKind: Record<string, Record<string, number>>;
  sent: number;
  answered: number;
  errors: number;
  /** What the unanswered requests (status 0) died of, by client error code. */
  errorCodes: Record<string, number>;
  timeouts: number;
  /** Every answered request, from its intended send time to the end of its answer (ms). */
  latencyMs: LatencySummary;
  /** The same, per kind. */
  latencyByKindMs: Record<string, LatencySummary>;
  /** Actual send − intended send (ms; < 0: sent up to 1 ms early): the generator's own delay, part of latencyMs. */
  sendLagMs: LatencySummary;
  /** Actual send → end of answer, per kind (ms): what the server (and the pool) took. */
  serviceByKindMs: Record<string, LatencySummary>;
  durationSec: number;
}

/** Exact percentiles (nearest rank) of a small sample, in ms with two decimals. */
export function summarize(values: number[]): LatencySummary {
  const a = [...values].sort((x, y) => x - y);
  const r = (x: number) => Math.round(x * 100) / 100;
  const at = (p: number) => (a.length === 0 ? 0 : r(a[Math.min(a.length - 1, Math.max(0, Math.ceil(p * a.length) - 1))]));
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1), mean: a.length === 0 ? 0 : r(a.reduce((s, x) => s + x, 0) / a.length), n: a.length };
}

const EARLY_MS = 1;

export async function runMixedLoad(spec: MixedLoadSpec): Promise<MixedLoadResult> {
  if (!(spec.overallRate > 0) || !(spec.durationSec > 0) || !(spec.connections >= 1)) throw new Error(`mixed-load: bad spec ${JSON.stringify(spec)}`);
  const u = new URL(spec.url);
  const timeoutMs = (spec.timeoutSec ?? 10) * 1000;
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections, scheduling: 'fifo' });
  const byKind: Record<string, Record<string, number>> = {};
  const latency: number[] = [];
  const latencyByKind: Record<string, number[]> = {};
  const service: Record<string, number[]> = {};
  const lag: number[] = [];
  const kinds = spec.requests.map((r) => {
    byKind[r.kind] ??= {};
    latencyByKind[r.kind] ??= [];
    service[r.kind] ??= [];
    const body = readFileSync(r.bodyFile);
    return { kind: r.kind, body, headers: { 'content-type': 'application/x-ndjson', ...r.headers, 'content-length': String(body.length) } };
  });
  let errors = 0;
  let timeouts = 0;
  /** Requests that got no answer, by the client's error code (ECONNRESET, EPIPE, timeout…): what status 0 was. */
  const errorCodes: Record<string, number> = {};
  let sent = 0;
  const count = (kind: string, status: number) => (byKind[kind][String(status)] = (byKind[kind][String(status)] ?? 0) + 1);

  const one = (i: number, intendedAt: number): Promise<void> =>
    new Promise((resolve) => {
      const k = kinds[i % kinds.length];
      let sentAt = NaN;
      let settled = false;
      const finish = (status: number, timedOut = false, code?: string) => {
        if (settled) return;
        settled = true;
        if (status === 0) errorCodes[timedOut ? 'timeout' : (code ?? 'unknown')] = (errorCodes[timedOut ? 'timeout' : (code ?? 'unknown')] ?? 0) + 1;
        clearTimeout(timer);
        const end = performance.now();
        count(k.kind, status);
        if (status === 0) {
          errors++;
          if (timedOut) timeouts++;
        } else {
          // From the intended send time, or from the actual one if it went out (< 1 ms) early:
          // never less than what the server and the pool really took.
          const from = Number.isNaN(sentAt) ? intendedAt : Math.min(intendedAt, sentAt);
          latency.push(end - from);
          latencyByKind[k.kind].push(end - from);
          if (!Number.isNaN(sentAt)) service[k.kind].push(end - sentAt);
        }
        resolve();
      };
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'POST', headers: k.headers, agent });
      // Counted from the intended send time: time waiting for a free socket is latency too.
      const timer = setTimeout(() => {
        req.destroy();
        finish(0, true);
      }, Math.max(1, intendedAt + timeoutMs - performance.now()));
      req.on('socket', (s) => {
        s.setNoDelay(true);
        const mark = () => {
          sentAt = performance.now();
          lag.push(sentAt - intendedAt);
        };
        // A pooled socket is connected already; a new one writes once connected.
        if ((s as unknown as { connecting: boolean }).connecting) s.once('connect', mark);
        else mark();
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => finish(res.statusCode ?? 0));
        res.on('error', (e: NodeJS.ErrnoException) => finish(0, false, e.code ?? e.message));
      });
      req.on('error', (e: NodeJS.ErrnoException) => finish(0, false, e.code ?? e.message));
      req.end(k.body);
    });

  if (spec.warmupPath) {
    const warm = () =>
      new Promise<void>((resolve) => {
        const req = http.get({ host: u.hostname, port: u.port, path: spec.warmupPath, agent }, (res) => res.resume().on('end', resolve).on('error', resolve));
        req.on('error', () => resolve());
      });
    await Promise.all(Array.from({ length: spec.connections }, warm));
  }
  const interval = 1000 / spec.overallRate;
  const total = Math.round(spec.durationSec * spec.overallRate);
  const inflight: Promise<void>[] = [];
  if (spec.startAtMs !== undefined && spec.startAtMs > Date.now()) await new Promise((r) => setTimeout(r, spec.startAtMs! - Date.now()));
  const start = performance.now() + 5;
  await new Promise<void>((done) => {
    let next = 0;
    const tick = () => {
      const now = performance.now();
      // Everything due (the timer may fire late: those requests keep their intended times).
      // libuv timers fire up to ≈1 ms late (ms clock, rounded-up poll timeout): wake up to
      // EARLY_MS before the intended time and send what is due by then, so that the generator
      // does not add that millisecond to every request (an early send is measured from when it
      // was actually sent, see above).
      while (next < total && start + next * interval <= now + EARLY_MS) {
        inflight.push(one(next, start + next * interval));
        sent++;
        next++;
      }
      if (next >= total) return done();
      setTimeout(tick, Math.max(0, start + next * interval - EARLY_MS - performance.now()));
    };
    setTimeout(tick, Math.max(0, start - performance.now()));
  });
  await Promise.all(inflight);
  const durationSec = Math.round((performance.now() - start) / 10) / 100;
  agent.destroy();
  const per = (m: Record<string, number[]>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, summarize(v)]));
  return {
    byKind,
    sent,
    answered: latency.length,
    errors,
    errorCodes,
    timeouts,
    latencyMs: summarize(latency),
    latencyByKindMs: per(latencyByKind),
    sendLagMs: summarize(lag),
    serviceByKindMs: per(service),
    durationSec,
  };
}

/** How to start this file as a child process, from source (tsx) or compiled. */
export function mixedLoadCommand(): { command: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  return { command: process.execPath, args: self.endsWith('.ts') ? ['--import', 'tsx', self] : [self] };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const spec = JSON.parse(process.argv[2] ?? '{}') as MixedLoadSpec;
  runMixedLoad(spec).then(
    (r) => process.stdout.write(JSON.stringify(r) + '\n'),
    (e) => {
      process.stderr.write(`mixed-load: ${(e as Error)?.stack ?? e}\n`);
      process.exit(1);
    },
  );
}
