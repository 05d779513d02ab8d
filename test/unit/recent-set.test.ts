import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RecentSet } from '../../packages/sluice/src/core/recent-set.js';

test('RecentSet: holds exactly the last capacity distinct keys added, oldest first', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 100 }), fc.constantFrom(1, 2, 8), fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 2000 }), (capacity, shards, keys) => {
      const r = new RecentSet(capacity, shards);
      const order: string[] = []; // distinct keys in first-added order, the model's window at its end
      for (const k of keys) {
        const key = `k${k}`;
        const window = order.slice(Math.max(0, order.length - capacity));
        assert.equal(r.has(key), window.includes(key), `has(${key})`);
        if (!window.includes(key)) order.push(key);
        r.add(key);
        assert.equal(r.size, Math.min(order.length, capacity));
      }
      assert.deepEqual([...r], order.slice(Math.max(0, order.length - capacity)));
    }),
    { numRuns: 1000 },
  );
});

test('RecentSet: a key already held keeps its place (not refreshed), as the Set it replaces did', () => {
  const r = new RecentSet(2);
  r.add('a');
  r.add('b');
  r.add('a'); // held: no change
  r.add('c'); // drops the oldest: a
  assert.equal(r.has('a'), false);
  assert.equal(r.has('b'), true);
  assert.equal(r.has('c'), true);
  assert.throws(() => new RecentSet(0), RangeError);
  assert.throws(() => new RecentSet(8, 3), RangeError);
});
