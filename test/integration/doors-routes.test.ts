/** The doors' own answers at their edges: caps, bombs, malformed bodies, per-item statuses. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import * as snappy from 'snappyjs';
import { doorServer } from '../helpers/doors.js';
import { OtlpTypes } from '../../packages/sluice/src/codec/otlp-logs.js';
import { LokiPushRequest, snappyDeclaredLength } from '../../packages/sluice/src/codec/loki-push.js';

const LIMITS = { maxDecompressedBytes: 1 << 20, maxCompressedBytes: 256 * 1024, maxLineBytes: 64 * 1024, maxItemsPerRequest: 1000, maxDepth: 8 };

test('GET / answers the version probe; every answer carries X-Elastic-Product', async () => {
  const d = await doorServer({ limits: LIMITS });
  try {
    const r = await fetch(d.srv.url + '/');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-elastic-product'), 'Elasticsearch');
    assert.match(((await r.json()) as { version: { number: string } }).version.number, /^8\./);
    const nf = await fetch(d.srv.url + '/_nodes/http');
    assert.equal(nf.status, 404);
    assert.equal(nf.headers.get('x-elastic-product'), 'Elasticsearch');
  } finally {
    await d.finish();
  }
});

test('_bulk: per-item 400 for invalid documents and unsupported actions, 201 for the rest, in order; a gzip bomb is 413', async () => {
  const d = await doorServer({ limits: LIMITS });
  try {
    const body =
      [
        { index: { _id: 'a' } }, { n: 1 },
        { create: {} }, '[1,2]',
        { index: {} }, '{"bad json',
        { update: { _id: 'a' } }, { doc: { n: 2 } },
        { delete: { _id: 'a' } },
        { create: { _index: 'other', _id: 'b' } }, { n: 2 },
        { index: {} }, JSON.stringify({ deep: [[[[[[[[[[1]]]]]]]]]] }),
      ]
        .map((x) => (typeof x === 'string' ? x : JSON.stringify(x)))
        .join('\n') + '\n';
    const r = await fetch(d.srv.url + '/logs/_bulk', { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson' } });
    assert.equal(r.status, 200);
    const j = (await r.json()) as { errors: boolean; items: Record<string, { status: number; _index: string; error?: { type: string } }>[] };
    assert.equal(j.errors, true);
    const st = j.items.map((it) => [Object.keys(it)[0], Object.values(it)[0].status, Object.values(it)[0].error?.type ?? Object.values(it)[0]._index]);
    assert.deepEqual(st, [
      ['index', 201, 'logs'],
      ['create', 400, 'document_parsing_exception'],
      ['index', 400, 'document_parsing_exception'],
      ['update', 400, 'illegal_argument_exception'],
      ['delete', 400, 'illegal_argument_exception'],
      ['create', 201, 'other'],
      ['index', 400, 'document_parsing_exception'],
    ]);
    // 64 MiB of newlines gzipped (≈64 KiB; blank lines, so no line cap): refused at the decompressed cap.
    const bomb = zlib.gzipSync(Buffer.alloc(64 << 20, 0x0a), { level: 9 });
    const b = await fetch(d.srv.url + '/_bulk', { method: 'POST', body: bomb, headers: { 'content-encoding': 'gzip', 'content-type': 'application/x-ndjson' } });
    assert.equal(b.status, 413);
    assert.equal(((await b.json()) as { cap: string }).cap, 'decompressed-bytes');
    const { ledger, records } = await d.finish();
    assert.equal(records.length, 2);
    assert.ok(ledger.balanced);
    assert.deepEqual([...d.sink.indexOf.values()].sort(), ['logs', 'other']);
  } finally {
    await d.finish();
  }
});

test('OTLP: a protobuf whose length lies is 400 (Status body); a record nested past the cap is a partialSuccess rejection', async () => {
  const d = await doorServer({ limits: LIMITS });
  try {
    // Field 1 (resource_logs), wire type 2, length 2^28 with 3 bytes of payload.
    const lying = Buffer.from([0x0a, 0x80, 0x80, 0x80, 0x80, 0x01, 1, 2, 3]);
    const r = await fetch(d.srv.url + '/v1/logs', { method: 'POST', body: lying, headers: { 'content-type': 'application/x-protobuf' } });
    assert.equal(r.status, 400);
    assert.equal(r.headers.get('content-type'), 'application/x-protobuf');
    const status = OtlpTypes.status.decode(new Uint8Array(await r.arrayBuffer())) as unknown as { code: number; message: string };
    assert.equal(status.code, 3);
    let deep: unknown = { stringValue: 'x' };
    for (let i = 0; i < 20; i++) deep = { kvlistValue: { values: [{ key: 'k', value: deep }] } };
    const reqJson = {
      resourceLogs: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 's' } }] }, scopeLogs: [{ scope: { name: 'sc' }, logRecords: [{ body: { stringValue: 'ok' } }, { body: deep }] }] }],
    };
    const j = await fetch(d.srv.url + '/v1/logs', { method: 'POST', body: JSON.stringify(reqJson), headers: { 'content-type': 'application/json' } });
    assert.equal(j.status, 200);
    const out = (await j.json()) as { partialSuccess: { rejectedLogRecords: string; errorMessage: string } };
    assert.equal(out.partialSuccess.rejectedLogRecords, '1');
    const { records } = await d.finish();
    assert.deepEqual(records, [{ body: 'ok', resource: { 'service.name': 's' }, scope: { name: 'sc' } }]);
  } finally {
    await d.finish();
  }
});

test('Loki: a snappy block declaring more than the cap is 413 before decompressing; one expanding past it too; a good push is 204', async () => {
  const d = await doorServer({ limits: LIMITS });
  try {
    const push = (body: Uint8Array, type = 'application/x-protobuf') => fetch(d.srv.url + '/loki/api/v1/push', { method: 'POST', body, headers: { 'content-type': type } });
    // Declares 1 GiB (varint) followed by a few bytes: refused on the length alone.
    const liar = Buffer.from([0x80, 0x80, 0x80, 0x80, 0x04, 0x00, 0x61]);
    assert.equal(snappyDeclaredLength(liar), 2 ** 30);
    const a = await push(liar);
    assert.equal(a.status, 413);
    assert.equal(((await a.json()) as { declared: number }).declared, 2 ** 30);
    // A real block of 4 MiB of zeros (≈190 KiB compressed: under the body cap, past the decompressed one).
    const big = snappy.compress(new Uint8Array(4 << 20));
    assert.ok(big.length < LIMITS.maxCompressedBytes);
    const b = await push(big);
    assert.equal(b.status, 413);
    const good = LokiPushRequest.encode(
      LokiPushRequest.fromObject({ streams: [{ labels: '{app="x", env="a\\"b"}', entries: [{ timestamp: { seconds: 1700000000, nanos: 5 }, line: 'hello', structuredMetadata: [{ name: 'trace', value: 't1' }] }] }] }),
    ).finish();
    const c = await push(snappy.compress(good));
    assert.equal(c.status, 204);
    const js = await push(Buffer.from(JSON.stringify({ streams: [{ stream: { app: 'y' }, values: [['1700000000000000001', 'json line', { k: 'v' }]] }] })), 'application/json');
    assert.equal(js.status, 204);
    const { records } = await d.finish();
    assert.deepEqual(records, [
      { ts: '1700000000000000005', line: 'hello', labels: { app: 'x', env: 'a"b' }, metadata: { trace: 't1' } },
      { ts: '1700000000000000001', line: 'json line', labels: { app: 'y' }, metadata: { k: 'v' } },
    ]);
  } finally {
    await d.finish();
  }
});

test('every door times its records from the request’s arrival, not from when its body was decoded', async () => {
  const d = await doorServer({ limits: LIMITS });
  try {
    const { request } = await import('node:http');
    const bodies: [string, string, string][] = [
      ['/ingest', 'application/x-ndjson', '{"door":"ingest"}\n'],
      ['/logs/_bulk', 'application/x-ndjson', '{"index":{"_id":"bulk-1"}}\n{"door":"bulk"}\n'],
      ['/v1/logs', 'application/json', JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: { stringValue: 'otlp' } }] }] }] })],
      ['/loki/api/v1/push', 'application/json', JSON.stringify({ streams: [{ stream: { door: 'loki' }, values: [['1700000000000000000', 'loki']] }] })],
    ];
    const delayMs = 400;
    for (const [path, type, body] of bodies) {
      const before = new Set(d.sink.intendedAt.keys());
      const buf = Buffer.from(body);
      const sentHeadersAt = performance.now();
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(d.srv.url + path, { method: 'POST', headers: { 'content-type': type, 'content-length': buf.length } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.flushHeaders();
        // Half the body, then a pause: the records must still be timed from the headers.
        req.write(buf.subarray(0, buf.length >> 1));
        setTimeout(() => req.end(buf.subarray(buf.length >> 1)), delayMs);
      });
      assert.ok(status >= 200 && status < 300, `${path}: ${status}`);
      // With the default ack the answer may precede the write: wait for the record to land.
      let fresh: [string, number][] = [];
      for (const t0 = Date.now(); fresh.length === 0 && Date.now() - t0 < 10_000; await new Promise((r) => setTimeout(r, 10))) {
        fresh = [...d.sink.intendedAt].filter(([id]) => !before.has(id));
      }
      assert.equal(fresh.length, 1, `${path}: ${JSON.stringify([...d.sink.intendedAt.keys()])} ${JSON.stringify([...before])}`);
      const stampedAfterHeaders = fresh[0][1] - sentHeadersAt;
      assert.ok(stampedAfterHeaders < delayMs / 2, `${path}: records stamped ${stampedAfterHeaders.toFixed(1)} ms after the headers were sent, the body took ${delayMs} ms`);
    }
  } finally {
    await d.finish();
  }
});

test('a request answered before its body ended closes its connection: the next request on a keep-alive client gets its answer, not a reset', async () => {
  const d = await doorServer({ limits: LIMITS });
  const { Agent, request } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    // 8 MiB of zeros, gzip (≈8 KiB): refused at the 1 MiB decompressed cap while its body may still be arriving.
    const bomb = zlib.gzipSync(Buffer.alloc(8 << 20), { level: 9 });
    const big = Buffer.alloc(LIMITS.maxCompressedBytes + 4096, 0x20); // over the compressed cap: refused on Content-Length
    const one = (body: Buffer, headers: Record<string, string>) =>
      new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
        const req = request(d.srv.url + '/ingest', { method: 'POST', agent, headers: { 'content-type': 'application/x-ndjson', 'content-length': String(body.length), ...headers } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        });
        req.on('error', reject);
        req.end(body);
      });
    for (let i = 0; i < 3; i++) {
      const a = await one(bomb, { 'content-encoding': 'gzip' });
      assert.equal(a.status, 413);
      const b = await one(big, {});
      assert.equal(b.status, 413);
      assert.equal(b.connection, 'close', 'refused before its body ended: not reused');
    }
    const ok = await one(Buffer.from('{"after":"bombs"}\n'), {});
    assert.equal(ok.status, 200);
  } finally {
    agent.destroy();
    await d.finish();
  }
});
