import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RecentSet } from '../../packages/sluice/src/core/recent-set.js';

test('RecentSet: holds at most capacity keys, and once full at least capacity − ⌈capacity/8⌉ + 1, always the most recent ones', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 100 }), fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 2000 }), (capacity, keys) => {
      const r = new RecentSet(capacity);
      const order: string[] = []; // distinct keys in first-added order
      const seen = new Set<string>();
      for (const k of keys) {
        const key = `k${k}`;
        const held = r.has(key);
        r.add(key);
        if (!held) {
          order.push(key);
          seen.add(key);
        }
        assert.ok(r.size <= capacity, `size ${r.size} ≤ ${capacity}`);
        assert.equal([...r].length, r.size);
      }
      const added = order.length;
      // Every key added since the last dropped generation is held: at least the last `floor` added.
      const floor = Math.min(added, capacity - Math.ceil(capacity / 8) + 1);
      assert.ok(r.size >= floor, `size ${r.size} ≥ ${floor}`);
      for (const key of order.slice(order.length - floor)) assert.ok(r.has(key), `${key} (recent) held`);
    }),
    { numRuns: 1000 },
  );
});

test('RecentSet: a key already held keeps its place (not refreshed), as the Set it replaces did', () => {
  const r = new RecentSet(2, 2); // generations of 1
  r.add('a');
  r.add('b');
  r.add('a'); // held: no change
  r.add('c'); // drops the oldest generation: a
  assert.equal(r.has('a'), false);
  assert.equal(r.has('b'), true);
  assert.equal(r.has('c'), true);
  assert.throws(() => new RecentSet(0), RangeError);
});
