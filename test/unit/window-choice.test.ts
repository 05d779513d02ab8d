import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseWindow, fanOut, fillWaitMs, headroomCorner, medianOf, refinementCorners, schedulePeakSecond, searchSloCapacity, sizePreferenceTie, snappedMaxItems, SIZE_PREFERENCE_NOISE, type Candidate } from '../../packages/lab/src/experiments/window-lab.js';
import { constantArrivals } from '../../packages/sluice/src/sources/load.js';

const c = (maxItems: number, maxWaitMs: number, opsPerItem: number, low: number, peak: number, sizeBound = false): Candidate => ({
  maxItems,
  maxWaitMs,
  opsPerItem,
  p99ByLoad: { low, peak },
  sizeBound,
});

test('window choice: fewest ops/item among windows under the bound at every load; says what the runner-up lost on', () => {
  const r = chooseWindow([c(1, 0, 1, 5, 900), c(512, 10, 0.002, 12, 14), c(1024, 10, 0.001, 12, 25), c(256, 10, 0.004, 12, 9)], 17, 20);
  assert.equal(r.chosen?.maxItems, 512);
  assert.equal(r.runnerUp?.maxItems, 256);
  assert.match(r.runnerUpLostOn, /ops per item/);
  assert.equal(r.cheapestInfeasible?.maxItems, 1024);
  assert.match(r.reason, /1024 items \/ 10 ms .* 25\.00 ms at peak/);
});

test('window choice: within 2% ops tie, the lower worst-case p99 wins; nothing feasible → null with a reason', () => {
  const r = chooseWindow([c(512, 10, 0.002, 15, 14), c(512, 15, 0.00199, 16.5, 14)], 17, 20);
  assert.equal(r.chosen?.maxWaitMs, 10);
  assert.match(r.runnerUpLostOn, /tied/);
  const none = chooseWindow([c(512, 10, 0.002, 30, 14)], 17, 20);
  assert.equal(none.chosen, null);
  assert.match(none.reason, /no window/);
  // A NaN/Infinity p99 (lost items, not sent) never qualifies.
  assert.equal(chooseWindow([c(512, 10, 0.002, Infinity, 14)], 17, 20).chosen, null);
});

test('window choice: a size-bound window within the tie is preferred to a cheaper timer-bound one, not beyond it', () => {
  const timer = c(4096, 15, 0.0015, 16, 16, false);
  const sized = c(600, 15, 0.00165, 16, 14, true);
  const r = chooseWindow([timer, sized], 17, 20, { tie: 0.1, preferSizeBound: true });
  assert.equal(r.chosen, sized);
  assert.match(r.reason, /preferred to 4096 items \/ 15 ms/);
  assert.match(r.runnerUpLostOn, /by the timer/);
  const tooDear = c(300, 15, 0.0033, 16, 8, true);
  assert.equal(chooseWindow([timer, tooDear], 17, 20, { tie: 0.1, preferSizeBound: true }).chosen, timer);
});

test('medianOf: the median of a finalist-style list; Infinity counts as the worst', () => {
  assert.equal(medianOf([29.8, 15.2, 16.1]), 16.1);
  assert.equal(medianOf([29.8, 21.5, 16.1]), 21.5);
  assert.equal(medianOf([16, Infinity, Infinity]), Infinity);
  assert.equal(medianOf([1, 2, 3, 4]), 2.5);
});

test('size preference band: what the snapped corner costs by construction + the noise allowance, within [10%, 50%]', () => {
  assert.equal(sizePreferenceTie(3000), 0.1, 'floor: the snap costs 2.8% at B = 3000');
  assert.ok(Math.abs(sizePreferenceTie(800) - (800 / 757 - 1 + SIZE_PREFERENCE_NOISE)) < 1e-9);
  assert.ok(Math.abs(sizePreferenceTie(178) - (178 / 157 - 1 + SIZE_PREFERENCE_NOISE)) < 1e-9);
  assert.ok(Math.abs(sizePreferenceTie(48) - (48 / 37 - 1 + SIZE_PREFERENCE_NOISE)) < 1e-9);
  assert.equal(sizePreferenceTie(0), 0.1);
  assert.equal(sizePreferenceTie(5), 0.5, 'capped: a 1-item corner at B = 5 is no refinement');
  // The corner falls inside its own band; a 16-item window at B = 178 (11× the ops) does not.
  const timer = c(4096, 5, 1 / 178, 12, 16, false);
  const corner = c(157, 10, 1 / 157, 14, 15, true);
  const tiny = c(16, 5, 1 / 16, 13, 12, true);
  const tie = sizePreferenceTie(178);
  assert.equal(chooseWindow([timer, corner, tiny], 17, 20, { tie, preferSizeBound: true }).chosen, corner);
  assert.equal(chooseWindow([timer, tiny], 17, 20, { tie, preferSizeBound: true }).chosen, timer);
  // One full run at peak 8.1k/s: the timer-bound family at 10 ms read 0.01097–0.01140 ops/item
  // (B = 89); its snapped corner 74 / 10 ms read 0.01372, 1.251× the minimum. It wins now.
  const family = [c(1024, 10, 0.01097, 16.1, 16.2, false), c(128, 10, 0.01116, 15.8, 14.7, false), c(2048, 10, 0.0114, 16.6, 14.8, false)];
  const snapped = c(74, 10, 0.01372, 14.9, 15.0, true);
  assert.equal(chooseWindow([...family, snapped], 17, 20, { tie: sizePreferenceTie(89), preferSizeBound: true }).chosen, snapped);
});

