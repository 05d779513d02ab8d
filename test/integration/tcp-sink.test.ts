import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { TcpSink } from '../../packages/sluice/src/sinks/tcp.js';
import { TcpReceiver } from '../../packages/sluice/src/sinks/tcp-receiver.js';
import { AckStatus, TCP_ACK_BYTES, TCP_HEADER_BYTES } from '../../packages/sluice/src/sinks/tcp-protocol.js';
import { ndjsonBatch } from '../../packages/sluice/src/sinks/serialize.js';
import { RecordFactory } from '../../packages/lab/src/records/records.js';
import { SinkError } from '../../packages/sluice/src/core/errors.js';

const factory = new RecordFactory({ seed: 5 });
const batchOf = (start: number, n: number) => Array.from({ length: n }, (_, i) => factory.make(start + i, 0));

for (const [clientNoDelay, serverNoDelay] of [
  [true, true],
  [false, true],
  [true, false],
  [false, false],
] as const) {
  test(`request/response works with client noDelay=${clientNoDelay}, server noDelay=${serverNoDelay}`, async () => {
    const rx = await TcpReceiver.start({ noDelay: serverNoDelay, keepBodies: true });
    const sink = new TcpSink({ port: rx.port, noDelay: clientNoDelay });
    try {
      const batches = [batchOf(0, 1), batchOf(1, 3), batchOf(4, 2000), batchOf(2004, 1)];
      // Sequential, and two concurrent writes that must queue behind each other.
      await sink.write(batches[0]);
      await sink.write(batches[1]);
      await Promise.all([sink.write(batches[2]), sink.write(batches[3])]);
      const s = sink.stats();
      const r = rx.stats();
      assert.equal(sink.fixedCostOps(), 4);
      assert.equal(s.acks, 4);
      assert.equal(s.items, 2005);
      assert.equal(r.items, 2005);
      assert.equal(s.connections, 1);
      assert.deepEqual(Buffer.concat(rx.bodies), Buffer.concat(batches.map((b) => ndjsonBatch(b))));
      assert.equal(s.wireBytesOut, r.wireBytesIn, 'bytes written by the client = bytes read by the receiver');
      assert.equal(s.wireBytesOut, 4 * TCP_HEADER_BYTES + s.bodyBytes, 'header + body per batch, nothing else');
      assert.equal(s.wireBytesIn, 4 * TCP_ACK_BYTES);
      assert.ok(s.lastRoundTripMs > 0);
    } finally {
      await sink.close();
      await rx.close();
    }
  });
}

test('the client writes the header and the body as two separate socket writes', async () => {
  const rx = await TcpReceiver.start();
  const sink = new TcpSink({ port: rx.port, noDelay: false });
  const writes: number[] = [];
  const orig = net.Socket.prototype.write;
  // Spy on the writes of sockets connected to the receiver: the client side only.
  net.Socket.prototype.write = function (this: net.Socket, chunk: unknown, ...rest: unknown[]) {
    if (this.remotePort === rx.port && Buffer.isBuffer(chunk)) writes.push(chunk.length);
    return (orig as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof orig;
  try {
    const b = batchOf(0, 3);
    await sink.write(b);
    await sink.write(b);
    const bodyLen = ndjsonBatch(b).length;
    assert.deepEqual(writes, [TCP_HEADER_BYTES, bodyLen, TCP_HEADER_BYTES, bodyLen]);
  } finally {
    net.Socket.prototype.write = orig;
    await sink.close();
    await rx.close();
  }
});

test('ack statuses map to item and transient errors', async () => {
  let next: 0 | 1 | 2 = AckStatus.ItemRejected;
  const rx = await TcpReceiver.start({ respond: () => next });
  const sink = new TcpSink({ port: rx.port });
  try {
    await assert.rejects(sink.write(batchOf(0, 2)), (e) => e instanceof SinkError && e.failureClass === 'item');
    next = AckStatus.Transient;
    await assert.rejects(sink.write(batchOf(0, 2)), (e) => e instanceof SinkError && e.failureClass === 'transient');
    next = AckStatus.Committed;
    await sink.write(batchOf(0, 2));
    assert.equal(sink.stats().items, 2);
    assert.equal(rx.stats().items, 2);
  } finally {
    await sink.close();
    await rx.close();
  }
});

test('a lost connection fails the batch as transient and the next write reconnects', async () => {
  const rx = await TcpReceiver.start();
  const sink = new TcpSink({ port: rx.port, timeoutMs: 5000 });
  try {
    await sink.write(batchOf(0, 1));
    // Kill the connection from the receiver side, then write again: a new connection.
    (rx as unknown as { sockets: Set<net.Socket> }).sockets.forEach((s) => s.destroy());
    await new Promise((r) => setTimeout(r, 50));
    await sink.write(batchOf(1, 1));
    assert.equal(sink.stats().connections, 2);
    assert.equal(rx.stats().items, 2);
  } finally {
    await sink.close();
    await rx.close();
  }
  // The receiver goes away while the sink is connected: the next write fails transient.
  const rx2 = await TcpReceiver.start();
  const sink2 = new TcpSink({ port: rx2.port, timeoutMs: 5000 });
  try {
    await sink2.write(batchOf(0, 1));
    await rx2.close();
    await assert.rejects(sink2.write(batchOf(1, 1)), (e) => e instanceof SinkError && e.failureClass === 'transient');
  } finally {
    await sink2.close();
  }
});

test('a refused connection is transient; a silent server times out (transient)', async () => {
  const srv = net.createServer((s) => s.resume());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const silent = new TcpSink({ port, timeoutMs: 200 });
  try {
    await assert.rejects(silent.write(batchOf(0, 1)), (e) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'ETIMEDOUT');
  } finally {
    await silent.close();
    srv.close();
  }
  await new Promise((r) => setTimeout(r, 20));
  const refused = new TcpSink({ port, timeoutMs: 2000 });
  try {
    await assert.rejects(refused.write(batchOf(0, 1)), (e) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'ECONNREFUSED');
  } finally {
    await refused.close();
  }
});

test('a frame with a wrong magic closes the receiver connection', async () => {
  const rx = await TcpReceiver.start();
  try {
    await new Promise<void>((resolve) => {
      const s = net.connect(rx.port, '127.0.0.1', () => s.write(Buffer.alloc(TCP_HEADER_BYTES, 0xff)));
      s.on('close', () => resolve());
      s.on('error', () => undefined);
      s.resume();
    });
    assert.equal(rx.stats().protocolErrors, 1);
  } finally {
    await rx.close();
  }
});
