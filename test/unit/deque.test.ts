import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Deque } from '../../src/core/deque.js';

test('deque keeps FIFO order across growth and wrap-around', () => {
  const d = new Deque<number>(16);
  const model: number[] = [];
  let next = 0;
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < (round % 7) + 3; i++) {
      d.push(next);
      model.push(next++);
    }
    for (let i = 0; i < (round % 5) + 1 && model.length > 0; i++) assert.equal(d.shift(), model.shift());
    assert.equal(d.length, model.length);
    assert.equal(d.peek(), model[0]);
    assert.equal(d.peekLast(), model[model.length - 1]);
  }
  d.unshift(-1);
  assert.equal(d.peek(), -1);
  assert.equal(d.at(1), model[0]);
});

test('takeFront slices the head out in order (contiguous and across the wrap); putBackFront restores it', () => {
  for (const start of [0, 5, 12, 15]) {
    const d = new Deque<number>(16);
    // Move the head to `start` so that the slices below wrap around the ring (16 slots).
    for (let i = 0; i < start; i++) d.push(-1);
    for (let i = 0; i < start; i++) d.shift();
    for (let i = 0; i < 12; i++) d.push(i);
    const a = d.takeFront(5);
    assert.deepEqual(a, [0, 1, 2, 3, 4], `head at ${start}`);
    assert.equal(d.length, 7);
    assert.equal(d.peek(), 5);
    d.putBackFront(a, 2);
    assert.deepEqual(a, [0, 1]);
    assert.equal(d.length, 10);
    assert.deepEqual(d.takeFront(100), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'at most length, in order');
    assert.equal(d.length, 0);
    assert.equal(d.peek(), undefined);
    assert.deepEqual(d.takeFront(3), []);
    d.push(42);
    assert.equal(d.shift(), 42, 'usable after being emptied');
  }
});

test('takeFront leaves no reference behind in the ring (taken items can be collected)', () => {
  const d = new Deque<object>(16);
  for (let i = 0; i < 10; i++) d.push({ i });
  d.takeFront(10);
  const slots = (d as unknown as { buf: unknown[] }).buf;
  assert.equal(slots.filter((x) => x !== undefined).length, 0);
});
