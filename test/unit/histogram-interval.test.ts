import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LatencyHistogram } from '../../packages/sluice/src/metrics/histogram.js';

// The interval reader reads a difference of counts arrays; the reference is a histogram of the
// interval's values alone, summarised by the library itself.
test('LatencyHistogram.intervalReader: each interval reads as a histogram of its values alone', () => {
  const ms = fc.oneof(fc.double({ min: 0, max: 5, noNaN: true }), fc.double({ min: 5, max: 5_000, noNaN: true }), fc.constantFrom(0.0004, 1, 20, 3_600_001));
  fc.assert(
    fc.property(fc.array(fc.array(ms, { maxLength: 400 }), { minLength: 1, maxLength: 5 }), (intervals) => {
      const h = new LatencyHistogram();
      const read = h.intervalReader();
      for (const values of intervals) {
        const alone = new LatencyHistogram();
        for (const v of values) {
          h.recordMs(v);
          alone.recordMs(v);
        }
        const got = read();
        const want = alone.summary();
        assert.equal(got.count, want.count);
        for (const k of ['p50', 'p90', 'p99', 'p999'] as const) assert.equal(got[k], want[k], k);
        assert.ok(Math.abs(got.mean - want.mean) <= 0.001, `mean ${got.mean} vs ${want.mean}`);
        // hdr's maxValue is the top value's highest equivalent (+ the unit mask): the same bucket.
        assert.ok(Math.abs(got.max - want.max) <= Math.max(0.002, want.max * 0.001), `max ${got.max} vs ${want.max}`);
      }
    }),
    { numRuns: 200 },
  );
});

test('LatencyHistogram.intervalReader: an empty interval reads zero', () => {
  const h = new LatencyHistogram();
  const read = h.intervalReader();
  assert.equal(read().count, 0);
  h.recordMs(3);
  assert.equal(read().count, 1);
  assert.deepEqual(read(), { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 });
});
