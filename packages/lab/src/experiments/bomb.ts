/**
 * Experiment `bomb`: decompression bombs and oversized bodies against the capped HTTP front
 * door (`sluice serve`) and a naive server that decompresses whole bodies in memory.
 *
 * Every payload is built here, streaming (a 1 GiB expansion is never held in memory):
 * 1 GiB of zeros as gzip and as brotli, gzip inside gzip (sent as `gzip, gzip`), a single
 * 2 GiB line (generated while sent), a million tiny lines, 1 GiB of valid 1 KiB lines as gzip
 * (the one that reaches the decompressed-bytes cap itself), and a legitimate batch just
 * under the caps. Each (payload, variant) runs in a fresh child process under the same
 * memory limit (a cgroup made here as root; else V8's heap limit, recorded). Figures: status,
 * time to the answer, the child's peak RSS (kernel VmHWM, reset with clear_refs after warm-up)
 * over its baseline, survival, bytes read out of the decoder (from the server's own
 * counter), and whether a legitimate request right after the bomb succeeds. A load phase
 * then measures good-request latency (open-loop load from a second process, src/lab/mixed-load.ts,
 * from each request's intended send time) with and without bombs.
 */
import { NOISE_RUNS, REPS, interleaved, judge, noiseOf, type Noise } from '../protocol.js';
import { createInterface } from 'node:readline';
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import zlib from 'node:zlib';
import * as snappy from 'snappyjs';
import { check } from '../checks.js';
import { createMemoryLimit, type LimitMechanism, type MemoryLimit } from '../memlimit.js';
import { mdTable } from '../runner.js';
import type { ChartSpec, Check, Experiment, ExperimentContext, ResultEnvelope } from '../types.js';
import { mixedLoadCommand, type MixedLoadResult, type MixedLoadSpec } from '../mixed-load.js';
import { RecordFactory } from '../records/records.js';
import { SERVE_LIMIT_DEFAULTS, hashToken } from 'sluice';
import { bombChildCommand, type BombChildSpec } from './bomb-child.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/**
 * `unauthenticated`: the capped server with a tokens file (`sluice serve --tokens`), the
 * payload sent without a token: it must be refused (401) before any byte is decoded.
 * `authenticated`: the same server, the payload sent with a writer's token: the caps apply as
 * without auth.
 */
type Variant = 'capped' | 'naive' | 'unauthenticated' | 'authenticated';

/** Tokens of the authenticated server (lab-only secrets, written to the work dir as hashes). */
const LAB_WRITER_TOKEN = 'slk_lab-writer-0123456789abcdefghijklmnopqrstuv';
const LAB_OPS_TOKEN = 'slk_lab-ops-0123456789abcdefghijklmnopqrstuvwxyz';
/** Payloads also sent to the authenticated server with a token (the 1 GiB bombs). */
const AUTHENTICATED_PAYLOADS = new Set(['gzip-1GiB-zeros', 'br-1GiB-zeros', 'bulk-gzip-1GiB-zeros']);

interface BuiltPayload {
  name: string;
  description: string;
  kind: 'bomb' | 'legit';
  contentEncoding: string | null;
  /** Bytes on the wire (for the generated line: what would be sent in full). */
  compressedBytes: number;
  /** Bytes once every coding is undone. */
  expandedBytes: number;
  lines: number;
  /** Expected answer of the capped server. */
  expectStatus: number;
  expectCap: string | null;
  body: () => Readable;
  /** The door it is sent to (docs/serve.md). @default '/ingest' */
  path?: string;
  /** @default 'application/x-ndjson' */
  contentType?: string;
  /** The naive server only speaks /ingest: door payloads run against the capped one only. */
  cappedOnly?: boolean;
}

export interface BombCase {
  payload: string;
  variant: Variant;
  compressedBytes: number;
  expandedBytes: number;
  status: number;
  /** Time from the start of the request to the answer's status line (ms); null without an answer. */
  rejectMs: number | null;
  peakRssMb: number | null;
  baselineRssMb: number | null;
  /** Peak memory charged to the child's cgroup (MB), page cache included, when a cgroup was used. */
  cgroupPeakMb: number | null;
  survived: boolean;
  /** Capped: from the server's counter of bytes read out of decoders. Naive: the size it reported. */
  decompressedBytesRead: number | null;
  capHit: string | null;
  accepted: number | null;
  exit: string | null;
  oomKilled: boolean;
  /** Status of a legitimate request sent right after the payload (0 = no answer). */
  legitAfterStatus: number;
  error?: string;
}

// ---------------------------------------------------------------- payloads

/** `total` bytes of `unit` repeated, streamed in chunks of about `unit.length`. */
function repeatSource(total: number, unit: Buffer, prefix?: Buffer): Readable {
  let sent = 0;
  let first = prefix;
  return new Readable({
    read() {
      if (first) {
        this.push(first);
        sent += first.length;
        first = undefined;
        return;
      }
      if (sent >= total) return void this.push(null);
      const n = Math.min(unit.length, total - sent);
      sent += n;
      this.push(n === unit.length ? unit : unit.subarray(0, n));
    },
  });
}

async function compressTo(path: string, src: Readable, enc: zlib.Gzip | zlib.BrotliCompress): Promise<number> {
  await pipeline(src, enc, createWriteStream(path));
  return statSync(path).size;
}

