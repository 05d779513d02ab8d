import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeExchange, requestTimings, type Segment } from '../../packages/lab/src/loopback-capture.js';

const S = 5000; // receiver port
const C = 40000; // client port
const seg = (t: number, fromClient: boolean, length: number, flags = length ? 'P.' : '.'): Segment => ({
  t,
  srcPort: fromClient ? C : S,
  dstPort: fromClient ? S : C,
  flags,
  length,
});

test('a body held back until the receiver\'s delayed ACK is recognised', () => {
  const segs = [
    seg(1.0, true, 16),
    seg(1.041, false, 0), // delayed ACK, 41 ms
    seg(1.04102, true, 600),
    seg(1.0411, false, 8),
    // noDelay shape: body follows at once, the bare ACK comes after it
    seg(2.0, true, 16),
    seg(2.00003, true, 600),
    seg(2.00005, false, 0),
    seg(2.0001, false, 8),
  ];
  const t = requestTimings(segs, S, 16);
  assert.equal(t.length, 2);
  assert.equal(t[0].ackBeforeBody, true);
  assert.ok(Math.abs(t[0].headerToAckMs! - 41) < 1e-6);
  assert.ok(Math.abs(t[0].headerToBodyMs - 41.02) < 1e-6);
  assert.equal(t[1].ackBeforeBody, false);
  assert.equal(t[1].headerToAckMs, null);
  assert.ok(t[1].headerToBodyMs < 0.1);
  const lines = describeExchange(segs, S, 16, 0, 8);
  assert.equal(lines.length, 4);
  assert.match(lines[1], /receiver → client .* 0 B  bare ACK/);
  assert.match(lines[3], /batch ack/);
  assert.deepEqual(describeExchange(segs, S, 16, 5, 8), []);
});
