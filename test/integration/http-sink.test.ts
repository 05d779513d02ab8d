import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { HttpSink, classifyHttpStatus } from '../../packages/sluice/src/sinks/http.js';
import { HttpReceiver } from '../../packages/sluice/src/sinks/http-receiver.js';
import { availableCodecs } from '../../packages/sluice/src/codec/compress.js';
import { RecordFactory } from '../../packages/lab/src/records/records.js';
import { ndjsonBatch } from '../../packages/sluice/src/sinks/serialize.js';
import { SinkError } from '../../packages/sluice/src/core/errors.js';

const factory = new RecordFactory({ seed: 11 });
const batchOf = (start: number, n: number) => Array.from({ length: n }, (_, i) => factory.make(start + i, 0));

test('the sink\'s wire-byte counter equals the bytes the receiver read at its sockets, every codec, several batches', async () => {
  const rx = await HttpReceiver.start({ keepBodies: true });
  try {
    let expectedLines = 0;
    let sinkBytesOut = 0;
    for (const codec of availableCodecs()) {
      const sink = new HttpSink({ url: rx.url, codec, maxSockets: 2 });
      try {
        const sizes = [1, 7, 250, 3];
        let n = 0;
        // Two batches in flight at once: two keep-alive sockets are counted.
        await Promise.all(sizes.slice(0, 2).map((k) => sink.write(batchOf(n += k, k))));
        for (const k of sizes.slice(2)) await sink.write(batchOf(n += k, k));
        const st = sink.stats();
        assert.equal(st.requests, sizes.length, codec);
        assert.equal(sink.fixedCostOps(), sizes.length);
        assert.equal(st.items, 261);
        assert.ok(st.wireBytesOut > st.bodyBytes, `${codec}: headers are counted too`);
        if (codec === 'none') assert.equal(st.bodyBytes, st.rawBytes);
        else assert.ok(st.bodyBytes < st.rawBytes, `${codec} compresses`);
        expectedLines += 261;
        sinkBytesOut += st.wireBytesOut;
      } finally {
        await sink.close();
      }
    }
    // Give the receiver's socket 'close' handlers a moment; the totals are exact either way.
    await new Promise((r) => setTimeout(r, 50));
    const r = rx.stats();
    assert.equal(r.acceptedLines, expectedLines);
    assert.equal(r.badRequests, 0);
    assert.equal(r.wireBytesIn, sinkBytesOut, 'sum over the sinks = bytes read at the receiver\'s sockets');
    assert.ok(r.connections >= availableCodecs().length + 1, 'two sockets for the concurrent pair');
  } finally {
    await rx.close();
  }
});

test('per sink: wireBytesOut === receiver wireBytesIn and wireBytesIn === receiver wireBytesOut', async () => {
  for (const codec of availableCodecs()) {
    const rx = await HttpReceiver.start({ keepBodies: true });
    const sink = new HttpSink({ url: rx.url, codec });
    try {
      const batches = [batchOf(0, 1), batchOf(1, 500), batchOf(501, 42)];
      for (const b of batches) await sink.write(b);
      const s = sink.stats();
      const r = rx.stats();
      assert.equal(s.wireBytesOut, r.wireBytesIn, `${codec}: bytes out at the client socket = bytes in at the server socket`);
      assert.equal(s.wireBytesIn, r.wireBytesOut, `${codec}: responses`);
      assert.equal(r.bodyBytes, s.bodyBytes);
      assert.deepEqual(Buffer.concat(rx.bodies), Buffer.concat(batches.map((b) => ndjsonBatch(b))), `${codec}: content round-trips`);
      assert.equal(s.connections, 1, 'keep-alive: one connection for sequential batches');
    } finally {
      await sink.close();
      await rx.close();
    }
  }
});

test('the receiver counts bytes independently of the HTTP client: a raw socket write', async () => {
  const rx = await HttpReceiver.start();
  try {
    const body = Buffer.from('{"a":1}\n{"a":2}\n');
    const head = Buffer.from(`POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
    const url = new URL(rx.url);
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(Number(url.port), url.hostname, () => s.end(Buffer.concat([head, body])));
      s.on('error', reject);
      s.on('close', () => resolve());
      s.resume();
    });
    assert.equal(rx.stats().wireBytesIn, head.length + body.length);
    assert.equal(rx.stats().acceptedLines, 2);
  } finally {
    await rx.close();
  }
});

test('errors are classified by status: 5xx/429 transient, 400/413/422 item, 404 transient + alerting', async () => {
  let next = 204;
  const rx = await HttpReceiver.start({ respond: () => next });
  const sink = new HttpSink({ url: rx.url, codec: 'gzip' });
  try {
    const expect: [number, 'transient' | 'item', boolean][] = [
      [500, 'transient', false],
      [503, 'transient', false],
      [429, 'transient', false],
      [400, 'item', false],
      [413, 'item', false],
      [422, 'item', false],
      [404, 'transient', true],
    ];
    for (const [status, cls, alerting] of expect) {
      next = status;
      await assert.rejects(sink.write(batchOf(0, 3)), (e) => {
        assert.ok(e instanceof SinkError, String(e));
        assert.equal(e.failureClass, cls, `status ${status}`);
        assert.equal(e.alerting, alerting, `status ${status}`);
        assert.equal(e.sinkCode, `HTTP_${status}`);
        return true;
      });
    }
    next = 200;
    await sink.write(batchOf(0, 3));
    assert.equal(sink.fixedCostOps(), expect.length + 1);
    assert.equal(sink.stats().items, 3, 'only the accepted batch counts as items');
    assert.equal(classifyHttpStatus(204), null);
  } finally {
    await sink.close();
    await rx.close();
  }
});

test('a refused connection is transient', async () => {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const sink = new HttpSink({ url: `http://127.0.0.1:${port}/x`, timeoutMs: 2000 });
  try {
    await assert.rejects(sink.write(batchOf(0, 1)), (e) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'ECONNREFUSED');
    assert.equal(sink.stats().connectionErrors, 1);
  } finally {
    await sink.close();
  }
});

test('a server that never answers ends in a transient timeout', async () => {
  const sockets: net.Socket[] = [];
  const srv = net.createServer((s) => sockets.push(s.resume()));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const sink = new HttpSink({ url: `http://127.0.0.1:${port}/x`, timeoutMs: 200 });
  try {
    await assert.rejects(sink.write(batchOf(0, 1)), (e) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'ETIMEDOUT');
  } finally {
    await sink.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  }
});

test('bad options are refused at construction', () => {
  assert.throws(() => new HttpSink({ url: 'not a url' }), /SLUICE|invalid option/);
  assert.throws(() => new HttpSink({ url: 'https://127.0.0.1/' }), /http:\/\//);
  assert.throws(() => new HttpSink({ url: 'http://127.0.0.1/', maxSockets: 0 }), /maxSockets/);
});
