import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { runMixedLoad, summarize } from '../../packages/lab/src/mixed-load.js';

test('summarize: nearest-rank percentiles', () => {
  const s = summarize(Array.from({ length: 100 }, (_, i) => i + 1));
  assert.deepEqual([s.p50, s.p90, s.p99, s.max, s.n], [50, 90, 99, 100, 100]);
  assert.equal(summarize([]).p99, 0);
});

test('open loop: a slow server shows up as latency from the intended send time, not as a slower load', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-mixed-load-'));
  const body = join(dir, 'body');
  await writeFile(body, '{"a":1}\n');
  // Every answer takes 30 ms; one connection; 100 requests/s: the server can do ≈33/s.
  const seen: string[] = [];
  let firstPostAt = 0;
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (req.method === 'POST' && !firstPostAt) firstPostAt = Date.now();
    req.resume();
    req.on('end', () => setTimeout(() => res.end('ok'), 30));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as AddressInfo).port;
    const startAtMs = Date.now() + 300;
    const r = await runMixedLoad({
      url: `http://127.0.0.1:${port}/ingest`,
      durationSec: 0.2,
      connections: 1,
      overallRate: 100,
      requests: [{ kind: 'k', bodyFile: body, headers: {} }],
      warmupPath: '/healthz',
      startAtMs,
    });
    assert.ok(firstPostAt >= startAtMs - 2, `first request ${startAtMs - firstPostAt} ms before startAtMs`);
    // The warm-up request comes first and is not counted.
    assert.deepEqual([seen[0], seen.length], ['GET /healthz', 21]);
    assert.equal(r.sent, 20);
    assert.deepEqual(r.byKind, { k: { '200': 20 } });
    // Closed loop would report ≈30 ms for each; open loop: request i waits for the ones before.
    assert.ok(r.serviceByKindMs.k.p50 < 100, JSON.stringify(r.serviceByKindMs));
    assert.ok(r.latencyMs.max > 300, JSON.stringify(r.latencyMs));
    assert.ok(r.latencyMs.p50 > r.serviceByKindMs.k.p50 * 3, JSON.stringify(r));
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
