import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import zlib from 'node:zlib';
import { SMALL_BODY_BYTES, SYNC_DECODE_BYTES, startServer, type RunningServer, type ServeOptions } from '../../packages/sluice/src/sources/http.js';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';
import { openDecoderCount } from '../../packages/sluice/src/codec/bounded-decode.js';
import { SlowSink } from '../../packages/sluice/src/sinks/memory.js';
import { compileJsonSchema } from '../../packages/sluice/src/codec/json-schema.js';
import { mixedLoadCommand, type MixedLoadResult, type MixedLoadSpec } from '../../packages/lab/src/mixed-load.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function scratch(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'sluice-serve-test-'));
  dirs.push(d);
  return d;
}

const LIMITS = { maxDecompressedBytes: 2 ** 20, maxCompressedBytes: 512 * 1024, maxLineBytes: 64 * 1024, maxItemsPerRequest: 1000, maxDepth: 16 };

/**
 * A file sink whose every write first waits `ms`, like a sink across a network: requests that
 * arrive while a batch is written then really do arrive during the write, however fast this
 * machine's disk syncs (an O_DSYNC write here can finish before the next request is parsed).
 */
class HeldFileSink<T> extends FileSink<T> {
  constructor(
    path: string,
    private readonly ms: number,
  ) {
    super({ path });
  }
  override async write(batch: Parameters<FileSink<T>['write']>[0]): Promise<void> {
    await new Promise((r) => setTimeout(r, this.ms));
    return super.write(batch);
  }
}

async function fileServer(extra: Partial<ServeOptions> = {}, holdMs = 0): Promise<{ srv: RunningServer; path: string }> {
  const path = join(await scratch(), 'ingest.ndjson');
  const sink = await (holdMs > 0 ? new HeldFileSink<unknown>(path, holdMs) : new FileSink<unknown>({ path })).open();
  const srv = await startServer({ sink, limits: LIMITS, ...extra });
  return { srv, path };
}

async function post(srv: RunningServer, body: Buffer | string, headers: Record<string, string> = {}) {
  const res = await fetch(`${srv.url}/ingest`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson', ...headers } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: JSON.parse(text) as Record<string, unknown> };
}

const lines = (n: number, from = 0) => Array.from({ length: n }, (_, i) => JSON.stringify({ i: from + i, msg: 'hello' })).join('\n') + '\n';

test('good bodies in every coding are accepted, committed and stored byte for byte', async () => {
  const { srv, path } = await fileServer();
  const sent: string[] = [];
  const enc = { identity: (b: Buffer) => b, gzip: zlib.gzipSync, deflate: zlib.deflateSync, br: zlib.brotliCompressSync } as const;
  let from = 0;
  for (const [coding, f] of Object.entries(enc)) {
    const body = lines(50, from);
    from += 50;
    sent.push(body);
    const r = await post(srv, f(Buffer.from(body)), coding === 'identity' ? {} : { 'content-encoding': coding });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.accepted, 50);
    assert.equal(r.json.committed, 50);
  }
  // blns strings travel unchanged.
  const blnsPath = resolve(process.cwd(), '../shared/data/poison/blns/blns.json');
  if (existsSync(blnsPath)) {
    const strings = JSON.parse(readFileSync(blnsPath, 'utf8')) as string[];
    const body = strings.map((s) => JSON.stringify({ s })).join('\n') + '\n';
    const r = await post(srv, zlib.gzipSync(body), { 'content-encoding': 'gzip' });
    assert.equal(r.status, 200, JSON.stringify(r.json).slice(0, 500));
    sent.push(body);
  }
  const ledger = await srv.close();
  assert.ok(ledger.balanced);
  assert.equal(ledger.inFlight, 0);
  assert.equal(ledger.committed, ledger.accepted);
  assert.equal(await readFile(path, 'utf8'), sent.join(''));
});

test("flush 'request' (default) answers without waiting for the window; concurrent requests share batches; 'window' waits for it", async () => {
  const window = { maxWaitMs: 400, maxItems: 10_000, maxBytes: 4 * 2 ** 20 };
  const queue = { maxItems: 20_000, maxBytes: 8 * 2 ** 20 };
  const { srv, path } = await fileServer({ window, queue }, 50);
  let t = performance.now();
  const one = await post(srv, lines(20));
  assert.equal(one.status, 200, JSON.stringify(one.json));
  assert.ok(performance.now() - t < 300, `answered after ${performance.now() - t} ms`);
  const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => post(srv, lines(20, 100 * (i + 1)))));
  assert.deepEqual(new Set(rs.map((r) => r.status)), new Set([200]));
  const stats = srv.pipeline.stats();
  assert.ok(stats.batches < 13, `${stats.batches} batches for 13 requests`);
  assert.equal(stats.flushReasons.time, 0);
  assert.ok((await srv.close()).balanced);
  assert.equal((await readFile(path, 'utf8')).trim().split('\n').length, 13 * 20);

  const w = await fileServer({ window, queue, flush: 'window' });
  t = performance.now();
  const r = await post(w.srv, lines(20));
  assert.equal(r.status, 200);
  assert.ok(performance.now() - t >= 390, `answered after ${performance.now() - t} ms`);
  assert.equal(w.srv.pipeline.stats().flushReasons.time, 1);
  assert.ok((await w.srv.close()).balanced);
  await assert.rejects(fileServer({ flush: 'soon' as never }), /flush/);
});

