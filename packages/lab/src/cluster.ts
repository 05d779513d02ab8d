/**
 * Processes for the `scaleout` experiment and its integration test (issue 24): a JetStream
 * cluster of Debian's `nats-server` on loopback (one process per node, its own ports and
 * store directory, cluster routes), `sluice serve` / `sluice run` child processes, their CPU
 * time from /proc, and an open-loop HTTP client that resends until each record is
 * acknowledged.
 *
 * Cleanup: every process started here is registered in `LIVE`, and every NATS store
 * directory in `DIRS`. The caller's try/finally stops them; if it does not get to (an
 * exception that ends the process, Ctrl-C, SIGTERM), the process's 'exit' handler SIGKILLs
 * what is still running and removes the store directories, and SIGINT / SIGTERM / SIGHUP,
 * which would otherwise end Node without an 'exit' event, are turned into that exit. Ports
 * are asked of the kernel (bind to port 0), so the system NATS on 4222/6222/8222 is never
 * touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { connectNats } from 'sluice';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';

const LIVE = new Set<ChildProcess>();
const DIRS = new Set<string>();
let exitHookInstalled = false;

function killLeftovers(): void {
  for (const c of LIVE) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const d of DIRS) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      /* a node killed just now may still hold a file open: best effort */
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', killLeftovers);
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
  for (const [sig, code] of Object.entries(codes))
    process.once(sig as NodeJS.Signals, () => {
      process.stderr.write(`lab: ${sig}: stopping ${LIVE.size} child process(es), removing ${DIRS.size} NATS store dir(s)\n`);
      process.exit(code);
    });
}

function track(p: ChildProcess): void {
  installExitHook();
  LIVE.add(p);
  p.once('exit', () => LIVE.delete(p));
}

/** Free TCP ports on 127.0.0.1, distinct, none of the system NATS's. */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < n) {
      const s = net.createServer();
      await new Promise<void>((r, j) => s.once('error', j).listen(0, '127.0.0.1', () => r()));
      servers.push(s);
      const p = (s.address() as net.AddressInfo).port;
      if (![4222, 6222, 8222].includes(p)) ports.push(p);
    }
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
  return ports;
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), r(true)));
    s.once('error', () => (s.destroy(), r(false)));
  });
}

async function until<T>(what: string, timeoutMs: number, f: () => Promise<T | null | undefined | false>, everyMs = 100): Promise<T> {
  const t0 = performance.now();
  let last: unknown = null;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      if ((e as { fatal?: boolean }).fatal) throw e;
      last = e;
    }
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// ------------------------------------------------------------------ CPU

const CLK_TCK = 100;

