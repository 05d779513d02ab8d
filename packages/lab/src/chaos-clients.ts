/**
 * The clients of the `chaos` experiment's `serve` cases.
 *
 * - `openLoopIngest`: well-behaved producers. Request k is due at `k / rps` s whatever happened
 *   to the earlier ones (open loop: latency counts from the intended send time). A 429, 503,
 *   408 or a connection error is retried after `Retry-After` (from the first line not
 *   accepted when the answer says the lines before it were committed), until a deadline.
 *   A record is *acknowledged* when an answer said it was committed: 200, a 207 that does not
 *   list its line, or the committed prefix of a 429/503.
 * - `slowClients`: connections that send their headers one byte a second, and bodies that
 *   trickle one byte a second, kept at a fixed count (a connection the server cuts is opened
 *   again) for a fixed time; each records how long it lived and what, if anything, it was answered.
 *
 * Loopback only.
 */
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { sleep } from './chaos-harness.js';

export interface Attempt {
  /** ms since the load started */
  sentAtMs: number;
  status: number | 'error' | 'timeout';
  /** ms from the request's intended send time (first attempt) or from this attempt's send (retries) */
  latencyMs: number;
  reason?: string;
}

export interface RequestLog {
  k: number;
  intendedAtMs: number;
  records: number;
  attempts: Attempt[];
  /** Records of this request acknowledged (committed, per the answers). */
  acked: number;
  /** Gave up at the deadline with records not acknowledged. */
  gaveUp: boolean;
}

export interface OpenLoopResult {
  requests: RequestLog[];
  ackedIds: Set<string>;
  producedIds: string[];
  /** Every answer, by status (retries included). */
  statusCounts: Record<string, number>;
  firstAttemptStatusCounts: Record<string, number>;
  elapsedMs: number;
}

export interface Body {
  lines: Buffer[];
  ids: string[];
}

interface Answer {
  status: number | 'error' | 'timeout';
  body: Record<string, unknown> | null;
  retryAfterS: number | null;
  /** errno-style code of a connection error (ECONNRESET, …). */
  code?: string;
}

function post(url: URL, agent: http.Agent, lines: Buffer[], timeoutMs: number): Promise<Answer> {
  const payload = Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
  return new Promise((resolve) => {
    let settled = false;
    const done = (a: Answer) => {
      if (!settled) {
        settled = true;
        resolve(a);
      }
    };
    const req = http.request(
      { host: url.hostname, port: url.port, path: '/ingest', method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson', 'content-length': payload.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let body: Record<string, unknown> | null = null;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
          } catch {
            body = null;
          }
          const ra = res.headers['retry-after'];
          done({ status: res.statusCode ?? 0, body, retryAfterS: ra !== undefined ? Number(ra) : null });
        });
        res.on('error', () => done({ status: 'error', body: null, retryAfterS: null }));
      },
    );
    req.setTimeout(timeoutMs, () => {
      req.destroy();
      done({ status: 'timeout', body: null, retryAfterS: null });
    });
    req.on('error', (e: NodeJS.ErrnoException) => done({ status: 'error', body: null, retryAfterS: null, code: e.code ?? e.message }));
    req.end(payload);
  });
}

const RETRYABLE = new Set<Answer['status']>([429, 503, 408, 'error', 'timeout']);

/**
 * Open-loop NDJSON producer with retries. `body(k)` gives request k's lines and their ids (the
 * ids the server's rule gives them). Stops sending new requests after `durationMs`; retries
 * until `retryDeadlineMs` (from the start).
 */
export async function openLoopIngest(opts: {
  url: string;
  rps: number;
  durationMs: number;
  retryDeadlineMs: number;
  body: (k: number) => Body;
  attemptTimeoutMs?: number;
  maxSockets?: number;
  /** Called with (ms since start) before request k is sent. */
  onTick?: (atMs: number, k: number) => void;
}): Promise<OpenLoopResult> {
  const url = new URL(opts.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 64 });
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const requests: RequestLog[] = [];
  const ackedIds = new Set<string>();
  const producedIds: string[] = [];
  const statusCounts: Record<string, number> = {};
  const firstCounts: Record<string, number> = {};
  const inFlight: Promise<void>[] = [];
  const total = Math.floor((opts.durationMs / 1000) * opts.rps);

  const one = async (k: number, intendedAtMs: number) => {
    const b = opts.body(k);
    producedIds.push(...b.ids);
    const log: RequestLog = { k, intendedAtMs, records: b.lines.length, attempts: [], acked: 0, gaveUp: false };
    requests.push(log);
    let from = 0; // index of the first line not yet acknowledged
    for (;;) {
      const sentAtMs = now();
      const a = await post(url, agent, b.lines.slice(from), opts.attemptTimeoutMs ?? 60_000);
      const first = log.attempts.length === 0;
      const latencyMs = now() - (first ? intendedAtMs : sentAtMs);
      log.attempts.push({ sentAtMs, status: a.status, latencyMs, reason: typeof a.body?.reason === 'string' ? a.body.reason : a.code });
      statusCounts[String(a.status)] = (statusCounts[String(a.status)] ?? 0) + 1;
      if (first) firstCounts[String(a.status)] = (firstCounts[String(a.status)] ?? 0) + 1;
      const sent = b.lines.length - from;
      if (a.status === 200) {
        for (let i = from; i < b.lines.length; i++) ackedIds.add(b.ids[i]);
        log.acked += sent;
        return;
      }
      if (a.status === 207) {
        const listed = new Set(((a.body?.errors as { line: number }[] | undefined) ?? []).map((e) => e.line));
        for (let i = from; i < b.lines.length; i++)
          if (!listed.has(i - from + 1)) {
            ackedIds.add(b.ids[i]);
            log.acked++;
          }
        return;
      }
      if (!RETRYABLE.has(a.status)) return; // 4xx other than 408/429: the request itself is refused; not retried
      // A committed prefix (429, or a 503 after a block timeout): lines before firstNotAcceptedLine.
      const fna = a.body?.firstNotAcceptedLine;
      const accepted = Number(a.body?.accepted ?? 0);
      const committed = Number(a.body?.committed ?? -1);
      if (typeof fna === 'number' && fna > 1 && accepted === fna - 1 && committed === accepted) {
        for (let i = from; i < from + accepted; i++) ackedIds.add(b.ids[i]);
        log.acked += accepted;
        from += accepted;
      }
      const waitMs = Math.max(200, (a.retryAfterS ?? 1) * 1000);
      if (now() + waitMs > opts.retryDeadlineMs) {
        log.gaveUp = true;
        return;
      }
      await sleep(waitMs);
    }
  };

  for (let k = 0; k < total; k++) {
    const due = (k * 1000) / opts.rps;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    opts.onTick?.(now(), k);
    inFlight.push(one(k, due));
  }
  await Promise.all(inFlight);
  agent.destroy();
  requests.sort((a, b) => a.k - b.k);
  return { requests, ackedIds, producedIds, statusCounts, firstAttemptStatusCounts: firstCounts, elapsedMs: now() };
}

