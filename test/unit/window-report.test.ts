import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sameWithinStep, windowExperiment } from '../../packages/lab/src/experiments/window.js';
import { checksMarkdown } from '../../packages/lab/src/runner.js';
import { judge } from '../../packages/lab/src/protocol.js';
import type { ResultEnvelope } from '../../packages/lab/src/types.js';

const base = {
  experiment: 'window',
  sink: 'file',
  sloMs: 20,
  limitMs: 17,
  cellDurationMs: 2000,
  quick: false,
  loads: {
    calibration: { fixedCostMs: 0.3, unbatchedCapacityPerSec: 3333 },
    fullBatchItems: 4096, fullBatchMs: 5, sinkBatchedCapacityPerSec: 800_000, measuredCapacityPerSec: 300_000,
    lowPerSec: 666, peakPerSec: 9000, sloCapacityPerSec: 10_000, peakFraction: 0.03, ramp: [],
  },
  gridAxes: { maxItems: [], maxWaitMs: [] },
  grid: [],
  costModel: { fixedMs: 0.3, perItemMs: 0.0012 },
  noise: { window: { maxItems: 1024, maxWaitMs: 5 }, runMs: 2000, p99Ms: { low: { values: [9, 10, 11, 10, 30], mad: 1 }, peak: { values: [12, 13, 13, 14, 40], mad: 1 } }, opsPerItem: { low: { relMad: 0.02 }, peak: { relMad: 0.03 } } },
  chosen: { maxItems: 101, maxWaitMs: 13.5, reason: '101 items / 13.5 ms, derived', found: true },
  gridArgmin: { maxItems: 4096, maxWaitMs: 15 },
  lowOverhead: { ms: 3, cells: 24 },
  history: [
    { createdAt: '2026-12-04T10:00:00.000Z', quick: false, sloMs: 20, sink: 'file', chosen: { maxItems: 101, maxWaitMs: 13.5 }, found: true, loads: { low: 666, peak: 9000 }, fixedCostMs: 0.3, perItemUs: 1.2, lowOverheadMs: 3 },
    { createdAt: '2026-12-04T10:30:00.000Z', quick: false, sloMs: 20, sink: 'file', chosen: { maxItems: 96, maxWaitMs: 13 }, found: true, loads: { low: 650, peak: 8800 }, fixedCostMs: 0.31, perItemUs: 1.3, lowOverheadMs: 3.4 },
  ],
  reps: 3,
  validation: [
    { load: 'low', sink: 'real', rep: 0, durationMs: 6000, offeredPerSec: 666, throughputPerSec: 660, latencyMs: { p50: 10, p99: 14.2 }, fixedCostOpsPerItem: 0.1, batchSize: { p50: 9, histogram: [] }, flushReasons: {}, sizeFlushShare: 0, timeFlushShare: 1, reconciled: true, notSent: 0, offered: 4000, stalls: { gcPauseMaxMs: 1, eventLoopDelayMaxMs: 2, sinkWriteMaxMs: 31 } },
  ],
  replays: [],
  checks: [],
} as unknown as ResultEnvelope;

test('window report: the derived choice, the tolerance calibration, every repetition and the last runs side by side', () => {
  const md = windowExperiment.markdown!(base);
  assert.match(md, /\*\*Chosen \(derived, not an argmin\):\*\* 101 items \/ 13\.5 ms, derived/);
  assert.match(md, /\*\*Tolerance calibration\*\*.*9, 10, 11, 10, 30 ms \(MAD 1 ms\)/);
  assert.match(md, /grid's argmin .*4096 items \/ 15 ms/);
  assert.match(md, /\| real \| low \| 1 \| 6 \| 666 \| 660 \| 10 \| 14\.2 \|/);
  assert.match(md, /last 2 full runs/);
  assert.match(md, /\| 2026-12-04 10:30:00 UTC \| 96 \/ 13 ms \| 650 \| 8800 \|/);
});

test('checks: a judged check that is not decidable here is counted apart, with what it would need', () => {
  const nd = judge('p99 (ms)', [15, 25, 35], '<=', 20, { tolerance: 2, toleranceFrom: 'calibration', unit: 'ms' });
  const ok = judge('p99 (ms)', [12, 13, 30], '<=', 20, { tolerance: 2, toleranceFrom: 'calibration', unit: 'ms' });
  const md = checksMarkdown({ ...base, checks: [nd, ok] });
  assert.match(md, /1\/2 pass, 0 fail, 1 not decidable here/);
  assert.match(md, /N\/D +p99 \(ms\): 25 <= 20 .*not decidable here: decidable where repeated identical runs spread less than 5 ms/);
});

test('the chosen window agrees within one grid step: maxItems within 2×, the wait within one gap of the wait axis', () => {
  const waits = [0, 2, 5, 10, 15, 20, 40];
  assert.equal(sameWithinStep([{ maxItems: 101, maxWaitMs: 13.5 }, { maxItems: 96, maxWaitMs: 13 }, { maxItems: 150, maxWaitMs: 11 }], waits), true);
  assert.equal(sameWithinStep([{ maxItems: 101, maxWaitMs: 13.5 }, { maxItems: 40, maxWaitMs: 13 }], waits), false);
  assert.equal(sameWithinStep([{ maxItems: 101, maxWaitMs: 13.5 }, { maxItems: 101, maxWaitMs: 4 }], waits), false);
});

test('write-up: the window paragraph reads the median repetition of the real sink and one median replay per trace', async () => {
  const { windowParagraph } = await import('../../packages/lab/src/writeup.js');
  const v = (load: string, sink: string, p99: number) => ({ load, sink, latencyMs: { p99 }, offeredPerSec: load === 'low' ? 600 : 9000, flushReasons: { size: 9, time: 1 }, batchSize: { p50: 100 } });
  const rp = (trace: string, p99: number) => ({ trace, latencyMs: { p99 }, dropped: 0 });
  const r = {
    ...base,
    chosen: { maxItems: 101, maxWaitMs: 13.5, reason: 'derived', found: true },
    validation: [v('low', 'real', 14), v('low', 'real', 30), v('low', 'real', 13), v('peak', 'real', 12), v('peak', 'replay', 50), v('peak', 'real', 11), v('peak', 'real', 19)],
    replays: [rp('bursty', 12), rp('bursty', 40), rp('bursty', 13), rp('zeek-ssl', 15)],
  } as unknown as ResultEnvelope;
  const t = windowParagraph(r)!.text;
  assert.match(t, /Re-measured \(median of 3 runs per load\) its p99 was 14 ms at low load .* and 12 ms at peak load/);
  assert.match(t, /On bursty replay p99 was 13 ms \(bursty\) and 15 ms \(zeek-ssl\)/);
});