test('a small body is decoded at once; one that decodes past SYNC_DECODE_BYTES is streamed instead, with the same answer', async () => {
  const { srv, path } = await fileServer();
  const small = lines(100);
  const big = Array.from({ length: 800 }, (_, i) => JSON.stringify({ i, pad: 'p'.repeat(480) })).join('\n') + '\n';
  assert.ok(Buffer.byteLength(big) > SYNC_DECODE_BYTES && Buffer.byteLength(big) < LIMITS.maxDecompressedBytes);
  const sent: string[] = [];
  for (const [body, n] of [[small, 100], [big, 800]] as const)
    for (const [ce, z] of [['gzip', zlib.gzipSync], ['deflate', zlib.deflateSync]] as const) {
      const zipped = z(body);
      assert.ok(zipped.length <= SMALL_BODY_BYTES);
      const r = await post(srv, zipped, { 'content-encoding': ce });
      assert.equal(r.status, 200, JSON.stringify(r.json).slice(0, 300));
      assert.equal(r.json.committed, n);
      sent.push(body);
    }
  const m = await (await fetch(`${srv.url}/metrics`)).text();
  const counted = Number(/^sluice_http_decompressed_bytes_total(?:\{[^}]*\})? (\d+)/m.exec(m)?.[1]);
  assert.equal(counted, sent.reduce((a, b) => a + Buffer.byteLength(b), 0));
  assert.ok((await srv.close()).balanced);
  assert.equal(await readFile(path, 'utf8'), sent.join(''));
});

test('caps answer 413 with a JSON body naming the cap; codings 415; malformed 400', async () => {
  const { srv, path } = await fileServer();
  const tooBig = async (body: Buffer, headers: Record<string, string>, cap: string) => {
    const r = await post(srv, body, headers);
    assert.equal(r.status, 413, JSON.stringify(r.json));
    assert.equal(r.json.cap, cap);
    assert.equal(typeof r.json.limit, 'number');
    return r;
  };
  // Decompressed cap: 16 MiB of short lines as gzip (~50 KB) against a 1 MiB cap.
  const bomb = zlib.gzipSync(('{"pad":"' + 'x'.repeat(2000) + '"}\n').repeat(8_000));
  const r1 = await tooBig(bomb, { 'content-encoding': 'gzip' }, 'decompressed-bytes');
  assert.ok((r1.json.decompressedBytesRead as number) <= LIMITS.maxDecompressedBytes + 64 * 1024);
  await tooBig(zlib.brotliCompressSync(Buffer.alloc(8 * 2 ** 20), { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4 } }), { 'content-encoding': 'br' }, 'line-bytes');
  await tooBig(Buffer.alloc(600 * 1024, 0x61), {}, 'compressed-bytes');
  await tooBig(zlib.gzipSync(lines(1001)), { 'content-encoding': 'gzip' }, 'items');
  for (const [ce, reason] of [['gzip, gzip', 'stacked-encoding'], ['zstd', 'unknown-encoding']] as const) {
    const r = await post(srv, zlib.gzipSync(lines(1)), { 'content-encoding': ce });
    assert.equal(r.status, 415);
    assert.equal(r.json.reason, reason);
    assert.equal(r.json.error, 'SLUICE_UNSUPPORTED_ENCODING');
  }
  const gz = zlib.gzipSync(lines(100));
  const trunc = await post(srv, gz.subarray(0, gz.length - 10), { 'content-encoding': 'gzip' });
  assert.equal(trunc.status, 400);
  assert.equal(trunc.json.reason, 'truncated');
  const corrupt = await post(srv, Buffer.from('not gzip at all'), { 'content-encoding': 'gzip' });
  assert.equal(corrupt.status, 400);
  assert.equal(corrupt.json.reason, 'corrupt');
  const bad = await post(srv, 'nope\n{"a":\n');
  assert.equal(bad.status, 400);
  assert.equal(bad.json.reason, 'no-valid-items');
  assert.equal((await post(srv, '\n\n')).json.reason, 'empty');
  // No decoder left open by the bombs, the truncated or the corrupt bodies (same process).
  assert.equal(openDecoderCount(), 0);
  // Nothing from any refused request reached the sink; the server still serves.
  assert.equal((await post(srv, lines(3))).status, 200);

  const health = await fetch(`${srv.url}/healthz`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { status: string }).status, 'ok');
  const m = await (await fetch(`${srv.url}/metrics`)).text();
  for (const reason of ['decompressed-bytes', 'line-bytes', 'compressed-bytes', 'items', 'stacked-encoding', 'unknown-encoding', 'truncated', 'corrupt'])
    assert.match(m, new RegExp(`sluice_http_requests_rejected_total\\{[^}]*reason="${reason}"[^}]*\\} 1`), reason);
  assert.match(m, /sluice_http_items_rejected_total\{[^}]*reason="malformed-json"[^}]*\} 2/);
  assert.match(m, /sluice_http_decompressed_bytes_total\{[^}]*\} [1-9]/);
  assert.match(m, /sluice_http_compression_ratio_count\{[^}]*\} [1-9]/);
  assert.match(m, /sluice_items_committed_total\{[^}]*\} 3/);
  const ledger = await srv.close();
  assert.ok(ledger.balanced);
  assert.equal(ledger.accepted, 3);
  assert.equal((await readFile(path, 'utf8')).trim().split('\n').length, 3);
});