test('fan-out repeats each arrival k times at the same instant; peak second of a schedule', () => {
  const s = fanOut(constantArrivals(10), 3);
  const got = Array.from({ length: 7 }, () => s.next());
  assert.deepEqual(got, [0, 0, 0, 100, 100, 100, 200]);
  assert.equal(schedulePeakSecond(fanOut(constantArrivals(10), 3), 5000), 30);
});

test('snapped maxItems sits 1.5 Poisson sd below the median batch, never below 1', () => {
  assert.equal(snappedMaxItems(800), 757);
  assert.equal(snappedMaxItems(100), 85);
  assert.equal(snappedMaxItems(1), 1);
  // Its ops penalty at B = 800 is inside the 10% preference band.
  assert.ok(800 / snappedMaxItems(800) - 1 < 0.1);
});

test('fill wait: the time a Poisson load needs to bring B items in ≈ 97.7% of windows, rounded up to 0.5 ms', () => {
  // 428 items at 38,400/s: (428 + 2·√428) / 38.4 = 12.22 ms → 12.5 ms.
  assert.equal(fillWaitMs(428, 38_400), 12.5);
  // Mean + 2 sd is always longer than the mean arrival time, so the size cuts first.
  for (const [b, r] of [[100, 10_000], [1000, 91_000], [16, 500]] as const) assert.ok(fillWaitMs(b, r) > (b / r) * 1000);
  assert.equal(fillWaitMs(100, 0), Infinity);
  assert.equal(fillWaitMs(0, 1000), Infinity);
});

test('refinement corners: the fill corner (when its wait is longer and within the bound), then B − 1.5√B at the same and the next grid wait', () => {
  const waits = [0, 2, 5, 10, 15, 20, 40];
  // B = 428 at 10 ms, 38,400/s: fill wait 12.5 ms; snapped 396 at 10 and 15 ms.
  assert.deepEqual(refinementCorners(10, 428, 38_400, waits, 17), [
    { maxItems: 428, maxWaitMs: 12.5 },
    { maxItems: 396, maxWaitMs: 10 },
    { maxItems: 396, maxWaitMs: 15 },
  ]);
  // A bound of 12 ms leaves out the fill corner and the next wait.
  assert.deepEqual(refinementCorners(10, 428, 38_400, waits, 12), [{ maxItems: 396, maxWaitMs: 10 }]);
  // Given the base cell's low-load p99, the headroom corner comes first.
  assert.deepEqual(refinementCorners(10, 87, 7701, waits, 17, 13.75)[0], { maxItems: 76, maxWaitMs: 12.5 });
});

test('headroom corner: the longest wait the low load affords, and what the peak brings in it in ≈ 97.7% of windows', () => {
  // One run: 128 / 10 ms read 13.75 ms at low load (overhead 3.75 ms), bound 17 ms, peak 7,701/s:
  // wait 17 − 3.75 − 0.5 = 12.75 → 12.5 ms; n = 96.3 arrivals, n − 2√n = 76.6 → 76 items.
  assert.deepEqual(headroomCorner(10, 13.75, 7701, 17), { maxItems: 76, maxWaitMs: 12.5 });
  // No longer wait fits: none.
  assert.equal(headroomCorner(10, 16.8, 7701, 17), null);
  assert.equal(headroomCorner(10, Infinity, 7701, 17), null);
  assert.equal(headroomCorner(10, 13.75, 0, 17), null);
  // The peak brings fewer than 2 items in the wait: none.
  assert.equal(headroomCorner(1, 2, 200, 17), null);
  // Whatever the inputs, the window it returns is cut by size at least as often as Poisson says.
  for (const [w, p99, rate] of [[5, 8, 40_000], [10, 12, 20_000], [2, 4, 100_000]] as const) {
    const c = headroomCorner(w, p99, rate, 17)!;
    const n = (rate * c.maxWaitMs) / 1000;
    assert.ok(c.maxWaitMs > w && c.maxWaitMs + (p99 - w) <= 17 - 0.5);
    assert.ok(c.maxItems <= n - 2 * Math.sqrt(n) && c.maxItems > n - 2 * Math.sqrt(n) - 1);
  }
});

test('capacity at the SLO: up the ramp to the last step that holds; halves below the first step when it fails, down to the floor; then bisects', async () => {
  const ramp = [36_000, 54_000, 72_000, 90_000];
  const tried: number[] = [];
  const holdsUpTo = (limit: number) => async (rate: number) => (tried.push(rate), rate <= limit);
  // 72k fails; the geometric midpoint of 54k and 72k fails too, and 54k/62.4k is within 20%: done.
  assert.equal(await searchSloCapacity(ramp, 1000, holdsUpTo(60_000)), 54_000);
  assert.deepEqual(tried, [36_000, 54_000, 72_000, 62_354]);
  tried.length = 0;
  // The first step fails: 18k fails too, 9k holds; then two bisection steps between 9k and 18k.
  assert.equal(await searchSloCapacity(ramp, 1000, holdsUpTo(12_000)), 10_703);
  assert.deepEqual(tried, [36_000, 18_000, 9000, 12_728, 10_703]);
  tried.length = 0;
  assert.equal(await searchSloCapacity(ramp, 1000, holdsUpTo(12_000), 0), 9000, 'no refinement asked: the halving');
  tried.length = 0;
  // Nothing holds down to the floor: 0, and no step below the floor is tried.
  assert.equal(await searchSloCapacity(ramp, 5000, holdsUpTo(100)), 0);
  assert.deepEqual(tried, [36_000, 18_000, 9000]);
});
