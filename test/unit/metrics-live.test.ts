/**
 * The live page's sampler (src/metrics/live.ts): nothing computed while nobody watches, one
 * sample per interval shared by every viewer, sampling stops when the last viewer leaves, and
 * the page itself loads nothing from elsewhere. Intervals are shortened to 100 ms; bounds are
 * counts of events, never speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { envelope } from '../../packages/sluice/src/core/types.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';
import { PipelineMetrics } from '../../packages/sluice/src/metrics/metrics.js';
import { liveView, type LiveHello, type LiveSample } from '../../packages/sluice/src/metrics/live.js';

async function setup() {
  const sink = new MemorySink<unknown>();
  const metrics = new PipelineMetrics<unknown>(sink);
  const pipeline = new Pipeline<unknown>({ sink, window: { maxItems: 8, maxWaitMs: 1 }, observers: [metrics], name: 'live' });
  metrics.attach(pipeline);
  const live = liveView({ pipeline, metrics, kind: 'run', intervalMs: 100, historyPoints: 50, sloMs: 15, sourceLag: async () => 42, controller: () => ({ kind: 'aimd', lastP99Ms: 3 }) });
  const server = http.createServer((req, res) => {
    if (!live.route(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let stopLoad = false;
  const load = (async () => {
    let i = 0;
    while (!stopLoad) {
      for (let k = 0; k < 20; k++) await pipeline.put(envelope({ i: i++ }, { bytes: 10, intendedAtMs: performance.now() }));
      await sleep(5);
    }
  })();
  return {
    live,
    url,
    async done() {
      stopLoad = true;
      await load;
      live.close();
      await new Promise<void>((r) => server.close(() => r()));
      await pipeline.close();
      assert.equal(pipeline.stats().ledger.balanced, true);
    },
  };
}

/** Reads server-sent events from `url` until `n` data events arrived; then disconnects. */
async function readEvents(url: string, n: number): Promise<{ hello: LiveHello; samples: LiveSample[] }> {
  const ac = new AbortController();
  const res = await fetch(url, { signal: ac.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let hello: LiveHello | null = null;
  const samples: LiveSample[] = [];
  while (samples.length < n) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split('\n').find((l) => l.startsWith('data: '))?.slice(6);
      if (!data) continue;
      if (block.includes('event: hello')) hello = JSON.parse(data);
      else samples.push(JSON.parse(data));
    }
  }
  ac.abort();
  assert.ok(hello, 'a hello event first');
  return { hello, samples };
}

test('live: no sampling without viewers; one sample per interval shared by all viewers; stops when they leave', async () => {
  const s = await setup();
  try {
    await sleep(350);
    assert.equal(s.live.samples, 0, 'nothing computed while nobody watches');
    const [a, b] = await Promise.all([readEvents(`${s.url}/live/events`, 4), readEvents(`${s.url}/live/events`, 4)]);
    // Shared: both viewers saw the same samples (same timestamps), and the sampler computed
    // each once — not once per viewer.
    const ta = new Set(a.samples.map((x) => x.t));
    assert.ok(b.samples.some((x) => ta.has(x.t)), 'the viewers got the same samples');
    const taken = s.live.samples;
    assert.ok(taken <= Math.max(...[a, b].map((v) => v.samples.length)) + 2, `one sample per interval, not per viewer: ${taken}`);
    assert.equal(a.hello.kind, 'run');
    assert.equal(a.hello.sloMs, 15);
    assert.equal(a.hello.sloSource, 'configured');
    const last = a.samples[a.samples.length - 1];
    assert.ok(a.samples.some((x) => x.inPerSec > 0 && x.committedPerSec > 0), 'under load, items in and committed per second');
    assert.ok(a.samples.some((x) => x.p99Ms !== null && x.p99Ms >= (x.p50Ms ?? 0)));
    assert.deepEqual(last.window, { maxItems: 8, maxWaitMs: 1 });
    assert.deepEqual(last.controller, { kind: 'aimd', lastP99Ms: 3 });
    assert.equal(last.sinkUp, true);
    assert.equal(last.balanced, true);
    assert.ok(a.samples.some((x) => x.lag === 42), 'the source lag arrives (fetched without waiting)');
    assert.ok(a.samples.some((x) => x.batchMean !== null && x.batchMean > 0 && x.batchMean <= 8));
    // Both gone: the sampler stops.
    for (let i = 0; i < 50 && s.live.viewerCount > 0; i++) await sleep(20);
    assert.equal(s.live.viewerCount, 0);
    const after = s.live.samples;
    await sleep(350);
    assert.equal(s.live.samples, after, 'no sampling after the last viewer left');
  } finally {
    await s.done();
  }
});

test('live: a viewer who arrives later gets the history kept while someone watched', async () => {
  const s = await setup();
  try {
    const ac = new AbortController();
    const first = await fetch(`${s.url}/live/events`, { signal: ac.signal });
    const reader = first.body!.getReader();
    while (s.live.samples < 3) {
      await reader.read();
    }
    const late = await readEvents(`${s.url}/live/events`, 1);
    assert.ok(late.hello.history.length >= 3, `history ${late.hello.history.length}`);
    ac.abort();
  } finally {
    await s.done();
  }
});

test('live: GET / is one self-contained HTML page (nothing loaded from elsewhere)', async () => {
  const s = await setup();
  try {
    const res = await fetch(`${s.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    const html = await res.text();
    assert.match(html, /<script>/);
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=|https?:\/\//, 'no external script, stylesheet or URL');
    assert.match(html, /new EventSource\('live\/events'\)/);
    assert.equal(s.live.samples, 0, 'serving the page computes nothing');
    assert.equal((await fetch(`${s.url}/nope`)).status, 404, 'other paths are left to the caller');
  } finally {
    await s.done();
  }
});