test('per-line mode keeps the good lines and reports the bad ones; all-or-nothing refuses the request', async () => {
  const body = ['{"ok":1}', 'not json', '{"ok":2}', '[1]', '{"deep":' + '['.repeat(40) + ']'.repeat(40) + '}', '{"ok":3}'].join('\n') + '\n';
  // A JSON Schema (as `--schema FILE` gives) that wants objects: `[1]` is refused by it.
  const check = compileJsonSchema({ type: 'object' });
  const a = await fileServer({ check });
  const r = await post(a.srv, body);
  assert.equal(r.status, 207);
  assert.equal(r.json.accepted, 3);
  assert.equal(r.json.committed, 3);
  assert.equal(r.json.rejected, 3);
  assert.deepEqual(
    (r.json.errors as { line: number; reason: string }[]).map((e) => [e.line, e.reason]),
    [
      [2, 'malformed-json'],
      [4, 'schema'],
      [5, 'too-deep'],
    ],
  );
  await a.srv.close();
  assert.equal((await readFile(a.path, 'utf8')).trim().split('\n').length, 3);

  const b = await fileServer({ mode: 'all-or-nothing', check });
  const r2 = await post(b.srv, body);
  assert.equal(r2.status, 400);
  assert.equal(r2.json.reason, 'all-or-nothing');
  assert.equal(r2.json.accepted, 0);
  assert.equal((r2.json.errors as unknown[]).length, 3);
  assert.equal((await post(b.srv, lines(5))).status, 200);
  const ledger = await b.srv.close();
  assert.equal(ledger.accepted, 5);
  assert.equal((await readFile(b.path, 'utf8')).trim().split('\n').length, 5);
});

test('backpressure: a block timeout answers 429 with Retry-After and says which lines were not accepted', async () => {
  const sink = new SlowSink({ fixedCostMs: 200 });
  const srv = await startServer({
    sink,
    limits: LIMITS,
    window: { maxItems: 10, maxWaitMs: 0 },
    queue: { maxItems: 10, maxBytes: 2 ** 20, policy: 'block', blockTimeoutMs: 30 },
    retryAfterSeconds: 2,
  });
  const r = await post(srv, lines(100));
  assert.equal(r.status, 429, JSON.stringify(r.json));
  assert.equal(r.headers.get('retry-after'), '2');
  assert.equal(r.json.error, 'SLUICE_QUEUE_FULL');
  const accepted = r.json.accepted as number;
  assert.ok(accepted >= 10 && accepted < 100, `accepted ${accepted}`);
  assert.equal(r.json.firstNotAcceptedLine, accepted + 1);
  assert.equal(r.json.notAccepted, 100 - accepted);
  assert.equal(r.json.committed, accepted);
  const ledger = await srv.close();
  assert.ok(ledger.balanced);
  assert.equal(ledger.committed, accepted);
  assert.equal(sink.committedItems(), accepted);
});

