import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fmtNum, headlines, writeup, writeupMarkdown } from '../../packages/lab/src/writeup.js';
import { adaptiveResult, batchingResult, overflowResult, poisonResult, windowResult } from '../helpers/report-fixtures.js';
import type { ResultEnvelope } from '../../packages/lab/src/types.js';

const text = (results: ResultEnvelope[]) => writeupMarkdown(writeup(results));

test('no results: no write-up at all', () => {
  assert.deepEqual(writeup([]), []);
});

test('batching alone: the amortized fixed cost with the measured numbers, nothing about other experiments', () => {
  const paragraphs = writeup([batchingResult()]);
  const topics = paragraphs.map((p) => p.topic);
  assert.deepEqual(topics, ['What was amortized', 'Which metric to alert on first']);
  const t = writeupMarkdown(paragraphs);
  assert.match(t, /fsync the sink pays on every write — file \(write \+ fdatasync per batch\) sink/);
  assert.ok(!t.includes('/tmp/'), 'scratch path left out');
  assert.match(t, /Calibrated at 0\.387 ms per operation, it caps an item-at-a-time pipeline at C1 ≈ 2,584 items\/s/);
  assert.match(t, /At 30×C1 \(offered 77,520 items\/s\)/);
  assert.match(t, /from 1 to 0\.00226 per item \(443× fewer, mean batch 443 items\)/);
  assert.match(t, /from 3,253 to 77,553 items\/s \(23\.8×\)/);
  assert.match(t, /took p99 from 2,105 ms to 11\.1 ms against a 20 ms SLO/);
  // Alerting reasoned from batching: breaches are exactly the blocked runs.
  assert.match(t, /unbatched at 2×C1, unbatched at 10×C1 and unbatched at 30×C1/);
  assert.match(t, /up to 1,438 ms/);
  for (const absent of ['window', 'overflow', 'lag']) assert.ok(!t.toLowerCase().includes(absent), `no claim about ${absent}`);
});

test('the saturation claim is dropped when blocked runs and SLO breaches do not coincide', () => {
  const r = batchingResult();
  const runs = r.runs as { variant: string; loadMultiple: number; producerBlockedMs: number }[];
  runs.find((x) => x.variant === 'batched' && x.loadMultiple === 30)!.producerBlockedMs = 50;
  assert.deepEqual(
    writeup([r]).map((p) => p.topic),
    ['What was amortized'],
  );
});

test('partial batching figures: only the sentences whose figures exist', () => {
  const r = batchingResult();
  delete (r as Record<string, unknown>).runs;
  const t = text([r]);
  assert.match(t, /0\.387 ms/);
  assert.ok(!t.includes('30×C1'));
  const none = batchingResult();
  delete (none as Record<string, unknown>).runs;
  delete (none as Record<string, unknown>).calibration;
  assert.deepEqual(writeup([none]), []);
});

test('window: the chosen window, its reason, its p99 at both loads against the SLO, flushes by size and replays', () => {
  const t = text([windowResult()]);
  assert.match(t, /maxItems = 512 and maxWaitMs = 5 ms: fewest fixed-cost ops per item at peak .* breached the margin at peak\./);
  assert.match(t, /In the sweep its p99 was 9\.4 ms at low load \(1,000 items\/s\) and 14\.2 ms at peak load \(60,000 items\/s\), inside the 20 ms SLO/);
  assert.match(t, /At peak 94% of flushes were by size \(median batch 498 of 512\)/);
  assert.match(t, /On bursty replay p99 was 12\.5 ms \(bursty\) and 16\.3 ms \(azure-code\) — every replay inside the SLO, with 0 items dropped/);
});

test('window over the SLO is said so, not hidden', () => {
  const r = windowResult();
  (r.grid as { load: string; maxItems: number; latencyMs: { p99: number } }[]).find((g) => g.load === 'peak' && g.maxItems === 512)!.latencyMs.p99 = 25;
  const t = text([r]);
  assert.match(t, /25 ms at peak load \(60,000 items\/s\), over the 20 ms SLO at peak load/);
  assert.ok(!t.includes('inside the 20 ms SLO'));
});

test('window: a peak closed by the timer is not credited to the size bound', () => {
  const r = windowResult();
  const peak = (r.grid as { load: string; maxItems: number; flushReasons: Record<string, number> }[]).find((g) => g.load === 'peak' && g.maxItems === 512)!;
  peak.flushReasons = { size: 0, bytes: 0, time: 300, drain: 1 };
  const t = text([r]);
  assert.match(t, /At peak 0% of flushes were by size .* so the timer, not the size bound, closed most batches there/);
  assert.ok(!t.includes('the size bound, not the timer'));
});

test('overflow: the OOM kill, the loss/latency trade-off per policy, and a choice reasoned from them', () => {
  const t = text([overflowResult()]);
  assert.match(t, /`unbounded` \(SIGKILL, exit 137\) was OOM-killed while `block`, `drop-newest`, `drop-oldest` and `spill` ran to completion/);
  assert.match(t, /`block` lost 0 at p99 1,800 ms; `drop-newest` lost 48,000 \(48% of accepted\) at p99 12\.5 ms; `drop-oldest` lost 47,000 \(47% of accepted\) at p99 9\.1 ms; `spill` lost 0 at p99 2,400 ms/);
  assert.match(t, /Choose `block`: it lost nothing and had the lowest p99 of the lossless policies \(1,800 ms against 2,400 ms for `spill`\)/);
  assert.match(t, /`drop-oldest` kept p99 lower \(9\.1 ms\) only by losing 47,000 items/);
  assert.match(t, /no lossless policy met the 20 ms SLO/);
});

