/** `sluice tune`'s progress: a bar redrawn in place on a terminal, one plain line per phase in a pipe. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { progressFor } from '../../packages/sluice/src/tune/progress.js';

function stream(isTTY: boolean) {
  let text = '';
  return { s: { isTTY, columns: 80, write: (c: string) => ((text += c), true) } as unknown as NodeJS.WriteStream, text: () => text };
}

test('on a terminal: one line redrawn with \\r, ended by a newline', () => {
  const o = stream(true);
  const p = progressFor(o.s);
  p.update(0, 10, 'cost model');
  p.update(5, 10, 'grid');
  p.update(10, 10, 'done');
  p.end();
  assert.equal(o.text().split('\r').length - 1, 3);
  assert.match(o.text(), /\[#{15}\.{15}\]  50% grid/);
  assert.match(o.text(), /\[#{30}\] 100% done/);
  assert.ok(o.text().endsWith('\n'));
  assert.equal(o.text().split('\n').length, 2, 'a single line');
});

test('in a pipe: one plain line per phase, no carriage return', () => {
  const o = stream(false);
  const p = progressFor(o.s);
  p.update(0, 10, 'cost model');
  p.update(1, 10, 'cost model');
  p.update(6, 10, 'grid');
  p.end();
  assert.equal(o.text(), 'sluice tune: cost model (0/10 steps)\nsluice tune: grid (6/10 steps)\n');
});
