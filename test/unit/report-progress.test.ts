import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { BarProgress, createProgress, formatEta, isInteractive } from '../../packages/lab/src/progress-tty.js';
import { LineProgress } from '../../packages/lab/src/progress.js';

function fakeStream(isTTY: boolean) {
  const s = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number; text: () => string };
  s.isTTY = isTTY;
  s.columns = 120;
  let buf = '';
  s.on('data', (d: Buffer) => (buf += d.toString()));
  s.text = () => buf;
  return s;
}

test('not a terminal, or in CI, or TERM=dumb: plain lines', () => {
  assert.equal(isInteractive({ isTTY: true }, {}), true);
  assert.equal(isInteractive({ isTTY: false }, {}), false);
  assert.equal(isInteractive({}, {}), false);
  assert.equal(isInteractive({ isTTY: true }, { CI: 'true' }), false);
  assert.equal(isInteractive({ isTTY: true }, { TERM: 'dumb' }), false);
  const s = fakeStream(false);
  const p = createProgress({ stream: s, env: {} });
  assert.ok(p instanceof LineProgress);
  p.start('window: sweep', 4);
  p.tick(2, 'cell 2');
  p.done('chosen');
  assert.match(s.text(), /\[window: sweep\] started \(4 steps\)\n\[window: sweep\] 50% eta \d+s cell 2\n\[window: sweep\] done in [\d.]+s: chosen\n/);
});

test('on a terminal: a bar per task with ETA and status, then a one-line summary', async () => {
  const s = fakeStream(true);
  const out = fakeStream(false);
  const p = createProgress({ stream: s, stdout: out, env: {} });
  assert.ok(p instanceof BarProgress);
  p.start('batching: ladder', 8);
  p.tick(1, 'unbatched 0.5×C1: 1338/s');
  await new Promise((r) => setTimeout(r, 250));
  p.done('8 runs');
  p.start('batching: second', 1);
  p.tick();
  p.done();
  const t = s.text();
  assert.match(t, /batching: ladder/);
  assert.match(t, /ETA/);
  assert.match(t, /unbatched 0\.5×C1: 1338\/s/);
  assert.match(t, /✓.*batching: ladder.*8 runs/);
  assert.match(t, /✓.*batching: second/);
  assert.equal(out.text(), '');
});

test('stdout printed while a bar shows lands above it, and stdout is restored after', () => {
  const s = fakeStream(true);
  const out = fakeStream(true);
  const originalWrite = out.write;
  const p = createProgress({ stream: s, stdout: out, env: {} });
  p.start('task', 2);
  assert.notEqual(out.write, originalWrite);
  out.write('a table line\n');
  p.done();
  assert.equal(out.write, originalWrite);
  assert.equal(out.text(), 'a table line\n');
  assert.ok(s.text().includes('\r\x1b[2K'), 'the bar line was cleared before the stdout line');
});

test('a task never finished does not keep the process alive (timers unref\'d)', () => {
  const s = fakeStream(true);
  const p = createProgress({ stream: s, stdout: fakeStream(false), env: {} });
  p.start('abandoned', 3);
  p.tick();
  // No done(): if the redraw timer were ref'd, this test file would never exit.
});

test('ETA from the average pace so far, counting down, "…" before the first step', () => {
  assert.equal(formatEta(0, 0, 10, 5000), '…');
  assert.equal(formatEta(0, 2, 10, 4000), '16s');
  assert.equal(formatEta(0, 2, 10, 5000), '20s');
  assert.equal(formatEta(0, 1, 10, 30_000), '4m30s');
  assert.equal(formatEta(0, 1, 100, 3_600_000), '99h00m');
  assert.equal(formatEta(0, 10, 10, 5000), '0s');
});
