import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchQueue, Deque } from '../../packages/sluice/src/core/deque.js';

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

test('BatchQueue: FIFO across chunks; a full head chunk is handed over whole, other cuts are copied out', () => {
  const q = new BatchQueue<number>(4);
  const model: number[] = [];
  let next = 0;
  const push = (n: number) => {
    for (let i = 0; i < n; i++) {
      q.push(next);
      model.push(next++);
    }
  };
  const take = (n: number) => {
    const got = q.takeFront(n);
    assert.deepEqual(got, model.splice(0, n));
    assert.equal(q.length, model.length);
    assert.equal(q.peek(), model[0]);
    return got;
  };
  push(10); // chunks [0..3] [4..7] [8, 9]
  take(4);
  take(3); // part of a chunk
  take(4); // across chunks
  assert.equal(q.shift(), model.shift());
  assert.equal(q.length, 0);
  assert.deepEqual(q.takeFront(3), []);
  push(7);
  assert.equal(q.shift(), model.shift()); // the head chunk's offset moves
  q.unshift(-1); // back into the head chunk
  model.unshift(-1);
  q.unshift(-2); // in front of it: a new chunk
  model.unshift(-2);
  take(100); // at most length, in order
  for (let round = 0; round < 300; round++) {
    push((round % 9) + 1);
    if (round % 4 === 0 && model.length > 0) assert.equal(q.shift(), model.shift());
    take(round % 6);
  }
});

test('BatchQueue: putBackFront restores the tail of a cut at the head, in order', () => {
  const q = new BatchQueue<number>(8);
  for (let i = 0; i < 12; i++) q.push(i);
  const batch = q.takeFront(8);
  q.putBackFront(batch, 5);
  assert.deepEqual(batch, [0, 1, 2, 3, 4]);
  assert.equal(q.length, 7);
  assert.deepEqual(q.takeFront(7), [5, 6, 7, 8, 9, 10, 11]);
});

test('BatchQueue: a cut of exactly the head chunk takes it without a copy; the queue keeps no reference to copied-out items', () => {
  const q = new BatchQueue<object>(4);
  const items = Array.from({ length: 6 }, (_, i) => ({ i }));
  for (const it of items) q.push(it);
  const first = q.takeFront(4);
  assert.deepEqual(first, items.slice(0, 4));
  q.push({ i: 6 });
  const second = q.takeFront(1); // copied out of the head chunk
  assert.deepEqual(second, [items[4]]);
  const chunks = (q as unknown as { chunks: Deque<unknown[]> }).chunks;
  assert.equal(chunks.peek()![0], undefined, 'the copied-out slot is cleared');
  assert.equal(q.length, 2);
  q.chunkSize = 2; // the window changed: new chunks follow it
  for (let i = 0; i < 3; i++) q.push({ i: 10 + i });
  assert.equal(q.takeFront(10).length, 5);
});

test('BatchQueue: a partly filled tail is handed over trimmed to its items; windows above 4,096 items span chunks', () => {
  const q = new BatchQueue<number>(512);
  for (let i = 0; i < 3; i++) q.push(i);
  const b = q.takeFront(512);
  assert.deepEqual(b, [0, 1, 2]);
  assert.equal(b.length, 3);
  const big = new BatchQueue<number>(10_000);
  for (let i = 0; i < 9_000; i++) big.push(i);
  const all = big.takeFront(10_000);
  assert.equal(all.length, 9_000);
  assert.ok(all.every((v, i) => v === i));
  assert.equal(big.length, 0);
});
