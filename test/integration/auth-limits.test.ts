/**
 * Auth is decided before the body: a bomb from a client without a valid token is answered 401
 * with 0 bytes read out of any decoder (the server's own counters), while the same bomb with a
 * token reaches the decoder and its cap. A tenant over its rate gets 429 + Retry-After, counted
 * under its name, and another tenant is still served. Nothing refused reaches the sink.
 * (Speed — one tenant's p99 while another floods — is measured in the lab: `tenants`.)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { doorServer, metricValue as metricExact, reconcile } from '../helpers/doors.js';
import { writeTokens } from '../helpers/certs.js';
import type { RunningServer, ServeOptions } from '../../packages/sluice/src/sources/http.js';

const metric = (srv: RunningServer, name: string, labels = '') => metricExact(srv, name, labels ? `${labels},pipeline="serve"` : 'pipeline="serve"');
const T = { a: 'tenant-a-token-0123456789abcdef0123', slow: 'tenant-slow-token-0123456789abcdef01', bytes: 'tenant-bytes-token-0123456789abcdef0' };

let dir: string;
let opts: Partial<ServeOptions>;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-auth-limits-'));
  const tokensFile = writeTokens(dir, [
    { name: 'tenant-a', token: T.a, routes: ['ingest'] },
    // 1 record/s with a burst of 10: a 50-record request is admitted, then the tenant owes 40 s.
    { name: 'tenant-slow', token: T.slow, routes: ['ingest'], rate: { recordsPerSec: 1, burstRecords: 10, bytesPerSec: 1e9 } },
    { name: 'tenant-bytes', token: T.bytes, routes: ['ingest'], rate: { recordsPerSec: 1e6, bytesPerSec: 100, burstBytes: 100 } },
  ]);
  opts = { auth: { tokensFile } };
});
after(() => rmSync(dir, { recursive: true, force: true }));

const post = (url: string, body: Buffer | string, headers: Record<string, string> = {}) =>
  fetch(`${url}/ingest`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson', ...headers } });
const lines = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ key: `${prefix}-${i}` }) + '\n').join('');

test('an unauthenticated gzip bomb is refused 401 before a byte is decoded; with a token it reaches the decoder and its cap', async () => {
  const d = await doorServer(opts);
  try {
    // 64 MiB of zeros, gzip: ≈64 KiB sent, 4× the default 16 MiB decompressed cap.
    const bomb = zlib.gzipSync(Buffer.alloc(64 * 2 ** 20), { level: 9 });
    for (const headers of [{}, { authorization: 'Bearer not-a-token' }]) {
      const r = await post(d.srv.url, bomb, { 'content-encoding': 'gzip', ...headers });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer /);
      await r.arrayBuffer();
    }
    assert.equal(await metric(d.srv, 'sluice_http_decompressed_bytes_total'), 0);
    assert.equal(await metric(d.srv, 'sluice_http_compressed_bytes_total'), 0);
    // The counter does move for a bomb that passes auth: the zero above is not a dead counter.
    const r = await post(d.srv.url, bomb, { 'content-encoding': 'gzip', authorization: `Bearer ${T.a}` });
    assert.equal(r.status, 413);
    await r.arrayBuffer();
    assert.ok((await metric(d.srv, 'sluice_http_decompressed_bytes_total')) > 0);
    const ok = await post(d.srv.url, lines('a', 10), { authorization: `Bearer ${T.a}` });
    assert.equal(ok.status, 200);
    const { ledger, records } = await d.finish();
    reconcile(records, (x) => (x as { key?: string }).key, lines('a', 10).trim().split('\n').map((l) => (JSON.parse(l) as { key: string }).key), ledger);
  } finally {
    await d.finish();
  }
});

test('a tenant over its records/s or bytes/s gets 429 + Retry-After, counted under its name; another tenant is still served', async () => {
  const d = await doorServer(opts);
  try {
    const first = await post(d.srv.url, lines('slow', 50), { authorization: `Bearer ${T.slow}` });
    assert.equal(first.status, 200, await first.text());
    const second = await post(d.srv.url, lines('slow-late', 5), { authorization: `Bearer ${T.slow}` });
    assert.equal(second.status, 429);
    // It owes ≈40 records at 1/s.
    assert.ok(Number(second.headers.get('retry-after')) >= 30, `retry-after ${second.headers.get('retry-after')}`);
    assert.equal(((await second.json()) as { reason: string }).reason, 'tenant-rate');

    // bytes/s: 100 B/s with a burst of 100 B; the first 1000-byte body is admitted, the next is not.
    const big = lines('bytes', 40);
    assert.ok(Buffer.byteLength(big) > 500);
    assert.equal((await post(d.srv.url, big, { authorization: `Bearer ${T.bytes}` })).status, 200);
    assert.equal((await post(d.srv.url, lines('bytes-late', 1), { authorization: `Bearer ${T.bytes}` })).status, 429);

    const other = await post(d.srv.url, lines('a', 20), { authorization: `Bearer ${T.a}` });
    assert.equal(other.status, 200);

    assert.equal(await metric(d.srv, 'sluice_tenant_requests_total', 'tenant="tenant-slow",outcome="rate-limited"'), 1);
    assert.equal(await metric(d.srv, 'sluice_tenant_requests_total', 'tenant="tenant-bytes",outcome="rate-limited"'), 1);
    assert.equal(await metric(d.srv, 'sluice_tenant_requests_total', 'tenant="tenant-a",outcome="rate-limited"'), 0);
    assert.equal(await metric(d.srv, 'sluice_tenant_records_total', 'tenant="tenant-slow"'), 50);
    assert.equal(await metric(d.srv, 'sluice_http_requests_rejected_total', 'reason="tenant-rate"'), 2);
    const text = await d.srv.exposition.text();
    for (const t of Object.values(T)) assert.ok(!text.includes(t));
    const keys = (s: string) => s.trim().split('\n').map((l) => (JSON.parse(l) as { key: string }).key);
    const { ledger, records } = await d.finish();
    reconcile(records, (x) => (x as { key?: string }).key, [...keys(lines('slow', 50)), ...keys(big), ...keys(lines('a', 20))], ledger);
  } finally {
    await d.finish();
  }
});

test('the tokens file is re-read on reload: a revoked token is refused, a new one admitted, an invalid file keeps the old list', async () => {
  const d = await doorServer(opts);
  try {
    assert.equal((await post(d.srv.url, lines('r', 1), { authorization: `Bearer ${T.a}` })).status, 200);
    writeTokens(dir, [{ name: 'tenant-new', token: 'tenant-new-token-0123456789abcdef01', routes: ['ingest'] }], 'tokens.json');
    d.srv.reload();
    assert.equal((await post(d.srv.url, lines('r2', 1), { authorization: `Bearer ${T.a}` })).status, 401);
    assert.equal((await post(d.srv.url, lines('n', 1), { authorization: 'Bearer tenant-new-token-0123456789abcdef01' })).status, 200);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(opts.auth!.tokensFile, '{"tokens": [{"name": "x"}]}');
    assert.throws(() => d.srv.reload(), /SLUICE_INVALID_OPTION|hash/);
    assert.equal((await post(d.srv.url, lines('n2', 1), { authorization: 'Bearer tenant-new-token-0123456789abcdef01' })).status, 200);
    const { ledger, records } = await d.finish();
    reconcile(records, (x) => (x as { key?: string }).key, ['r-0', 'n-0', 'n2-0'], ledger);
  } finally {
    await d.finish();
  }
});