test('open-loop load from a second process: good requests all succeed while bombs are rejected', async () => {
  const dir = await scratch();
  const { srv, path } = await fileServer({ limits: { ...LIMITS, maxConcurrentRequests: 64 } });
  const good = join(dir, 'good.gz');
  const bomb = join(dir, 'bomb.gz');
  await writeFile(good, zlib.gzipSync(lines(100)));
  await writeFile(bomb, zlib.gzipSync(Buffer.alloc(32 * 2 ** 20)));
  const spec: MixedLoadSpec = {
    url: `${srv.url}/ingest`,
    durationSec: 3,
    connections: 4,
    overallRate: 60,
    requests: [
      { kind: 'good', bodyFile: good, headers: { 'content-encoding': 'gzip' } },
      { kind: 'good', bodyFile: good, headers: { 'content-encoding': 'gzip' } },
      { kind: 'good', bodyFile: good, headers: { 'content-encoding': 'gzip' } },
      { kind: 'bomb', bodyFile: bomb, headers: { 'content-encoding': 'gzip' } },
    ],
  };
  const { command, args } = mixedLoadCommand();
  const child = spawn(command, [...args, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  assert.equal(code, 0);
  const res = JSON.parse(out) as MixedLoadResult;
  const goodN = Object.values(res.byKind.good ?? {}).reduce((a, b) => a + b, 0);
  const bombN = Object.values(res.byKind.bomb ?? {}).reduce((a, b) => a + b, 0);
  assert.ok(goodN >= 30, `only ${goodN} good requests answered: ${JSON.stringify(res)}`);
  assert.ok(bombN >= 10, `only ${bombN} bombs answered: ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res.byKind.good), ['200'], JSON.stringify(res.byKind));
  assert.deepEqual(Object.keys(res.byKind.bomb), ['413'], JSON.stringify(res.byKind));
  assert.equal(res.errors, 0);
  const ledger = await srv.close();
  assert.ok(ledger.balanced);
  // Requests still in flight when the load stopped were committed without being counted.
  assert.ok(ledger.committed >= goodN * 100 && ledger.committed <= (goodN + spec.connections) * 100, `committed ${ledger.committed}`);
  assert.equal(ledger.committed % 100, 0);
  assert.equal((await readFile(path, 'utf8')).trim().split('\n').length, ledger.committed);
});

test('an early 413 reaches a client that is still sending (Connection: close), every time', async () => {
  const { srv } = await fileServer();
  const { request } = await import('node:http');
  const { Readable } = await import('node:stream');
  // A gzip bomb (the cap is crossed after a few KiB of it) and a long line, both still being sent.
  const gz = zlib.gzipSync(Buffer.alloc(256 * 2 ** 20), { level: 1 });
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const statuses: (number | string)[] = [];
  for (let i = 0; i < 20; i++) {
    let sent = 0;
    const zipped = i % 2 === 0;
    const body = new Readable({
      read() {
        if (zipped) {
          this.push(sent < gz.length ? gz.subarray(sent, (sent += 16 * 1024)) : null);
          return;
        }
        sent += chunk.length;
        this.push(sent > 64 * 2 ** 20 ? null : chunk);
      },
    });
    statuses.push(
      await new Promise<number | string>((done) => {
        const req = request(`${srv.url}/ingest`, { method: 'POST', agent: false, headers: zipped ? { 'content-encoding': 'gzip' } : {} }, (res) => {
          body.unpipe(req);
          body.destroy();
          res.resume();
          res.on('end', () => {
            req.destroy();
            done(res.statusCode ?? 0);
          });
        });
        req.on('error', (e) => done((e as NodeJS.ErrnoException).code ?? 'error'));
        body.pipe(req);
      }),
    );
  }
  assert.deepEqual(statuses, Array(20).fill(413));
  await srv.close();
});

test('more requests than maxConcurrentRequests get 503 + Retry-After; close() lets the request in progress finish', async () => {
  // A slot is held while a body is decoded and staged (not while its commit is awaited): the
  // first request's body arrives in two parts, 64 KiB and more now, the rest 400 ms later.
  const srv = await startServer({ sink: new SlowSink({ fixedCostMs: 300 }), limits: { ...LIMITS, maxConcurrentRequests: 1 }, window: { maxWaitMs: 0 } });
  const body = Buffer.from(Array.from({ length: 1000 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(100) })).join('\n') + '\n');
  assert.ok(body.length > 80 * 1024);
  const sock = net.connect(srv.port, '127.0.0.1');
  let answer = '';
  sock.on('data', (d) => (answer += d));
  const answered = new Promise<void>((r) => sock.on('data', () => /\r\n\r\n\{.*\}\n/s.test(answer) && r()));
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(`POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: ${body.length}\r\n\r\n`);
  sock.write(body.subarray(0, 70 * 1024));
  const sendRest = () => sock.write(body.subarray(70 * 1024));
  const slow = answered.then(() => ({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(answer)![1]) }));
  await new Promise((r) => setTimeout(r, 200));
  const second = await post(srv, lines(1));
  assert.equal(second.status, 503);
  assert.equal(second.json.reason, 'concurrency');
  assert.equal(second.headers.get('retry-after'), '1');
  sendRest();
  assert.equal((await slow).status, 200);
  sock.destroy();
  const third = post(srv, lines(5));
  await new Promise((r) => setTimeout(r, 50));
  const closing = srv.close();
  assert.equal((await third).status, 200);
  const ledger = await closing;
  assert.equal(ledger.committed, 1005);
  assert.ok(ledger.balanced);
});