/** CPU seconds (user + system) a live process used so far, from /proc/<pid>/stat; NaN once gone. */
export async function cpuSecondsOf(pid: number | undefined): Promise<number> {
  if (!pid) return NaN;
  try {
    const st = await readFile(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU seconds of every PostgreSQL server process on this machine (by /proc/<pid>/comm), pid → seconds. */
export async function postgresCpu(): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  const { readdir } = await import('node:fs/promises');
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if ((await readFile(`/proc/${d}/comm`, 'utf8')).trim() !== 'postgres') continue;
      out.set(Number(d), await cpuSecondsOf(Number(d)));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
export async function machineCpu(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = v[3] + (v[4] ?? 0);
  const total = v.reduce((a, x) => a + x, 0);
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK };
}

// ------------------------------------------------------------------ NATS cluster

export interface NatsNode {
  readonly name: string;
  readonly port: number;
  readonly routePort: number;
  readonly storeDir: string;
  readonly url: string;
  pid(): number | undefined;
  alive(): boolean;
  /** Starts (or restarts, same ports and store) and waits until it accepts clients. */
  start(): Promise<void>;
  /** kill -9. */
  kill9(): void;
  /** SIGTERM and wait (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

export interface NatsCluster {
  readonly nodes: NatsNode[];
  /** `nats://127.0.0.1:P1,nats://127.0.0.1:P2,…` for `--nats`. */
  readonly serverList: string;
  readonly urls: string[];
  connect(): Promise<NatsConnection>;
  /** The node leading `stream` (from stream info), or null while there is none. */
  streamLeader(nc: NatsConnection, stream: string): Promise<NatsNode | null>;
  /** Stops every node and removes the store directories. */
  stop(): Promise<void>;
}

export const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? 'nats-server';

/**
 * Starts `n` nats-server processes (JetStream on, own ports and store dirs under `dir`; with
 * n > 1 a cluster with routes to every other node) and waits until JetStream answers.
 */
export async function startNatsCluster(o: { nodes: number; dir: string; name?: string; log?: (l: string) => void }): Promise<NatsCluster> {
  const cname = o.name ?? `sluice_lab_${process.pid}`;
  installExitHook();
  DIRS.add(o.dir);
  const ports = await freePorts(o.nodes * 2);
  const nodes: NatsNode[] = [];
  const specs = Array.from({ length: o.nodes }, (_, i) => ({ name: `n${i + 1}`, port: ports[2 * i], routePort: ports[2 * i + 1], storeDir: join(o.dir, `n${i + 1}`) }));
  for (const sp of specs) {
    let proc: ChildProcess | null = null;
    const args = ['-a', '127.0.0.1', '-n', sp.name, '-p', String(sp.port), '-js', '-sd', sp.storeDir];
    if (o.nodes > 1)
      args.push(
        '--cluster_name', cname,
        '--cluster', `nats://127.0.0.1:${sp.routePort}`,
        '--routes', specs.filter((x) => x !== sp).map((x) => `nats://127.0.0.1:${x.routePort}`).join(','),
      );
    const node: NatsNode = {
      ...sp,
      url: `nats://127.0.0.1:${sp.port}`,
      pid: () => proc?.pid,
      alive: () => proc !== null && proc.exitCode === null && proc.signalCode === null,
      async start() {
        if (node.alive()) return;
        await mkdir(sp.storeDir, { recursive: true });
        const p = spawn(NATS_SERVER_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        track(p);
        proc = p;
        let err = '';
        p.stderr!.on('data', (d: Buffer) => {
          err = (err + d.toString()).slice(-4000);
        });
        p.once('error', (e) => (err += String(e)));
        await until(`nats-server ${sp.name} on ${sp.port}`, 15_000, async () => {
          if (p.exitCode !== null) throw Object.assign(new Error(`nats-server ${sp.name} exited ${p.exitCode}: ${err.slice(-500)}`), { fatal: true });
          return tcpOpen(sp.port);
        });
      },
      kill9() {
        proc?.kill('SIGKILL');
      },
      async stop() {
        const p = proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const gone = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(t);
      },
    };
    nodes.push(node);
  }
  const cluster: NatsCluster = {
    nodes,
    urls: nodes.map((n) => n.url),
    serverList: nodes.map((n) => n.url).join(','),
    connect: () => connectNats(nodes[0].url, 5_000, null, nodes.slice(1).map((n) => `127.0.0.1:${n.port}`)),
    async streamLeader(nc, stream) {
      const jsm = await jetstreamManager(nc);
      const i = await jsm.streams.info(stream);
      const leader = o.nodes > 1 ? i.cluster?.leader : nodes[0].name;
      return nodes.find((n) => n.name === leader) ?? null;
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
      await rm(o.dir, { recursive: true, force: true }).catch(() => {});
      if (!existsSync(o.dir)) DIRS.delete(o.dir);
    },
  };
  try {
    await Promise.all(nodes.map((n) => n.start()));
    // JetStream answers once the cluster elected its meta leader.
    const nc = await cluster.connect();
    try {
      await until('JetStream meta leader', 30_000, async () => (await (await jetstreamManager(nc)).getAccountInfo()) !== null, 250);
    } finally {
      await nc.close();
    }
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  o.log?.(`nats cluster ${cname}: ${nodes.map((n) => `${n.name}@${n.port}`).join(', ')}`);
  return cluster;
}

// ------------------------------------------------------------------ sluice processes

/** The product's CLI entry (packages/sluice/bin/sluice.js), found upwards from this file (src or dist). */
export const SLUICE_BIN = (() => {
  let d = fileURLToPath(new URL('.', import.meta.url));
  for (let i = 0; i < 6; i++, d = resolve(d, '..')) if (existsSync(join(d, 'sluice', 'bin', 'sluice.js'))) return join(d, 'sluice', 'bin', 'sluice.js');
  throw new Error('packages/sluice/bin/sluice.js not found');
})();

export interface SluiceProc {
  readonly name: string;
  readonly args: string[];
  pid(): number | undefined;
  alive(): boolean;
  /** Lines written so far (stdout and stderr). */
  output(): string[];
  /** Sink and NATS outage lines (`sink down`, `sink back`, `NATS at … went down/came back`) with their arrival time, over every run. */
  readonly events: { at: number; line: string }[];
  /** (Re)starts it and waits for the line matching `ready`. */
  start(): Promise<void>;
  kill9(): void;
  /** SIGTERM; resolves with the exit code and the `ledger` line it printed, if any. */
  stop(timeoutMs?: number): Promise<{ code: number | null; ledger: LedgerLine | null }>;
  /** Ledger lines of every run of this process that ended cleanly. */
  readonly ledgers: LedgerLine[];
}

export interface LedgerLine {
  accepted: number;
  committed: number;
  dropped: number;
  deadLettered: number;
  inFlight: number;
  balanced: boolean;
  text: string;
}

/** Parses `accepted=… committed=… dropped=…(…) dead_lettered=… in_flight=… … balanced`. */
export function parseLedger(line: string): LedgerLine | null {
  const m = /accepted=(\d+) committed=(\d+) dropped=(\d+)(?:\([^)]*\))? dead_lettered=(\d+) in_flight=(\d+).*\b(balanced|UNBALANCED)/.exec(line);
  if (!m) return null;
  return { accepted: +m[1], committed: +m[2], dropped: +m[3], deadLettered: +m[4], inFlight: +m[5], balanced: m[6] === 'balanced', text: line.trim() };
}

export function sluiceProc(name: string, args: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): SluiceProc {
  let proc: ChildProcess | null = null;
  let lines: string[] = [];
  const ledgers: LedgerLine[] = [];
  const events: { at: number; line: string }[] = [];
  const self: SluiceProc = {
    name,
    args,
    ledgers,
    events,
    pid: () => proc?.pid,
    alive: () => proc !== null && proc.exitCode === null && proc.signalCode === null,
    output: () => lines,
    async start() {
      if (self.alive()) return;
      lines = [];
      const p = spawn(process.execPath, [SLUICE_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
      track(p);
      proc = p;
      let buf = '';
      const onData = (d: Buffer) => {
        buf += d.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          lines.push(line);
          if (/sink down|sink back|NATS at .* (went down|came back)/.test(line)) events.push({ at: Date.now(), line: line.slice(0, 300) });
          if (lines.length > 2000) lines.splice(0, 1000);
          buf = buf.slice(i + 1);
        }
      };
      p.stdout!.on('data', onData);
      p.stderr!.on('data', onData);
      await until(`${name} ready`, 30_000, async () => {
        if (p.exitCode !== null) throw Object.assign(new Error(`${name} exited ${p.exitCode}: ${lines.slice(-8).join(' | ')}`), { fatal: true });
        return lines.some((l) => ready.test(l));
      }, 50);
    },
    kill9() {
      proc?.kill('SIGKILL');
    },
    async stop(timeoutMs = 60_000) {
      const p = proc;
      if (!p || !self.alive()) return { code: p?.exitCode ?? null, ledger: null };
      const gone = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      const code = await gone;
      clearTimeout(t);
      let ledger: LedgerLine | null = null;
      for (const l of lines) ledger = parseLedger(l) ?? ledger;
      if (ledger) ledgers.push(ledger);
      return { code, ledger };
    },
  };
  return self;
}

/** The port a `sluice serve` child printed (`listening on http://127.0.0.1:PORT`). */
export function servedUrl(p: SluiceProc): string {
  for (const l of p.output()) {
    const m = /listening on (http:\/\/[^\s]+)/.exec(l);
    if (m) return m[1];
  }
  throw new Error(`${p.name}: no listening line`);
}

// ------------------------------------------------------------------ open-loop client

export interface ClientRecord {
  n: number;
  /** Intended arrival, epoch ms. */
  t: number;
}

export interface Attempt {
  /** Epoch ms the answer (or failure) came. */
  at: number;
  /** What the client saw: an HTTP status, or a connection error / timeout the balancer could not pass on. */
  status: number | 'error' | 'timeout';
  items: number;
}

/** How long a door that failed a connection is left out of the rotation (nginx's `fail_timeout` default). */
export const EJECT_MS = 10_000;

export interface LoadStats {
  offeredRequests: number;
  offeredItems: number;
  /** Items acknowledged (200 with every item committed). */
  ackedItems: number;
  attempts: Attempt[];
  /** Per acknowledged request: latency from intended arrival to the 200 (ms). */
  latenciesMs: number[];
  /** Acknowledgement times (epoch ms) and sizes, for per-second throughput. */
  acks: { at: number; items: number }[];
  /** Requests still not acknowledged when the client gave up. */
  unacked: number;
  /** Refused connections the balancer passed on to another door at once (epoch ms of each). */
  failedOver: number[];
}

/**
 * Open-loop load: request `i` is due at `t0 + i / ratePerSec × itemsPerRequest` whatever the
 * answers do (its latency counts from then). A request answered anything but 200 is resent
 * (same body: same record ids) after the Retry-After it was given (1 s by default), or after
 * 200 ms on a connection error, until acknowledged or `settle` gives up.
 *
 * The doors are reached the way docs/scale.md puts them, behind a load balancer, and the
 * client does that balancer's part the way nginx's upstream module does by default
 * (`proxy_next_upstream error`, `max_fails=1`, `fail_timeout=10s`): round robin over the
 * doors not marked failed; a refused connection (the request never left, so passing it on
 * is safe for a POST) goes to the next door at once, unseen by the client; any connection
 * error or timeout marks that door failed for `EJECT_MS`, so the requests after it go to the
 * others. A request that was in flight on a door that died is the client's: it sees the
 * error and resends. Without this, every request that drew the dead door waited 200 ms and
 * drew again with even odds until the door came back, which alone took ≈ 20% out of the
 * first second after a door kill (lab scaleout, the front-door recovery check).
 */
export class OpenLoopClient {
  readonly stats: LoadStats = { offeredRequests: 0, offeredItems: 0, ackedItems: 0, attempts: [], latenciesMs: [], acks: [], unacked: 0, failedOver: [] };
  /** Record numbers acknowledged to the client. */
  readonly acked = new Set<number>();
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private doors: string[];
  /** Door → epoch ms until which it is out of the rotation (it failed a connection). */
  private failedUntil = new Map<string, number>();
  private rr = 0;
  private seq = 0;
  private outstandingSet = new Set<Promise<void>>();
  private offerEnd = Infinity;
  private stopped = false;
  private pad: string;

  constructor(
    doors: string[],
    private readonly o: { itemsPerRequest: number; requestTimeoutMs?: number; padBytes?: number; prefix?: string },
  ) {
    this.doors = [...doors];
    this.pad = 'x'.repeat(o.padBytes ?? 100);
  }

  setDoors(doors: string[]): void {
    this.doors = [...doors];
    for (const d of this.failedUntil.keys()) if (!doors.includes(d)) this.failedUntil.delete(d);
  }

  /**
   * The next door in the rotation that is not marked failed and not in `tried`; when every
   * door is marked failed, the next one of them not yet tried (a balancer with no healthy
   * upstream still tries one rather than refuse); null when this request tried them all.
   */
  private pick(tried: Set<string>): string | null {
    const now = Date.now();
    const n = this.doors.length;
    let fallback: string | null = null;
    for (let k = 0; k < n; k++) {
      const d = this.doors[this.rr++ % n];
      if (tried.has(d)) continue;
      if ((this.failedUntil.get(d) ?? 0) <= now) return d;
      fallback ??= d;
    }
    return fallback;
  }

  /** Requests sent and not yet acknowledged (in flight, or waiting to be resent). */
  get outstanding(): number {
    return this.outstandingSet.size;
  }

  /** Ends the current `offer` now (no request due from now on is sent); returns the end time (epoch ms). */
  endOffer(): number {
    this.offerEnd = Math.min(this.offerEnd, Date.now());
    return this.offerEnd;
  }

  /** Offers `ratePerSec` items/s for `durationMs` (or until `endOffer`), returning when the last request was sent (not answered). */
  async offer(ratePerSec: number, durationMs: number): Promise<void> {
    const per = this.o.itemsPerRequest;
    const gapMs = (per / ratePerSec) * 1000;
    const t0 = Date.now();
    this.offerEnd = t0 + durationMs;
    const total = Math.floor(durationMs / gapMs);
    for (let i = 0; i < total && !this.stopped; i++) {
      const due = t0 + i * gapMs;
      if (due >= this.offerEnd) break;
      const wait = due - Date.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      if (due >= this.offerEnd) break;
      const recs: ClientRecord[] = [];
      for (let k = 0; k < per; k++) recs.push({ n: this.seq++, t: due });
      const body = recs.map((r) => JSON.stringify({ n: r.n, t: r.t, src: this.o.prefix ?? 'scaleout', pad: this.pad })).join('\n') + '\n';
      this.stats.offeredRequests++;
      this.stats.offeredItems += per;
      const p = this.deliver(body, recs, due).finally(() => this.outstandingSet.delete(p));
      this.outstandingSet.add(p);
    }
  }

  /** Waits until every request was acknowledged, or `deadlineMs` passed (then stops retrying). */
  async settle(deadlineMs: number): Promise<void> {
    const end = Date.now() + deadlineMs;
    while (this.outstandingSet.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    this.stopped = true;
    await Promise.allSettled([...this.outstandingSet]);
    this.agent.destroy();
  }

  private async deliver(body: string, recs: ClientRecord[], due: number): Promise<void> {
    for (;;) {
      const tried = new Set<string>();
      let r: Awaited<ReturnType<OpenLoopClient['post']>>;
      for (;;) {
        const door = this.pick(tried) ?? this.doors[this.rr++ % this.doors.length];
        tried.add(door);
        r = await this.post(door, body);
        if (r.status === 'refused' || r.status === 'error' || r.status === 'timeout') this.failedUntil.set(door, Date.now() + EJECT_MS);
        // Refused: nothing was sent, so the balancer passes it to the next door at once.
        if (r.status !== 'refused' || tried.size >= this.doors.length) break;
        this.stats.failedOver.push(Date.now());
      }
      const status = r.status === 'refused' ? 'error' : r.status;
      this.stats.attempts.push({ at: Date.now(), status, items: recs.length });
      if (r.status === 200) {
        const now = Date.now();
        for (const x of recs) this.acked.add(x.n);
        this.stats.ackedItems += recs.length;
        this.stats.latenciesMs.push(now - due);
        this.stats.acks.push({ at: now, items: recs.length });
        return;
      }
      if (this.stopped) {
        this.stats.unacked++;
        return;
      }
      const backoff = typeof status === 'number' ? (r.retryAfterS ?? 1) * 1000 : 200;
      await new Promise((res) => setTimeout(res, backoff));
      if (this.stopped) {
        this.stats.unacked++;
        return;
      }
    }
  }

  private post(door: string, body: string): Promise<{ status: number | 'error' | 'timeout' | 'refused'; retryAfterS?: number }> {
    return new Promise((resolve) => {
      const u = new URL('/ingest', door);
      const req = http.request(
        { host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent: this.agent, headers: { 'content-type': 'application/x-ndjson', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.once('end', () => resolve({ status: res.statusCode ?? 0, retryAfterS: res.headers['retry-after'] ? Number(res.headers['retry-after']) : undefined }));
          res.once('error', () => resolve({ status: 'error' }));
        },
      );
      req.setTimeout(this.o.requestTimeoutMs ?? 30_000, () => {
        req.destroy();
        resolve({ status: 'timeout' });
      });
      req.once('error', (e: NodeJS.ErrnoException) => resolve({ status: e.code === 'ECONNREFUSED' ? 'refused' : 'error' }));
      req.end(body);
    });
  }
}

/** p-quantile of a list (nearest rank). */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