test('overflow: when spill is the faster lossless policy, it is the one chosen', () => {
  const r = overflowResult();
  (r.variants as { policy: string; latencyMs: { p99: number } }[]).find((v) => v.policy === 'spill')!.latencyMs.p99 = 15;
  const t = text([r]);
  assert.match(t, /Choose `spill`/);
  assert.ok(!t.includes('no lossless policy met'));
});

test('poison: lag slope is the first alert, with the silent p99 of what committed', () => {
  const t = text([batchingResult(), poisonResult()]);
  assert.match(t, /Alert first on consumer lag and its slope: in `poison`, abort-whole-batch's lag grew at 1,960 items\/s \(98% of the offered 2,000\/s\) while the p99 of the items it did commit was 11\.2 ms — inside the 20 ms SLO/);
  assert.match(t, /With split-and-retry the slope was 3\.2 items\/s/);
  assert.match(t, /Next, saturation/);
});

test('poison without a growing lag makes no lag claim', () => {
  const r = poisonResult();
  (r.variants as { strategy: string; lagSlopePerSec: number }[]).find((v) => v.strategy === 'abort-whole-batch')!.lagSlopePerSec = 5;
  assert.deepEqual(writeup([r]), []);
});

test('adaptive: the best static with hindsight against AIMD per regime, and who wins where', () => {
  const t = text([adaptiveResult()]);
  assert.match(t, /best static window over both regimes was maxItems = 512 and maxWaitMs = 10 ms/);
  assert.match(t, /at low load p99 15\.5 ms, inside the SLO with 0\.125 fixed-cost ops per item \(the static: 14 ms, 0\.2\) and at high load p99 13 ms, inside the SLO with 0\.0026 fixed-cost ops per item \(the static: 12 ms, 0\.0025\)/);
  assert.match(t, /Where both meet the SLO, AIMD spends 37\.5% fewer at low load and the static spends 3\.85% fewer at high load/);
  // The best static re-measured as long as AIMD breaches at high load: AIMD wins there, said plainly.
  const breach = adaptiveResult();
  breach.validatedStatics = [
    { maxItems: 512, maxWaitMs: 10, regime: 'low', latencyMs: { p50: 8, p99: 14, max: 20, count: 5000 }, fixedCostOpsPerItem: 0.2, meetsSlo: true },
    { maxItems: 512, maxWaitMs: 10, regime: 'high', latencyMs: { p50: 9, p99: 23.2, max: 40, count: 90000 }, fixedCostOpsPerItem: 0.0025, meetsSlo: false },
  ];
  const tb = text([breach]);
  assert.match(tb, /\(the static: 23\.2 ms, 0\.0025\)/);
  assert.match(tb, /Where both meet the SLO, AIMD spends 37\.5% fewer at low load\./);
  assert.match(tb, /At high load the static, measured as long as AIMD, breaches the SLO that AIMD meets: AIMD wins there whatever either spends\./);
  const none = adaptiveResult();
  none.bestStatic = null;
  assert.match(text([none]), /No static window of the grid met the SLO in both regimes\. The AIMD controller/);
});

test('overflow: a variant that failed without an OOM kill is not counted as surviving', () => {
  const r = overflowResult();
  const v = (r.variants as Record<string, unknown>[]).find((x) => x.policy === 'spill')!;
  v.survived = false;
  v.exitCode = 1;
  const t = text([r]);
  assert.match(t, /while `block`, `drop-newest` and `drop-oldest` ran to completion/);
  assert.match(t, /`spill` failed without an OOM kill/);
  assert.ok(!t.includes('2,400'));
});

test('every number in the full write-up comes from the fixtures', () => {
  const results = [batchingResult(), windowResult(), adaptiveResult(), overflowResult(), poisonResult()];
  const t = text(results);
  const source = JSON.stringify(results);
  // Derived figures (ratios, percentages) are checked above; every other number must appear in the sources.
  const derived = new Set(['443', '23.8', '94', '48', '47', '98', '1,000', '60,000', '2,584', '77,520', '3,253', '77,553', '2,105', '11.1', '16.3', '0.00226', '1,438', '1,800', '2,400', '48,000', '47,000', '1,960', '2,000', '37.5', '3.85']);
  for (const n of t.match(/\d[\d,]*(\.\d+)?/g) ?? []) {
    if (derived.has(n) || /^(0|1|2|5|20|30|99|137)$/.test(n) || n.startsWith('2026')) continue;
    assert.ok(source.includes(n.replace(/,/g, '')), `number ${n} is in the results`);
  }
  assert.equal(fmtNum(0.0022591784), '0.00226');
  assert.equal(fmtNum(2105.343), '2,105');
});

test('headlines: measured figures only', () => {
  assert.deepEqual(headlines([]), []);
  assert.deepEqual(headlines([batchingResult(), windowResult()]), [
    { value: '23.8×', label: 'throughput, batched vs unbatched at 30×C1' },
    { value: '443×', label: 'fewer fsyncs per item at 30×C1' },
    { value: '11.1 ms', label: 'batched p99 at 30×C1 (SLO 20 ms)', good: true },
    { value: '512 / 5 ms', label: 'chosen window (maxItems / maxWaitMs)' },
  ]);
});
