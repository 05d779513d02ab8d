/**
 * What the `chaos` experiment needs to break things and put them back: the system PostgreSQL
 * stopped and started, a NATS server of its own (killed with SIGKILL and restarted on the same
 * store), a small tmpfs, and `sluice` itself as a child process whose output lines are
 * timestamped and whose peak RSS (`VmHWM`) is sampled.
 *
 * Every fault registers its undo before it is done (`restorers`): the experiment's
 * try/finally runs it, and so do the process's `exit`, SIGINT, SIGTERM and uncaught-exception
 * handlers (synchronously), so a failing or interrupted lab never leaves PostgreSQL stopped, a
 * tmpfs mounted or a child running.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

// ------------------------------------------------------------------ restorers

type Undo = { name: string; run: () => void };
const undos = new Set<Undo>();
let handlersInstalled = false;

function runAllSync(): void {
  for (const u of [...undos].reverse()) {
    undos.delete(u);
    try {
      u.run();
    } catch (e) {
      process.stderr.write(`chaos: restoring ${u.name} failed: ${(e as Error).message}\n`);
    }
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', runAllSync);
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.on(sig, () => {
      runAllSync();
      process.exit(130);
    });
  process.on('uncaughtException', (e) => {
    runAllSync();
    process.stderr.write(`chaos: uncaught ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  });
}

/** Registers a synchronous undo; returns the function that runs it once (and unregisters it). */
export function restorer(name: string, run: () => void): () => void {
  installHandlers();
  const u: Undo = { name, run };
  undos.add(u);
  return () => {
    if (!undos.delete(u)) return;
    run();
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    let ok = false;
    try {
      ok = await cond();
    } catch {
      ok = false;
    }
    if (ok) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------------ system PostgreSQL

function pgCluster(): { version: string; name: string } {
  const versions = existsSync('/etc/postgresql') ? readdirSync('/etc/postgresql') : [];
  if (versions.length === 0) throw new Error('no /etc/postgresql/<version>: cannot stop/start the system PostgreSQL here');
  return { version: versions.sort()[versions.length - 1], name: 'main' };
}

function pgCtl(action: 'start' | 'stop'): void {
  const c = pgCluster();
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', c.version, c.name, action], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
}

export function pgIsReady(): boolean {
  try {
    execFileSync('pg_isready', ['-h', '127.0.0.1', '-p', '5432', '-t', '1'], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

/** Synchronous: start the cluster unless it already answers, then wait (≤ 60 s) for pg_isready. */
export function ensurePostgresUpSync(): void {
  if (pgIsReady()) return;
  try {
    pgCtl('start');
  } catch {
    // "already running" is fine; pg_isready below decides
  }
  const t0 = Date.now();
  while (!pgIsReady()) {
    if (Date.now() - t0 > 60_000) throw new Error('PostgreSQL did not come back within 60 s');
    execFileSync('sleep', ['0.2']);
  }
}

/**
 * Stops the system PostgreSQL (fast shutdown: connections are cut, as in a restart) and
 * returns the undo. The undo is registered before the stop, so it runs whatever happens next.
 */
export function stopPostgres(): { start: () => void } {
  const undo = restorer('system PostgreSQL', ensurePostgresUpSync);
  pgCtl('stop');
  return { start: undo };
}

// ------------------------------------------------------------------ a NATS server of our own

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => res(p));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** nats-server -js on its own port and store directory, never the system one. */
export class OwnNats {
  private child: ChildProcess | null = null;
  private undo: (() => void) | null = null;
  constructor(
    readonly port: number,
    readonly storeDir: string,
    readonly binary = '/usr/sbin/nats-server',
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static available(binary = '/usr/sbin/nats-server'): boolean {
    return existsSync(binary);
  }

  async start(): Promise<void> {
    await mkdir(this.storeDir, { recursive: true });
    const child = spawn(this.binary, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir], { stdio: 'ignore' });
    this.child = child;
    const pid = child.pid!;
    this.undo = restorer(`own nats-server :${this.port}`, () => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    await until(`nats-server on :${this.port}`, () => portOpen(this.port), 15_000, 50);
  }

  /** SIGKILL, as a crash; resolves once the process is gone. */
  async kill9(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
    this.undo?.();
    this.undo = null;
    this.child = null;
  }

  async stop(): Promise<void> {
    await this.kill9();
  }
}

// ------------------------------------------------------------------ tmpfs

/** Mounts a tmpfs of `sizeBytes` at `dir` (root only); returns its undo (lazy unmount). */
export async function mountTmpfs(dir: string, sizeBytes: number): Promise<() => void> {
  await mkdir(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
  return restorer(`tmpfs ${dir}`, () => execFileSync('umount', ['-l', dir], { stdio: 'ignore', timeout: 10_000 }));
}

// ------------------------------------------------------------------ sluice as a child process

/** packages/sluice/bin/sluice.js, found from this file (dist/src or src) or the working directory. */
export function sluiceBin(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const c of [resolve(here, '../../../sluice/bin/sluice.js'), resolve(here, '../../sluice/bin/sluice.js'), resolve('packages/sluice/bin/sluice.js')]) if (existsSync(c)) return c;
  throw new Error('cannot find packages/sluice/bin/sluice.js');
}

export interface Line {
  /** ms since the child was spawned */
  atMs: number;
  stream: 'stdout' | 'stderr';
  text: string;
}

function vmHwmKb(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+)\s*kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** `node packages/sluice/bin/sluice.js …` with its lines timestamped and its peak RSS sampled. */
export class SluiceChild {
  readonly child: ChildProcess;
  readonly lines: Line[] = [];
  readonly t0 = performance.now();
  readonly exited: Promise<{ code: number | null; signal: string | null; atMs: number }>;
  private peakKb = 0;
  private readonly sampler: NodeJS.Timeout;
  private readonly undo: () => void;
  private waiters: { re: RegExp; resolve: (l: Line) => void }[] = [];

  constructor(args: string[], opts: { cwd?: string } = {}) {
    this.child = spawn(process.execPath, [sluiceBin(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd });
    const pid = this.child.pid!;
    this.undo = restorer(`sluice child ${pid}`, () => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    });
    for (const stream of ['stdout', 'stderr'] as const) {
      let buf = '';
      this.child[stream]!.setEncoding('utf8');
      this.child[stream]!.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const text = buf.slice(0, i);
          buf = buf.slice(i + 1);
          const l: Line = { atMs: performance.now() - this.t0, stream, text };
          if (this.lines.length < 2000) this.lines.push(l);
          this.waiters = this.waiters.filter((w) => {
            if (!w.re.test(text)) return true;
            w.resolve(l);
            return false;
          });
        }
      });
    }
    this.sampler = setInterval(() => this.sample(), 200);
    this.exited = new Promise((res) =>
      this.child.once('exit', (code, signal) => {
        clearInterval(this.sampler);
        this.undo();
        res({ code, signal, atMs: performance.now() - this.t0 });
      }),
    );
  }

  private sample(): void {
    const kb = vmHwmKb(this.child.pid!);
    if (kb !== null && kb > this.peakKb) this.peakKb = kb;
  }

  /** Peak RSS (kernel VmHWM) seen so far, MB. */
  get maxRssMb(): number {
    this.sample();
    return Math.round((this.peakKb / 1024) * 10) / 10;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first line (already seen or future) matching `re`; rejects on exit or timeout. */
  waitFor(re: RegExp, timeoutMs: number): Promise<Line> {
    const seen = this.lines.find((l) => re.test(l.text));
    if (seen) return Promise.resolve(seen);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no line matching ${re} within ${timeoutMs} ms; output:\n${this.tail()}`)), timeoutMs);
      this.waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(t);
          res(l);
        },
      });
      void this.exited.then(() => {
        clearTimeout(t);
        rej(new Error(`sluice exited before a line matching ${re}; output:\n${this.tail()}`));
      });
    });
  }

  tail(n = 15): string {
    return this.lines
      .slice(-n)
      .map((l) => `${l.stream}: ${l.text}`)
      .join('\n');
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs: number): Promise<{ code: number | null; signal: string | null; atMs: number }> {
    if (this.alive) this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }

  kill9(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}
