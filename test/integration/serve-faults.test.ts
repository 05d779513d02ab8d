/**
 * `sluice serve` when things go wrong (issue 19): a sink that is down is backpressure —
 * `/healthz` says degraded, `sluice_sink_up` is 0, one log line down and one back, a full queue
 * answers 503, nothing is dead-lettered — and slow clients cannot hold the front door.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer } from '../../packages/sluice/src/sources/http.js';
import { MemoryDeadLetters, splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';
import { FlakySink } from '../../packages/sluice/src/sinks/doubles.js';

const lines = (n: number, from = 0) => Array.from({ length: n }, (_, i) => JSON.stringify({ i: from + i })).join('\n') + '\n';

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 20_000) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('sink down: requests wait, /healthz is degraded, sluice_sink_up 0, a full queue is 503; back: all committed, none dead-lettered', { timeout: 60_000 }, async () => {
  const inner = new MemorySink<unknown>();
  const sink = new FlakySink<unknown>(inner, Infinity, 'ECONNREFUSED');
  const dlq = new MemoryDeadLetters<unknown>();
  const logs: string[] = [];
  const srv = await startServer({
    sink,
    handler: splitAndRetry(sink, { dlq, retry: { baseMs: 5, maxMs: 20 } }),
    queue: { maxItems: 25, blockTimeoutMs: 100 },
    limits: { maxConcurrentRequests: 2 },
    window: { maxItems: 10 },
    log: (l) => logs.push(l),
  });
  try {
    const first = fetch(`${srv.url}/ingest`, { method: 'POST', body: lines(20) });
    await until('the sink to be seen down', () => logs.some((l) => l.startsWith('sink down:')));
    const health = await fetch(`${srv.url}/healthz`);
    assert.equal(health.status, 503);
    const h = (await health.json()) as Record<string, unknown>;
    assert.equal(h.status, 'degraded');
    assert.equal(h.reason, 'sink-down');
    assert.equal(h.sinkCode, 'ECONNREFUSED');
    assert.match(await (await fetch(`${srv.url}/metrics`)).text(), /^sluice_sink_up(\{[^}]*\})? 0$/m);
    // The queue cannot hold the next request whole while the sink is down: 503 for all of it, not 429.
    const second = await fetch(`${srv.url}/ingest`, { method: 'POST', body: lines(20, 20) });
    assert.equal(second.status, 503);
    assert.ok(second.headers.get('retry-after'));
    const body = (await second.json()) as Record<string, unknown>;
    assert.equal(body.reason, 'sink-down');
    assert.equal(logs.filter((l) => l.startsWith('sink down:')).length, 1, 'one line per outage, not per retry');

    // More requests than slots, each fitting the queue: they wait for their commit without
    // holding a slot, so none is refused for concurrency while the sink is down.
    const waiting = Array.from({ length: 3 }, (_, k) => fetch(`${srv.url}/ingest`, { method: 'POST', body: lines(1, 100 + k) }));
    await new Promise((r) => setTimeout(r, 200));
    const extraP = fetch(`${srv.url}/ingest`, { method: 'POST', body: lines(1, 200) });
    const extra = await Promise.race([extraP.then((r) => r.status), new Promise((res) => setTimeout(() => res('pending'), 300))]);
    assert.equal(extra, 'pending', 'a request that fits the queue waits for its commit, not 503 concurrency');

    sink.failures = 0; // the sink is back
    for (const w of [...waiting, extraP]) assert.equal((await w).status, 200);
    const r1 = await first;
    assert.equal(r1.status, 200, await r1.text());
    await until('the sink to be seen back', () => logs.some((l) => /^sink back: .* after \d+\.\d s/.test(l)));
    assert.equal((await fetch(`${srv.url}/healthz`)).status, 200);
    assert.match(await (await fetch(`${srv.url}/metrics`)).text(), /^sluice_sink_up(\{[^}]*\})? 1$/m);
    assert.match(await (await fetch(`${srv.url}/metrics`)).text(), /^sluice_sink_retries_total(\{[^}]*\})? [1-9]/m);
  } finally {
    sink.failures = 0;
    const ledger = await srv.close();
    assert.ok(ledger.balanced);
    assert.equal(ledger.deadLettered, 0, 'a sink that is down is never a reason to dead-letter');
    assert.equal(dlq.letters.length, 0);
    // Everything accepted was committed: the first request's 20 and the 4 single lines; none of the refused second.
    assert.equal(ledger.accepted, 24);
    assert.equal(ledger.committed, 24);
    assert.equal(inner.committedItems(), 24);
  }
});

/** A raw client: sends the head, then the body one byte per `everyMs`. */
function trickle(port: number, contentLength: number, everyMs: number) {
  const sock = net.connect(port, '127.0.0.1');
  let answer = '';
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  sock.on('data', (d) => (answer += d));
  sock.on('error', () => {});
  sock.once('connect', () => sock.write(`POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: ${contentLength}\r\n\r\n{`));
  const t = setInterval(() => sock.writable && sock.write(' '), everyMs);
  return { closed: closed.finally(() => clearInterval(t)), answer: () => answer, destroy: () => (clearInterval(t), sock.destroy()) };
}

test('slow clients: trickling bodies, small or large, are cut with 408 and never hold the slots good requests need', { timeout: 60_000 }, async () => {
  const srv = await startServer({ sink: new MemorySink(), limits: { maxConcurrentRequests: 2, bodyRateGraceMs: 1000, minBodyBytesPerSec: 512 } });
  // Declared small (read whole before a slot) and declared large (only its first 64 KiB before a slot).
  const slow = [...Array.from({ length: 3 }, () => trickle(srv.port, 4000, 500)), ...Array.from({ length: 3 }, () => trickle(srv.port, 8 * 2 ** 20, 500))];
  try {
    await new Promise((r) => setTimeout(r, 300));
    // More tricklers than slots, yet a good request is served meanwhile.
    const good = await fetch(`${srv.url}/ingest`, { method: 'POST', body: lines(5) });
    assert.equal(good.status, 200);
    await Promise.all(slow.map((s) => s.closed));
    for (const s of slow) assert.match(s.answer(), /^HTTP\/1\.1 408 /);
    assert.match(await (await fetch(`${srv.url}/metrics`)).text(), /sluice_http_requests_rejected_total\{[^}]*reason="slow-body"[^}]*\} 6/);
  } finally {
    for (const s of slow) s.destroy();
    assert.ok((await srv.close()).balanced);
  }
});

test('slow headers: a client that never finishes its head is closed after headersTimeoutMs, not after a 30 s sweep', { timeout: 60_000 }, async () => {
  const srv = await startServer({ sink: new MemorySink(), limits: { headersTimeoutMs: 1000 } });
  const sock = net.connect(srv.port, '127.0.0.1');
  sock.on('error', () => {});
  const t0 = Date.now();
  sock.once('connect', () => sock.write('POST /ingest HTTP/1.1\r\nHo'));
  const t = setInterval(() => sock.writable && sock.write('s'), 500);
  await new Promise<void>((r) => sock.once('close', () => r()));
  clearInterval(t);
  // Node's default check runs every 30 s; with the 1 s check the head is cut within seconds.
  assert.ok(Date.now() - t0 < 15_000, `closed after ${Date.now() - t0} ms`);
  assert.ok((await srv.close()).balanced);
});