/** Real NDJSON records (Zeek DNS logs from ../shared/data) or generated ones, as lines. */
function recordLines(ctx: ExperimentContext): { lines: Buffer[]; source: string } {
  const dns = ctx.sharedDataDir ? join(ctx.sharedDataDir, 'payloads/zeek-wrccdc/dns.json.gz') : null;
  if (dns && existsSync(dns)) {
    const text = zlib.gunzipSync(readFileSync(dns));
    const lines: Buffer[] = [];
    for (let s = 0, nl = text.indexOf(10); nl !== -1; s = nl + 1, nl = text.indexOf(10, s)) if (nl > s) lines.push(text.subarray(s, nl));
    return { lines, source: 'Zeek DNS logs (../shared/data/payloads/zeek-wrccdc/dns.json.gz, CC-BY-SA-4.0)' };
  }
  const f = new RecordFactory({ seed: 7 });
  return { lines: Array.from({ length: 60_000 }, (_, i) => f.make(i, 0).raw!), source: 'generated event records (RecordFactory)' };
}

async function buildPayloads(ctx: ExperimentContext, dir: string): Promise<{ payloads: BuiltPayload[]; goodSmall: string; recordsSource: string }> {
  const caps = SERVE_LIMIT_DEFAULTS;
  const zerosMiB = Buffer.alloc(MiB);
  const payloads: BuiltPayload[] = [];
  const fileBody = (p: string) => () => createReadStream(p, { highWaterMark: 64 * 1024 });

  ctx.progress.start('bomb: build payloads', 7);
  const gz = join(dir, 'zeros.gz');
  const gzBytes = await compressTo(gz, repeatSource(GiB, zerosMiB), zlib.createGzip({ level: 9 }));
  payloads.push({ name: 'gzip-1GiB-zeros', description: '1 GiB of zero bytes, gzip -9', kind: 'bomb', contentEncoding: 'gzip', compressedBytes: gzBytes, expandedBytes: GiB, lines: 1, expectStatus: 413, expectCap: 'line-bytes', body: fileBody(gz) });
  ctx.progress.tick(1, `gzip bomb ${gzBytes} B`);

  const br = join(dir, 'zeros.br');
  const brBytes = await compressTo(
    br,
    repeatSource(GiB, zerosMiB),
    zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5, [zlib.constants.BROTLI_PARAM_LGWIN]: 24 } }),
  );
  payloads.push({ name: 'br-1GiB-zeros', description: '1 GiB of zero bytes, brotli q5', kind: 'bomb', contentEncoding: 'br', compressedBytes: brBytes, expandedBytes: GiB, lines: 1, expectStatus: 413, expectCap: 'line-bytes', body: fileBody(br) });
  ctx.progress.tick(1, `brotli bomb ${brBytes} B`);

  const gzgz = join(dir, 'zeros.gz.gz');
  const gzgzBytes = await compressTo(gzgz, createReadStream(gz), zlib.createGzip({ level: 9 }));
  payloads.push({ name: 'gzip-in-gzip', description: 'the gzip bomb gzipped again, sent as "gzip, gzip"', kind: 'bomb', contentEncoding: 'gzip, gzip', compressedBytes: gzgzBytes, expandedBytes: GiB, lines: 1, expectStatus: 415, expectCap: null, body: fileBody(gzgz) });
  ctx.progress.tick(1, `gzip-in-gzip ${gzgzBytes} B`);

  const lineUnit = Buffer.alloc(MiB, 0x61);
  payloads.push({
    name: 'line-2GiB',
    description: 'one 2 GiB line (a JSON string never closed), identity, generated while sent',
    kind: 'bomb',
    contentEncoding: null,
    compressedBytes: 2 * GiB,
    expandedBytes: 2 * GiB,
    lines: 1,
    expectStatus: 413,
    expectCap: 'line-bytes',
    body: () => repeatSource(2 * GiB, lineUnit, Buffer.from('{"a":"')),
  });

  const million = join(dir, 'million.gz');
  let i = 0;
  const millionSrc = new Readable({
    read() {
      if (i >= 1_000_000) return void this.push(null);
      const parts: string[] = [];
      for (let k = 0; k < 10_000; k++, i++) parts.push(`{"i":${i}}\n`);
      this.push(Buffer.from(parts.join('')));
    },
  });
  const millionBytes = await compressTo(million, millionSrc, zlib.createGzip({ level: 6 }));
  let millionExpanded = 0;
  for (let k = 0; k < 1_000_000; k++) millionExpanded += `{"i":${k}}\n`.length;
  payloads.push({ name: 'million-lines', description: '1,000,000 tiny JSON lines, gzip', kind: 'bomb', contentEncoding: 'gzip', compressedBytes: millionBytes, expandedBytes: millionExpanded, lines: 1_000_000, expectStatus: 413, expectCap: 'items', body: fileBody(million) });
  ctx.progress.tick(1, `million lines ${millionBytes} B`);

  const linesTotal = ctx.quick ? GiB / 4 : GiB;
  const kLine = Buffer.from(('{"pad":"' + '0'.repeat(1014) + '"}\n').repeat(1024));
  const gzl = join(dir, 'lines.gz');
  const gzlBytes = await compressTo(gzl, repeatSource(linesTotal, kLine), zlib.createGzip({ level: 6 }));
  payloads.push({
    name: `gzip-${linesTotal / GiB >= 1 ? '1GiB' : `${linesTotal / MiB}MiB`}-lines`,
    description: `${linesTotal / MiB} MiB of valid 1 KiB JSON lines, gzip: reaches the decompressed-bytes cap itself`,
    kind: 'bomb',
    contentEncoding: 'gzip',
    compressedBytes: gzlBytes,
    expandedBytes: linesTotal,
    lines: linesTotal / 1024,
    expectStatus: 413,
    expectCap: 'decompressed-bytes',
    body: fileBody(gzl),
  });
  ctx.progress.tick(1, `lines bomb ${gzlBytes} B`);

  // Legitimate: real records up to just under the decompressed cap (and the item cap).
  const { lines, source } = recordLines(ctx);
  const budget = caps.maxDecompressedBytes - 64 * 1024;
  const chosen: Buffer[] = [];
  let bytes = 0;
  for (let k = 0; chosen.length < caps.maxItemsPerRequest - 1; k++) {
    const l = lines[k % lines.length];
    if (bytes + l.length + 1 > budget) break;
    chosen.push(l, Buffer.from('\n'));
    bytes += l.length + 1;
  }
  const legitRaw = Buffer.concat(chosen);
  const legit = join(dir, 'legit.gz');
  writeFileSync(legit, zlib.gzipSync(legitRaw));
  payloads.push({
    name: 'legit-under-caps',
    description: `${chosen.length / 2} real records, ${(legitRaw.length / MiB).toFixed(2)} MiB decompressed (cap 16 MiB), gzip`,
    kind: 'legit',
    contentEncoding: 'gzip',
    compressedBytes: statSync(legit).size,
    expandedBytes: legitRaw.length,
    lines: chosen.length / 2,
    expectStatus: 200,
    expectCap: null,
    body: fileBody(legit),
  });
  // The same attacks, encoded for each front door (docs/serve.md, "Front doors").
  payloads.push({ name: 'bulk-gzip-1GiB-zeros', description: 'the 1 GiB gzip bomb as an Elasticsearch _bulk body', kind: 'bomb', contentEncoding: 'gzip', compressedBytes: gzBytes, expandedBytes: GiB, lines: 1, expectStatus: 413, expectCap: 'line-bytes', body: fileBody(gz), path: '/_bulk', cappedOnly: true });
  payloads.push({ name: 'otlp-gzip-1GiB-zeros', description: 'the 1 GiB gzip bomb as an OTLP/HTTP protobuf body', kind: 'bomb', contentEncoding: 'gzip', compressedBytes: gzBytes, expandedBytes: GiB, lines: 1, expectStatus: 413, expectCap: null, body: fileBody(gz), path: '/v1/logs', contentType: 'application/x-protobuf', cappedOnly: true });
  // Field 1 (resource_logs), length-delimited, declaring 2^28 bytes; 3 bytes follow.
  const lying = Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 2, 3]);
  payloads.push({ name: 'otlp-proto-lying-length', description: 'an OTLP protobuf whose length prefix claims 256 MiB, 9 bytes sent', kind: 'bomb', contentEncoding: null, compressedBytes: lying.length, expandedBytes: lying.length, lines: 1, expectStatus: 400, expectCap: null, body: () => Readable.from([lying]), path: '/v1/logs', contentType: 'application/x-protobuf', cappedOnly: true });
  // A snappy block whose length varint declares 4 GiB − 1, 7 bytes sent: refused on the length alone.
  const snappyLiar = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x61]);
  payloads.push({ name: 'loki-snappy-declares-4GiB', description: 'a Loki snappy block declaring 4 GiB, 7 bytes sent', kind: 'bomb', contentEncoding: null, compressedBytes: snappyLiar.length, expandedBytes: 2 ** 32 - 1, lines: 1, expectStatus: 413, expectCap: 'decompressed-bytes', body: () => Readable.from([snappyLiar]), path: '/loki/api/v1/push', contentType: 'application/x-protobuf', cappedOnly: true });
  const snappyBig = Buffer.from(snappy.compress(new Uint8Array(64 * MiB)));
  const snappyPath = join(dir, 'zeros-64MiB.snappy');
  writeFileSync(snappyPath, snappyBig);
  payloads.push({ name: 'loki-snappy-64MiB-zeros', description: 'a real snappy block of 64 MiB of zeros (expands past the 16 MiB cap)', kind: 'bomb', contentEncoding: null, compressedBytes: snappyBig.length, expandedBytes: 64 * MiB, lines: 1, expectStatus: 413, expectCap: 'decompressed-bytes', body: fileBody(snappyPath), path: '/loki/api/v1/push', contentType: 'application/x-protobuf', cappedOnly: true });

  const goodSmall = join(dir, 'good-100.gz');
  writeFileSync(goodSmall, zlib.gzipSync(Buffer.concat(lines.slice(0, 100).flatMap((l) => [l, Buffer.from('\n')]))));
  ctx.progress.tick(1, 'legit batch');
  ctx.progress.done();
  return { payloads, goodSmall, recordsSource: source };
}

