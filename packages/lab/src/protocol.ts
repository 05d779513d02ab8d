/**
 * The repetition protocol for judged comparisons (docs/window.md, *Verdicts on a noisy
 * machine*). Every comparison the lab judges on a latency or a cost runs its variants as k ≥ 3
 * interleaved repetitions (A B C, A B C, …) on the same seeded schedule; its check reads the
 * median, records the spread, and states a tolerance that was measured before it, in the
 * lab's calibration step (repeated identical runs: `noiseOf`). A median whose distance from
 * the threshold is within the larger of the tolerance and the repetitions' own spread cannot
 * tell the two sides apart on this machine: the check says "not decidable here", with the
 * stalls that made the spread, and neither passes nor fails.
 */
import type { Check, CheckOp, Judgement, Verdict } from './types.js';
import { formatNumber } from './format-number.js';

/** Repetitions per judged comparison. */
export const REPS = 3;

/** Identical runs of a tolerance calibration step. */
export const NOISE_RUNS = 5;

/**
 * Runs `variants` `reps` times each, interleaved (v0 v1 v2, v0 v1 v2, …), so that a slow
 * minute of the machine falls on every variant alike. Returns the results per variant, in
 * repetition order. `run` receives the repetition index: the schedule's seed must not depend
 * on it (the same seeded schedule every repetition), only on the variant if at all.
 */
export async function interleaved<V, R>(variants: readonly V[], reps: number, run: (v: V, rep: number, index: number) => Promise<R>): Promise<R[][]> {
  const out: R[][] = variants.map(() => []);
  for (let rep = 0; rep < reps; rep++)
    for (const [i, v] of variants.entries()) out[i].push(await run(v, rep, i));
  return out;
}

export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Median absolute deviation from the median: one outlier of three does not move it, two do. */
export function mad(xs: readonly number[]): number {
  const m = median(xs);
  if (!Number.isFinite(m)) return Infinity;
  return median(xs.map((x) => Math.abs(x - m)));
}

/** The spread of repeated identical runs: absolute (MAD) and relative to the median. */
export interface Noise {
  values: number[];
  median: number;
  mad: number;
  relMad: number;
}

export function noiseOf(values: readonly number[]): Noise {
  const m = median(values);
  const d = mad(values);
  return { values: [...values], median: round(m), mad: round(d), relMad: m !== 0 && Number.isFinite(m) ? round(d / Math.abs(m)) : Infinity };
}

export interface JudgeOptions {
  /** Tolerance in the value's unit, from the calibration step. */
  tolerance: number;
  /** Which calibration figure it is, e.g. "MAD of p99 over 5 identical peak runs". */
  toleranceFrom: string;
  stalls?: Judgement['stalls'];
  /** Unit for the "needs" sentence (e.g. "ms"). */
  unit?: string;
}

/**
 * A judged check: the median of `reps` against `threshold`. Verdict: pass or fail when the
 * median's distance from the threshold exceeds max(tolerance, spread); otherwise
 * `undecidable`. Infinite or NaN repetitions (a run that lost items or could not offer its
 * load) count as the worst value, so two of three of them fail the check outright.
 */
export function judge(name: string, reps: readonly number[], op: '<=' | '<' | '>=' | '>', threshold: number, opts: JudgeOptions): Check {
  const worst = op === '<=' || op === '<' ? Infinity : -Infinity;
  const vals = reps.map((x) => (Number.isFinite(x) ? x : worst));
  const m = median(vals);
  const spread = mad(vals);
  const margin = op === '<=' || op === '<' ? threshold - m : m - threshold;
  const noise = Math.max(opts.tolerance, Number.isFinite(spread) ? spread : Infinity);
  let verdict: Verdict;
  if (Number.isNaN(margin) || vals.length === 0) verdict = 'fail';
  else if (margin === Infinity || margin > noise) verdict = 'pass';
  else if (margin === -Infinity || margin < -noise || (margin === 0 && (op === '<' || op === '>') && noise === 0)) verdict = 'fail';
  else verdict = 'undecidable';
  const u = opts.unit ? ` ${opts.unit}` : '';
  const judged: Judgement = {
    reps: vals.map(round),
    spread: round(spread),
    tolerance: round(opts.tolerance),
    toleranceFrom: opts.toleranceFrom,
    margin: round(margin),
    ...(opts.stalls ? { stalls: opts.stalls } : {}),
    ...(verdict === 'undecidable'
      ? { needs: `decidable where repeated identical runs spread less than ${formatNumber(Math.abs(margin))}${u} (MAD; here: tolerance ${formatNumber(opts.tolerance)}${u}, spread of these repetitions ${formatNumber(spread)}${u})` }
      : {}),
  };
  return { name, value: round(m), op: op as CheckOp, threshold, pass: verdict === 'pass', verdict, judged };
}

export function verdictOf(c: Check): Verdict {
  return c.verdict ?? (c.pass ? 'pass' : 'fail');
}

export function countVerdicts(checks: readonly Check[]): { pass: number; fail: number; undecidable: number } {
  const n = { pass: 0, fail: 0, undecidable: 0 };
  for (const c of checks) n[verdictOf(c)]++;
  return n;
}

function round(x: number): number {
  if (!Number.isFinite(x)) return x;
  return Math.abs(x) >= 100 ? Math.round(x * 10) / 10 : Math.round(x * 1000) / 1000;
}