// ------------------------------------------------------------------ slow clients

export interface SlowConn {
  kind: 'headers' | 'body-small' | 'body-large';
  openedAtMs: number;
  closedAtMs: number | null;
  /** Status line the server sent before closing, if any (e.g. 408). */
  status: number | null;
  bytesSent: number;
  /** Closed by us when the attack ended (not by the server). */
  closedByUs: boolean;
}

export interface SlowClientsResult {
  conns: SlowConn[];
  /** Highest number of attack connections open at once. */
  maxOpen: number;
  openFailures: number;
}

/**
 * Keeps `headerConns` connections sending request headers one byte a second and `bodyConns`
 * sending a body one byte a second (half declared 10 kB, half 1 MB), for `durationMs`. Connections are
 * opened `openPerTick` at a time (every 10 ms) so the attack ramps up in a second or two.
 */
export async function slowClients(opts: { port: number; headerConns: number; bodyConns: number; durationMs: number; openPerTick?: number; bodies?: 'both' | 'small' | 'large' }): Promise<SlowClientsResult> {
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const conns: SlowConn[] = [];
  const open = new Map<net.Socket, SlowConn>();
  let maxOpen = 0;
  let openFailures = 0;
  let stopping = false;
  const headerPrefix = Buffer.from('POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nX-Slow: ');
  // Two trickles: a body declared small (10 kB, under serve's SMALL_BODY_BYTES: read before it
  // takes a concurrency slot) and one declared large (1 MB: streamed, so it takes a slot at once).
  const bodyHeaders = (len: number) => Buffer.from(`POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: ${len}\r\n\r\n`);

  const connect = (kind: SlowConn['kind']) => {
    const c: SlowConn = { kind, openedAtMs: now(), closedAtMs: null, status: null, bytesSent: 0, closedByUs: false };
    conns.push(c);
    const s = net.connect(opts.port, '127.0.0.1');
    s.setNoDelay(true);
    let got = '';
    s.on('connect', () => {
      open.set(s, c);
      maxOpen = Math.max(maxOpen, open.size);
      const first = kind === 'headers' ? headerPrefix : Buffer.concat([bodyHeaders(kind === 'body-small' ? 10_000 : 1_000_000), Buffer.from('{')]);
      s.write(first);
      c.bytesSent += first.length;
    });
    s.on('data', (d: Buffer) => {
      if (c.status === null && got.length < 64) {
        got += d.toString('latin1');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(got);
        if (m) c.status = Number(m[1]);
      }
    });
    s.on('error', () => {
      if (!open.has(s) && c.closedAtMs === null) openFailures++;
    });
    s.on('close', () => {
      c.closedAtMs = now();
      c.closedByUs = stopping;
      open.delete(s);
      if (!stopping) setTimeout(() => !stopping && connect(kind), 100);
    });
  };

  // Ramp up.
  const want: SlowConn['kind'][] = [
    ...Array<SlowConn['kind']>(opts.bodies === 'large' ? 0 : opts.bodies === 'small' ? opts.bodyConns : Math.ceil(opts.bodyConns / 2)).fill('body-small'),
    ...Array<SlowConn['kind']>(opts.bodies === 'small' ? 0 : opts.bodies === 'large' ? opts.bodyConns : Math.floor(opts.bodyConns / 2)).fill('body-large'),
    ...Array<SlowConn['kind']>(opts.headerConns).fill('headers')];
  const per = opts.openPerTick ?? 50;
  for (let i = 0; i < want.length && now() < opts.durationMs; i += per) {
    for (const k of want.slice(i, i + per)) connect(k);
    await sleep(10);
  }
  // One byte a second on every open connection.
  const ticker = setInterval(() => {
    for (const [s, c] of open) {
      if (s.writable) {
        s.write(c.kind === 'headers' ? 'a' : ' ');
        c.bytesSent++;
      }
    }
  }, 1000);
  await sleep(Math.max(0, opts.durationMs - now()));
  stopping = true;
  clearInterval(ticker);
  for (const s of open.keys()) s.destroy();
  await sleep(200);
  return { conns, maxOpen, openFailures };
}
