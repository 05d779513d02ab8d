import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as hdr from 'hdr-histogram-js';
import { withFastIndex, CountHistogram, LatencyHistogram } from '../../packages/sluice/src/metrics/histogram.js';

const build = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });

test('fast counts index equals the library index from 1 µs to 1 hour', () => {
  const lib = build() as unknown as { countsArrayIndex(v: number): number };
  const fast = withFastIndex(build()) as unknown as { countsArrayIndex(v: number): number };
  const values: number[] = [];
  for (let v = 1; v <= 5000; v++) values.push(v);
  for (let k = 1; k < 32; k++) for (const d of [-2, -1, 0, 1, 2]) values.push(2 ** k + d);
  let x = 12345;
  for (let i = 0; i < 200_000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    values.push(1 + Math.floor((x / 4294967296) ** 3 * 3_600_000_000));
  }
  for (const v of values) if (v >= 1 && v <= 3_600_000_000) assert.equal(fast.countsArrayIndex(v), lib.countsArrayIndex(v), `value ${v}`);
});

test('a LatencyHistogram with the fast index reports the same percentiles as the library', () => {
  const ours = new LatencyHistogram();
  const ref = build();
  let x = 99;
  for (let i = 0; i < 50_000; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const ms = (x / 4294967296) * 250;
    ours.recordMs(ms);
    ref.recordValue(Math.max(1, Math.round(ms * 1000)));
  }
  for (const p of [50, 90, 99, 99.9]) assert.equal(ours.percentileMs(p), ref.getValueAtPercentile(p) / 1000);
});

test('a CountHistogram (fast index too) reports the same summary as the library over batch sizes', () => {
  const ours = new CountHistogram();
  const ref = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 100_000_000, numberOfSignificantValueDigits: 3 });
  let x = 7;
  for (let i = 0; i < 20_000; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const n = 1 + Math.floor((x / 4294967296) ** 4 * 99_999_999);
    ours.record(n);
    ref.recordValue(n);
  }
  const s = ours.summary();
  assert.equal(s.count, ref.totalCount);
  assert.equal(s.max, ref.maxValue);
  for (const [p, v] of [[50, s.p50], [99, s.p99]] as const) assert.equal(v, ref.getValueAtPercentile(p));
});