// ---------------------------------------------------------------- children and requests

export interface Child {
  proc: ChildProcess;
  url: string;
  pid: number;
  exited: Promise<{ code: number | null; signal: string | null }>;
  stdout: string[];
}

export async function startChild(spec: BombChildSpec, limit: MemoryLimit): Promise<Child> {
  const { command, args } = bombChildCommand(spec);
  const [cmd, argv] = limit.wrap(command, args);
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  const ready = await new Promise<{ url: string; pid: number }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`bomb child did not start in 30 s: ${stderr}`)), 30_000);
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      stdout.push(line);
      try {
        const m = JSON.parse(line) as { ready?: boolean; url: string; pid: number };
        if (m.ready) {
          clearTimeout(t);
          resolve(m);
        }
      } catch {
        /* not ours */
      }
    });
    void exited.then((e) => reject(new Error(`bomb child exited (${e.code ?? e.signal}) before ready: ${stderr}`)));
  });
  return { proc, url: ready.url, pid: ready.pid, exited, stdout };
}

interface Answer {
  status: number;
  ms: number | null;
  json: Record<string, unknown> | null;
  error?: string;
}

/** Sends a streamed body; stops sending as soon as the answer arrives (a server that answered early wants no more). */
function send(url: string, body: Readable, contentEncoding: string | null, timeoutMs: number, path = '/ingest', contentType = 'application/x-ndjson', extraHeaders: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const finish = (a: Answer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      body.destroy();
      resolve(a);
    };
    const headers: Record<string, string> = { 'content-type': contentType, ...extraHeaders };
    if (contentEncoding) headers['content-encoding'] = contentEncoding;
    const req = http.request(`${url}${path}`, { method: 'POST', headers, agent: false });
    const timer = setTimeout(() => {
      req.destroy();
      finish({ status: 0, ms: null, json: null, error: `no answer in ${timeoutMs} ms` });
    }, timeoutMs);
    req.on('response', (res) => {
      const ms = performance.now() - t0;
      body.unpipe(req);
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        let json: Record<string, unknown> | null = null;
        try {
          json = JSON.parse(Buffer.concat(parts).toString()) as Record<string, unknown>;
        } catch {
          /* not JSON */
        }
        req.destroy();
        finish({ status: res.statusCode ?? 0, ms, json });
      });
      res.on('error', () => finish({ status: res.statusCode ?? 0, ms, json: null }));
    });
    req.on('error', (e) => finish({ status: 0, ms: null, json: null, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    body.on('error', () => {});
    body.pipe(req);
  });
}

