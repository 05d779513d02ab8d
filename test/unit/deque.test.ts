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
