import type { Check, CheckOp } from './types.js';

/** A check whose verdict is recomputable from `value`, `op` and `threshold`. */
export function check(name: string, value: number, op: Exclude<CheckOp, 'within' | '=='>, threshold: number): Check;
export function check(name: string, value: number | boolean | string, op: '==', threshold: number | boolean | string): Check;
export function check(name: string, value: number, op: 'within', threshold: [number, number]): Check;
export function check(name: string, value: number | boolean | string, op: CheckOp, threshold: Check['threshold']): Check {
  return { name, value, op, threshold, pass: evaluate(value, op, threshold) };
}

export function evaluate(value: Check['value'], op: CheckOp, threshold: Check['threshold']): boolean {
  switch (op) {
    case '<=':
      return typeof value === 'number' && Number.isFinite(value) && value <= (threshold as number);
    case '<':
      return typeof value === 'number' && Number.isFinite(value) && value < (threshold as number);
    case '>=':
      return typeof value === 'number' && Number.isFinite(value) && value >= (threshold as number);
    case '>':
      return typeof value === 'number' && Number.isFinite(value) && value > (threshold as number);
    case '==':
      return value === threshold;
    case 'within': {
      const [lo, hi] = threshold as [number, number];
      return typeof value === 'number' && value >= lo && value <= hi;
    }
  }
}

export function allPass(checks: Check[]): boolean {
  return checks.every((c) => c.pass);
}

/** A check that failed (a judged check that is not decidable here did not: see protocol.ts). */
export function failed(c: Check): boolean {
  return !c.pass && c.verdict !== 'undecidable';
}

export function formatCheck(c: Check): string {
  const v = typeof c.value === 'number' ? round(c.value) : c.value;
  const t = Array.isArray(c.threshold) ? `[${c.threshold.map((x) => round(x)).join(', ')}]` : typeof c.threshold === 'number' ? round(c.threshold) : c.threshold;
  const tag = c.pass ? 'PASS' : c.verdict === 'undecidable' ? 'N/D ' : 'FAIL';
  const j = c.judged;
  const judged = j
    ? ` (median of ${j.reps.length}: ${j.reps.join(', ')}; spread ${j.spread}, tolerance ${j.tolerance} from ${j.toleranceFrom}; margin ${j.margin})${c.verdict === 'undecidable' ? ` — not decidable here: ${j.needs}${j.stalls ? `; stalls (GC / loop / write max ms): ${j.stalls.map((x) => `${x.gcPauseMaxMs}/${x.eventLoopDelayMaxMs}/${x.sinkWriteMaxMs}`).join(', ')}` : ''}` : ''}`
    : '';
  return `${tag}  ${c.name}: ${v} ${c.op} ${t}${judged}`;
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const m = 10 ** digits;
  return Math.abs(x) >= 100 ? Math.round(x * 10) / 10 : Math.round(x * m) / m;
}