function procStatusKb(pid: number, key: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function decompressedCounter(url: string, headers: Record<string, string> = {}): Promise<number | null> {
  try {
    const text = await (await fetch(`${url}/metrics`, { headers })).text();
    const m = /^sluice_http_decompressed_bytes_total(?:\{[^}]*\})? (\d+(?:\.\d+)?(?:e\+\d+)?)$/m.exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function healthy(url: string, headers: Record<string, string> = {}): Promise<boolean> {
  try {
    const r = await fetch(`${url}/healthz`, { headers, signal: AbortSignal.timeout(2000) });
    return r.status === 200;
  } catch {
    return false;
  }
}

const mb = (kb: number | null) => (kb === null ? null : Math.round((kb / 1024) * 10) / 10);

async function runCase(p: BuiltPayload, variant: Variant, limitMb: number, goodSmall: string, workDir: string, n: number, tokensFile: string): Promise<{ c: BombCase; mechanism: LimitMechanism; note?: string }> {
  const limit = createMemoryLimit(`sluice-bomb-${process.pid}-${n}`, limitMb);
  const dataDir = join(workDir, `data-${n}`);
  const withAuth = variant === 'unauthenticated' || variant === 'authenticated';
  const child = await startChild({ variant: variant === 'naive' ? 'naive' : 'capped', dataDir, ...(withAuth ? { serve: { auth: { tokensFile } } } : {}) }, limit);
  // With auth: legitimate requests carry the writer's token, /metrics and /healthz the ops token.
  const writer: Record<string, string> = withAuth ? { authorization: `Bearer ${LAB_WRITER_TOKEN}` } : {};
  const ops: Record<string, string> = withAuth ? { authorization: `Bearer ${LAB_OPS_TOKEN}` } : {};
  const payloadHeaders = variant === 'authenticated' ? writer : {};
  try {
    // Warm-up: one legitimate request, so the baseline includes the code paths' first use.
    await send(child.url, createReadStream(goodSmall), 'gzip', 10_000, undefined, undefined, writer);
    await sleep(200);
    let peakResetWorked = true;
    try {
      writeFileSync(`/proc/${child.pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
    } catch {
      peakResetWorked = false;
    }
    const baselineKb = procStatusKb(child.pid, 'VmRSS');
    const before = variant !== 'naive' ? await decompressedCounter(child.url, ops) : null;
    let lastHwm = procStatusKb(child.pid, 'VmHWM');
    const sampler = setInterval(() => {
      const h = procStatusKb(child.pid, 'VmHWM');
      if (h !== null) lastHwm = h;
    }, 10);
    const ans = await send(child.url, p.body(), p.contentEncoding, 60_000, p.path, p.contentType, payloadHeaders);
    await sleep(150);
    clearInterval(sampler);
    const h = procStatusKb(child.pid, 'VmHWM');
    if (h !== null) lastHwm = h;
    const alive = child.proc.exitCode === null && child.proc.signalCode === null && (await healthy(child.url, ops));
    const after = variant !== 'naive' && alive ? await decompressedCounter(child.url, ops) : null;
    const legit = alive ? await send(child.url, createReadStream(goodSmall), 'gzip', 10_000, undefined, undefined, writer) : { status: 0 };
    const exit = alive ? null : await Promise.race([child.exited.then((e) => `${e.code ?? ''}${e.signal ?? ''}`), sleep(2000).then(() => 'running')]);
    const c: BombCase = {
      payload: p.name,
      variant,
      compressedBytes: p.compressedBytes,
      expandedBytes: p.expandedBytes,
      status: ans.status,
      rejectMs: ans.ms === null ? null : Math.round(ans.ms * 10) / 10,
      peakRssMb: mb(lastHwm),
      baselineRssMb: mb(baselineKb),
      cgroupPeakMb: limit.maxUsageMb(),
      survived: alive,
      decompressedBytesRead:
        variant !== 'naive' ? (before !== null && after !== null ? after - before : null) : typeof ans.json?.decompressedBytes === 'number' ? (ans.json.decompressedBytes as number) : null,
      capHit: typeof ans.json?.cap === 'string' ? (ans.json.cap as string) : null,
      accepted: typeof ans.json?.accepted === 'number' ? (ans.json.accepted as number) : null,
      exit,
      oomKilled: limit.oomKills() > 0,
      legitAfterStatus: legit.status,
      ...(ans.error ? { error: ans.error } : {}),
      ...(peakResetWorked ? {} : { error: 'clear_refs refused: peak includes start-up' }),
    };
    return { c, mechanism: limit.mechanism, note: limit.note };
  } finally {
    if (child.proc.exitCode === null && child.proc.signalCode === null) {
      child.proc.kill('SIGTERM');
      await Promise.race([child.exited, sleep(5000)]);
      if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
    }
    await child.exited;
    await limit.remove();
  }
}

export function runLoad(spec: MixedLoadSpec): Promise<MixedLoadResult> {
  const { command, args } = mixedLoadCommand();
  return new Promise((resolve, reject) => {
    const p = spawn(command, [...args, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err = (err + d).slice(-2000)));
    p.on('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`mixed-load exited ${code}: ${err}`);
        resolve(JSON.parse(out) as MixedLoadResult);
      } catch (e) {
        reject(e);
      }
    });
  });
}

export interface BombLoad {
  goodRatePerSec: number;
  bombRatePerSec: number;
  durationSec: number;
  goodAlone: MixedLoadResult;
  goodUnderBombs: MixedLoadResult;
  bombs: MixedLoadResult;
  baselineRssMb: number | null;
  peakRssMb: number | null;
  survived: boolean;
  ledger: Record<string, unknown> | null;
  /** The interleaved repetitions (the fields above are the first), absent in results written before issue 20. */
  reps?: { aloneP99Ms: number[]; besideP99Ms: number[]; goodByKind: Record<string, number>[]; bombsByKind: { gzip: Record<string, number>; br: Record<string, number> }[] };
  /** p99 of NOISE_RUNS identical runs of the good load alone: the tolerance calibration. */
  noise?: Noise;
}

async function runLoadPhase(ctx: ExperimentContext, files: { good: string; gz: string; br: string }, limitMb: number): Promise<{ load: BombLoad; mechanism: LimitMechanism }> {
  const limit = createMemoryLimit(`sluice-bomb-${process.pid}-load`, limitMb);
  const child = await startChild({ variant: 'capped', dataDir: join(ctx.workDir, 'data-load') }, limit);
  try {
    const durationSec = ctx.quick ? 3 : 8;
    const goodRatePerSec = 50;
    const bombRatePerSec = 4;
    const good = (): MixedLoadSpec => ({
      url: `${child.url}/ingest`,
      durationSec,
      connections: 4,
      overallRate: goodRatePerSec,
      requests: [{ kind: 'good', bodyFile: files.good, headers: { 'content-encoding': 'gzip' } }],
      warmupPath: '/healthz',
    });
    await send(child.url, createReadStream(files.good), 'gzip', 10_000);
    await sleep(200);
    try {
      writeFileSync(`/proc/${child.pid}/clear_refs`, '5');
    } catch {
      /* peak then includes start-up */
    }
    const baselineKb = procStatusKb(child.pid, 'VmRSS');
    // Tolerance calibration, then the comparison as interleaved repetitions (docs/window.md,
    // *Verdicts on a noisy machine*): NOISE_RUNS identical runs of the good load alone, whose
    // p99 spread is the tolerance; then REPS × (alone, beside bombs), the same schedule each time.
    ctx.progress.start('bomb: load', NOISE_RUNS + 2 * REPS);
    const noiseRuns: MixedLoadResult[] = [];
    for (let k = 0; k < NOISE_RUNS; k++) {
      noiseRuns.push(await runLoad(good()));
      ctx.progress.tick(1, `calibration: good alone p99 ${noiseRuns[k].latencyMs.p99} ms`);
    }
    const besideBombs = async (): Promise<[MixedLoadResult, MixedLoadResult]> => {
      // Both generators start their schedules together, once both processes are up and warm.
      const startAtMs = Date.now() + 1500;
      return Promise.all([
        runLoad({ ...good(), startAtMs }),
        runLoad({
          url: `${child.url}/ingest`,
          durationSec,
          startAtMs,
          connections: 2,
          overallRate: bombRatePerSec,
          warmupPath: '/healthz',
          requests: [
            { kind: 'gzip-bomb', bodyFile: files.gz, headers: { 'content-encoding': 'gzip' } },
            { kind: 'br-bomb', bodyFile: files.br, headers: { 'content-encoding': 'br' } },
          ],
        }),
      ]);
    };
    const alone: MixedLoadResult[] = [];
    const beside: [MixedLoadResult, MixedLoadResult][] = [];
    await interleaved(['alone', 'beside'] as const, REPS, async (v, rep) => {
      if (v === 'alone') alone.push(await runLoad(good()));
      else beside.push(await besideBombs());
      ctx.progress.tick(1, `${v} #${rep + 1}: good p99 ${(v === 'alone' ? alone[rep] : beside[rep][0]).latencyMs.p99} ms`);
    });
    ctx.progress.done();
    const goodAlone = alone[0];
    const [goodUnderBombs, bombs] = beside[0];
    const peakKb = procStatusKb(child.pid, 'VmHWM');
    const survived = child.proc.exitCode === null && (await healthy(child.url));
    child.proc.kill('SIGTERM');
    await child.exited;
    let ledger: Record<string, unknown> | null = null;
    for (const l of child.stdout)
      try {
        const m = JSON.parse(l) as { ledger?: Record<string, unknown> };
        if (m.ledger) ledger = m.ledger;
      } catch {
        /* not ours */
      }
    return {
      load: {
        goodRatePerSec,
        bombRatePerSec,
        durationSec,
        goodAlone,
        goodUnderBombs,
        bombs,
        reps: { aloneP99Ms: alone.map((x) => x.latencyMs.p99), besideP99Ms: beside.map((x) => x[0].latencyMs.p99), goodByKind: beside.map((x) => x[0].byKind.good ?? {}), bombsByKind: beside.map((x) => ({ gzip: x[1].byKind['gzip-bomb'] ?? {}, br: x[1].byKind['br-bomb'] ?? {} })) },
        noise: noiseOf(noiseRuns.map((x) => x.latencyMs.p99)),
        baselineRssMb: mb(baselineKb),
        peakRssMb: mb(peakKb),
        survived,
        ledger,
      },
      mechanism: limit.mechanism,
    };
  } finally {
    if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
    await child.exited;
    await limit.remove();
  }
}

// ---------------------------------------------------------------- experiment

const total = (k: Record<string, number> | undefined) => Object.values(k ?? {}).reduce((a, b) => a + b, 0);
const only = (k: Record<string, number> | undefined, status: string) => total(k) > 0 && Object.keys(k ?? {}).every((s) => s === status);

export const bomb: Experiment = {
  name: 'bomb',
  title: 'Bombs: bounded decompression keeps the front door up',
  description:
    'Builds decompression bombs and oversized bodies in the lab (1 GiB of zeros as gzip and as brotli, gzip inside gzip, a 2 GiB line, ' +
    'a million tiny lines, 1 GiB of valid lines), the same attacks encoded for the other front doors (the gzip bomb as a _bulk and an OTLP body, ' +
    'an OTLP protobuf whose length lies, a Loki snappy block declaring 4 GiB and a real one expanding to 64 MiB) and a legitimate batch just under the caps, and sends each to the capped server ' +
    '(`sluice serve`) and to a naive server that decompresses whole bodies in memory, each in a fresh child under the same memory limit; ' +
    'every bomb also to the server with a tokens file (`--tokens`) without a token (401 before any byte is decoded: bytes read out of the decoder must be 0), the 1 GiB ones also with a token. ' +
    'Records status, time to the answer, peak RSS over baseline, survival and bytes read out of the decoder; then measures good-request ' +
    'latency from a second process with and without a stream of bombs.',
  cliOptions: [{ flags: '--bomb-limit-mb <n>', description: 'memory limit of each server child (MB)', defaultValue: '256' }],

  async run(ctx) {
    const limitMb = Number(ctx.args.bombLimitMb ?? 256);
    const caps = SERVE_LIMIT_DEFAULTS;
    const payloadDir = join(ctx.workDir, 'payloads');
    mkdirSync(payloadDir, { recursive: true });
    const { payloads, goodSmall, recordsSource } = await buildPayloads(ctx, payloadDir);

    const cases: BombCase[] = [];
    const mechanisms = new Set<string>();
    const notes = new Set<string>();
    // The authenticated server (sluice serve --tokens): every bomb without a token, the 1 GiB ones also with one.
    const tokensFile = join(ctx.workDir, 'tokens.json');
    writeFileSync(
      tokensFile,
      JSON.stringify({
        tokens: [
          { name: 'lab-writer', hash: hashToken(LAB_WRITER_TOKEN), routes: ['ingest', 'bulk', 'otlp', 'loki'] },
          { name: 'lab-ops', hash: hashToken(LAB_OPS_TOKEN), routes: ['metrics', 'healthz'] },
        ],
      }),
    );
    const variantsOf = (p: BuiltPayload): Variant[] => [
      'capped',
      ...(p.cappedOnly ? [] : (['naive'] as const)),
      ...(p.kind === 'bomb' ? (['unauthenticated'] as const) : []),
      ...(AUTHENTICATED_PAYLOADS.has(p.name) ? (['authenticated'] as const) : []),
    ];
    ctx.progress.start('bomb: payloads × variants', payloads.reduce((n, p) => n + variantsOf(p).length, 0));
    let n = 0;
    for (const p of payloads)
      for (const variant of variantsOf(p)) {
        const { c, mechanism, note } = await runCase(p, variant, limitMb, goodSmall, ctx.workDir, n++, tokensFile);
        mechanisms.add(mechanism);
        if (note) notes.add(note);
        cases.push(c);
        ctx.progress.tick(1, `${p.name} ${variant}: ${c.status} in ${c.rejectMs} ms, peak ${c.peakRssMb} MB${c.survived ? '' : ' (died)'}`);
      }
    ctx.progress.done();

    const { load, mechanism } = await runLoadPhase(
      ctx,
      { good: goodSmall, gz: join(payloadDir, 'zeros.gz'), br: join(payloadDir, 'zeros.br') },
      limitMb,
    );
    mechanisms.add(mechanism);

    const capMiB = caps.maxDecompressedBytes / MiB;
    const checks: Check[] = [];
    for (const p of payloads) {
      const c = cases.find((x) => x.payload === p.name && x.variant === 'capped')!;
      if (p.kind === 'bomb') {
        checks.push(check(`capped ${p.name}: status`, c.status, '==', p.expectStatus));
        if (p.expectCap) checks.push(check(`capped ${p.name}: cap named in the answer`, c.capHit ?? 'none', '==', p.expectCap));
        checks.push(check(`capped ${p.name}: time to reject (ms)`, c.rejectMs ?? Infinity, '<', 250));
        checks.push(check(`capped ${p.name}: peak RSS − baseline − cap (MB) ≤ 32`, (c.peakRssMb ?? Infinity) - (c.baselineRssMb ?? 0) - capMiB, '<=', 32));
        checks.push(
          check(`capped ${p.name}: bytes read out of the decoder ≤ cap + one chunk`, c.decompressedBytesRead ?? Infinity, '<=', caps.maxDecompressedBytes + caps.decoderChunkBytes),
        );
        checks.push(check(`capped ${p.name}: survived`, c.survived, '==', true));
        checks.push(check(`capped ${p.name}: a legitimate request right after succeeds`, c.legitAfterStatus, '==', 200));
      } else {
        checks.push(check(`capped ${p.name}: status`, c.status, '==', 200));
        checks.push(check(`capped ${p.name}: every line accepted`, c.accepted ?? -1, '==', p.lines));
        checks.push(check(`capped ${p.name}: survived`, c.survived, '==', true));
      }
    }
    for (const p of payloads.filter((x) => x.kind === 'bomb')) {
      const u = cases.find((x) => x.payload === p.name && x.variant === 'unauthenticated')!;
      checks.push(check(`unauthenticated ${p.name}: status`, u.status, '==', 401));
      checks.push(check(`unauthenticated ${p.name}: bytes read out of the decoder`, u.decompressedBytesRead ?? Infinity, '==', 0));
      checks.push(check(`unauthenticated ${p.name}: survived`, u.survived, '==', true));
      checks.push(check(`unauthenticated ${p.name}: a legitimate request (with its token) right after succeeds`, u.legitAfterStatus, '==', 200));
      const a = cases.find((x) => x.payload === p.name && x.variant === 'authenticated');
      if (a) {
        checks.push(check(`authenticated ${p.name}: status`, a.status, '==', p.expectStatus));
        checks.push(check(`authenticated ${p.name}: bytes read out of the decoder ≤ cap + one chunk`, a.decompressedBytesRead ?? Infinity, '<=', caps.maxDecompressedBytes + caps.decoderChunkBytes));
        checks.push(check(`authenticated ${p.name}: survived`, a.survived, '==', true));
      }
    }
    for (const name of ['gzip-1GiB-zeros', 'br-1GiB-zeros']) {
      const c = cases.find((x) => x.payload === name && x.variant === 'naive')!;
      checks.push(check(`naive ${name}: killed or crashed under ${limitMb} MB`, !c.survived, '==', true));
    }
    checks.push(check(`memory limit by cgroup (not only a V8 heap limit)`, [...mechanisms].every((m) => m === 'cgroup-v1' || m === 'cgroup-v2'), '==', true));
    const lr = load.reps!;
    const tolMs = load.noise!.mad;
    checks.push(check(`load: good requests all 200 alongside bombs, all ${lr.goodByKind.length} repetitions`, lr.goodByKind.every((k) => only(k, '200')), '==', true));
    checks.push(check(`load: bombs all 413, all ${lr.bombsByKind.length} repetitions`, lr.bombsByKind.every((k) => only(k.gzip, '413') && only(k.br, '413')), '==', true));
    checks.push(judge(`load: good-request p99 under bombs ≤ SLO (ms)`, lr.besideP99Ms, '<=', ctx.sloMs, { tolerance: tolMs, toleranceFrom: `MAD of p99 over ${NOISE_RUNS} identical runs of the good load alone`, unit: 'ms' }));
    checks.push(check('load: server survived', load.survived, '==', true));
    // Up to one request per connection is decoded at once (4 good + 2 bomb connections), each bounded by the cap.
    const loadConnections = 6;
    checks.push(
      check(`load: peak RSS − baseline (MB) ≤ ${loadConnections} connections × cap + 32`, (load.peakRssMb ?? Infinity) - (load.baselineRssMb ?? 0), '<=', loadConnections * capMiB + 32),
    );
    checks.push(
      judge(
        'load: good-request p99 with bombs ÷ without (same server, same rate; paired by repetition)',
        lr.besideP99Ms.map((b, i) => b / Math.max(1, lr.aloneP99Ms[i] ?? NaN)),
        '<=',
        2,
        { tolerance: 2 * load.noise!.relMad * 2, toleranceFrom: `2 × the relative MAD of p99 over ${NOISE_RUNS} identical runs of the good load alone, × 2` },
      ),
    );
    checks.push(check('load: ledger balanced after drain', load.ledger?.balanced === true, '==', true));

    return {
      limitMb,
      memoryLimit: [...mechanisms].join(','),
      memoryLimitNote: [...notes].join('; ') || undefined,
      caps: { ...caps },
      recordsSource,
      peakRssMethod: 'VmHWM from /proc/<pid>/status after resetting it with clear_refs=5 once warm (sampled every 10 ms while the request runs); cgroupPeakMb from memory.max_usage_in_bytes',
      payloads: payloads.map(({ body: _b, ...rest }) => rest),
      cases,
      load,
      checks,
    };
  },

  markdown(r: ResultEnvelope) {
    const cases = r.cases as BombCase[];
    const load = r.load as BombLoad;
    const f = (x: number | null, d = 1) => (x === null ? '—' : x.toFixed(d));
    const size = (b: number) => (b >= GiB ? `${(b / GiB).toFixed(2)} GiB` : b >= MiB ? `${(b / MiB).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);
    const head =
      `### bomb — caps ${(r.caps as { maxDecompressedBytes: number }).maxDecompressedBytes / MiB} MiB decompressed, ` +
      `${(r.caps as { maxLineBytes: number }).maxLineBytes / MiB} MiB per line, ${(r.caps as { maxItemsPerRequest: number }).maxItemsPerRequest} items; ` +
      `each server in its own child under ${r.limitMb} MB (${r.memoryLimit})${r.memoryLimitNote ? ` — ${r.memoryLimitNote}` : ''}\n\n`;
    const table = mdTable(
      ['payload', 'sent', 'expands to', 'variant', 'status', 'answer ms', 'baseline MB', 'peak MB', 'survived', 'decoded bytes read', 'cap', 'legit after'],
      cases.map((c) => [
        c.payload,
        size(c.compressedBytes),
        size(c.expandedBytes),
        c.variant,
        c.status === 0 ? `none${c.error ? ` (${c.error})` : ''}` : c.status,
        f(c.rejectMs),
        f(c.baselineRssMb),
        f(c.peakRssMb),
        c.survived ? 'yes' : `no${c.oomKilled ? ' (OOM-killed)' : c.exit ? ` (exit ${c.exit})` : ''}`,
        c.decompressedBytesRead === null ? '—' : c.decompressedBytesRead.toLocaleString('en-US'),
        c.capHit ?? '—',
        c.legitAfterStatus || '—',
      ]),
    );
    const lt = (name: string, x: MixedLoadResult) => [
      name,
      JSON.stringify(x.byKind),
      x.latencyMs.p50,
      x.latencyMs.p99,
      x.latencyMs.max,
      x.sendLagMs?.p99 ?? '—',
      x.errors,
    ];
    const loadTable = mdTable(
      ['load (open loop, second process)', 'answers by status', 'p50 ms', 'p99 ms', 'max ms', 'generator lag p99 ms', 'errors'],
      [lt(`good alone, ${load.goodRatePerSec}/s`, load.goodAlone), lt(`good, ${load.goodRatePerSec}/s, with bombs`, load.goodUnderBombs), lt(`bombs, ${load.bombRatePerSec}/s`, load.bombs)],
    );
    return (
      head +
      table +
      `\n\nLegitimate records: ${r.recordsSource}. Peak RSS: ${r.peakRssMethod}.\n\n` +
      `Load phase, ${load.durationSec} s per run, server baseline ${f(load.baselineRssMb)} MB, peak ${f(load.peakRssMb)} MB, ` +
      `SLO ${r.sloMs} ms. Latency from each request's intended send time (open loop, evenly spaced) to the end of ` +
      `its answer; the generator's own lag (actual − intended send) is part of it and shown apart:\n\n` +
      loadTable
    );
  },

  charts(r: ResultEnvelope): ChartSpec[] {
    const cases = r.cases as BombCase[];
    const order = [...new Set(cases.map((c) => c.payload))];
    const values = cases.map((c) => ({
      payload: c.payload,
      variant: c.variant,
      peakRssMb: c.peakRssMb ?? c.cgroupPeakMb ?? 0,
      outcome: c.survived ? `answered ${c.status}` : 'killed',
    }));
    return [
      {
        id: 'bomb-peak-rss',
        title: 'Peak RSS per payload: capped server vs naive server',
        caption:
          `Each bar is one server child under a ${r.limitMb} MB memory limit (${r.memoryLimit}, dashed). Faded: the child was killed; its bar is the last ` +
          'peak sampled before the kill (RSS counts shared pages of the node binary that the cgroup does not charge, so it can pass the limit).',
        spec: {
          $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
          width: 480,
          height: { step: 16 },
          layer: [
            {
              data: { values },
              mark: { type: 'bar', tooltip: true },
              encoding: {
                y: { field: 'payload', type: 'nominal', title: 'payload', sort: order },
                yOffset: { field: 'variant', sort: ['capped', 'naive', 'unauthenticated', 'authenticated'] },
                x: { field: 'peakRssMb', type: 'quantitative', title: 'peak RSS (MB)' },
                color: { field: 'variant', type: 'nominal', title: 'server', sort: ['capped', 'naive', 'unauthenticated', 'authenticated'] },
                opacity: { condition: { test: "datum.outcome === 'killed'", value: 0.4 }, value: 1 },
              },
            },
            {
              data: { values: [{ limit: r.limitMb }] },
              mark: { type: 'rule', strokeDash: [4, 4], color: 'firebrick' },
              encoding: { x: { field: 'limit', type: 'quantitative' } },
            },
          ],
        },
      },
    ];
  },
};
