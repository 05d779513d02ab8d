/**
 * The lab's open-loop client reaches the front doors the way a load balancer would
 * (packages/lab/src/cluster.ts OpenLoopClient; docs/scale.md, lab scaleout): a refused
 * connection is passed to the next door at once and that door is left out of the rotation,
 * so a dead door costs the clients nothing they can see; a request that reached a door and
 * got no answer is the client's to resend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { OpenLoopClient, freePorts } from '../../packages/lab/src/cluster.js';

async function door(handler: http.RequestListener): Promise<{ url: string; close: () => Promise<void>; hits: () => number }> {
  let hits = 0;
  const s = http.createServer((req, res) => {
    hits++;
    handler(req, res);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
    hits: () => hits,
    close: () => new Promise<void>((r) => (s.closeAllConnections(), s.close(() => r()))),
  };
}

const ok: http.RequestListener = (req, res) => {
  req.resume();
  req.on('end', () => res.end('{}'));
};

test('balancer: a refused connection goes to the next door at once and that door leaves the rotation', async () => {
  const live = await door(ok);
  const [deadPort] = await freePorts(1); // nothing listens there
  const client = new OpenLoopClient([`http://127.0.0.1:${deadPort}`, live.url], { itemsPerRequest: 5 });
  try {
    await client.offer(200, 1_000); // 40 requests
    await client.settle(10_000);
    assert.equal(client.stats.acks.reduce((a, x) => a + x.items, 0), client.stats.offeredItems);
    assert.deepEqual([...new Set(client.stats.attempts.map((a) => a.status))], [200], 'the client saw only 200s');
    assert.equal(client.stats.attempts.length, client.stats.offeredRequests, 'one client-visible attempt per request');
    assert.ok(client.stats.failedOver.length >= 1, 'the refusal was passed on');
    // Requests sent before the first refusal came back may each have drawn the dead door; after it, none.
    assert.ok(client.stats.failedOver.length <= 3, `passed on ${client.stats.failedOver.length} times`);
    assert.equal(live.hits(), client.stats.offeredRequests);
  } finally {
    await live.close();
  }
});

test('balancer: a door that dies holding a request: the client sees an error and resends to the other door', async () => {
  // The first request is held (never answered) by a door that then goes away; the next go elsewhere.
  let held: http.ServerResponse | null = null;
  const dying = await door((req, res) => {
    req.resume();
    held = res;
  });
  const live = await door(ok);
  const client = new OpenLoopClient([dying.url, live.url], { itemsPerRequest: 1 });
  try {
    const load = client.offer(10, 500); // 5 requests, 100 ms apart, the first to `dying`
    while (!held) await new Promise((r) => setTimeout(r, 5));
    await dying.close(); // resets the held request's connection, before the next request is due there
    await load;
    await client.settle(10_000);
    assert.equal(client.acked.size, 5);
    const statuses = client.stats.attempts.map((a) => a.status);
    assert.equal(statuses.filter((s) => s === 'error').length, 1, `statuses ${statuses.join(',')}`);
    assert.equal(statuses.filter((s) => s === 200).length, 5);
    assert.equal(dying.hits(), 1, 'after the error the dead door is out of the rotation');
  } finally {
    await live.close();
  }
});
