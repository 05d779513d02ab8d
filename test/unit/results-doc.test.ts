import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchMarkdown, type BenchCaseResult } from '../../packages/lab/src/results-doc.js';

const host = { cpus: 2, cpuModel: 'Test CPU', totalMemMb: 4096, nodeVersion: 'v20.0.0', platform: 'linux' } as BenchCaseResult['host'];

function caseResult(n: number, checks: BenchCaseResult['checks'], extra: Partial<BenchCaseResult> = {}): BenchCaseResult {
  return { case: n, title: `Case ${n} — test`, createdAt: '2026-01-02T03:04:05.000Z', commit: 'abc1234', quick: false, reps: 3, host, loadAverage: { start: [0.5, 0.4, 0.3], end: [1, 1, 1] }, checks, ...extra };
}

test('benchMarkdown: every case in order, with its own run, and the three verdicts apart', () => {
  const md = benchMarkdown([
    caseResult(5, [
      { name: 'front door: file, identity', value: 1, op: '>=', threshold: 0.8, pass: true },
      { name: 'front door: file, gzip', value: 0.8, op: '>=', threshold: 0.8, pass: false, verdict: 'undecidable', why: 'spread' },
      { name: 'front door: postgres, identity', value: 0.64, op: '>=', threshold: 0.8, pass: false },
    ], { notes: ['a | note'], quick: true }),
    caseResult(3, [{ name: 'postgres: append', value: null, op: '>=', threshold: null, pass: false }]),
  ]).join('\n');
  assert.ok(md.indexOf('### Case 3') < md.indexOf('### Case 5'), 'cases in order');
  assert.match(md, /Run 2026-01-02T03:04:05.000Z at `abc1234` \(quick\), medians of 3, 2 × Test CPU/);
  assert.match(md, /\| front door: file, identity \| 1 \| >= \| 0.8 \| pass \|/);
  assert.match(md, /\| front door: file, gzip \| 0.8 \| >= \| 0.8 \| not decidable here \|/);
  assert.match(md, /\| front door: postgres, identity \| 0.64 \| >= \| 0.8 \| \*\*loses\*\* \|/);
  assert.match(md, /\| postgres: append \| — \| >= \| — \| \*\*loses\*\* \|/, 'an unmeasured check is shown as such, and not as a pass');
  assert.match(md, /- a \\\| note/, 'a pipe in a note does not break the table');
});

test('benchMarkdown: no case files says how to make them', () => {
  assert.match(benchMarkdown([]).join('\n'), /No benchmark results on this machine: run `npm run bench`/);
});
