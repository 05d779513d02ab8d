/**
 * `sluice tune`: measure the user's sink with the user's records and recommend the window
 * that holds a p99 SLO at the stated peak with the fewest fixed-cost operations per item.
 *
 * Steps (docs/tune.md):
 *   1. cost model: direct writes of several batch sizes → fixed ms, µs per item, per byte;
 *   2. capacity at the SLO: paced runs up a geometric ramp (then two bisection steps) with a
 *      window that adds at most a quarter of the bound, until p99 > bound;
 *   3. loads: the peak (--peak-rate, the busiest second of --trace, else PEAK_SHARE of the
 *      capacity) and the low load (LOW_SHARE of the peak);
 *   4. a grid of windows, each at low and at peak, repeated and interleaved; the window derived
 *      from the cost model (the chooser's deriveWindow) measured beside them;
 *   5. the chooser's chooseWindow over the medians: the cheapest window in fixed-cost ops per
 *      item whose p99 ≤ bound (SLO − margin) at both loads; the runner-up and what it lost on;
 *   6. validation: the chosen window at the peak, VALIDATION_RUNS times; it stands when the
 *      median p99 ≤ SLO and no run lost an item.
 * A sink too slow for the peak, or one that stalls (writes longer than the SLO), is said so
 * with the measured figures, and no window is recommended.
 */
import { invalidOption } from '../core/errors.js';
import { loadTrace, peakSecond } from '../sources/trace.js';
import type { Candidate, Choice, DerivedWindow, WindowChooser } from './chooser.js';
import { MAX_NOT_OFFERED_SHARE, measureCost, median, pacedRun, round3, type MeasuredCost, type PacedRun, type RecordShape, type TimedSink } from './measure.js';

/** The selection bound is SLO − margin: the lab's MARGIN_FRACTION (docs/window.md). */
export const MARGIN_FRACTION = 0.15;
/** Without --peak-rate or --trace, the peak is this share of the measured capacity at the SLO. */
export const PEAK_SHARE = 0.8;
/** The low load (quiet hours), as a share of the peak. */
export const LOW_SHARE = 0.1;
export const VALIDATION_RUNS = 3;
/**
 * A sink stalls when more than this share of its writes take longer than the SLO: then at
 * least that share of batches, and every item in them, miss the SLO whatever the window.
 */
export const STALL_SHARE = 0.01;

export interface TuneOptions {
  sloMs: number;
  peakPerSec?: number;
  tracePath?: string;
  quick: boolean;
  /** Called with (done, total, phase) as steps complete. */
  progress?: (done: number, total: number, phase: string) => void;
}

export interface CellResult extends Candidate {
  label: string;
  derived?: boolean;
  low: PacedRun[];
  peak: PacedRun[];
  sizeCutShareAtPeak: number;
  medianBatchAtPeak: number;
}

export type Verdict = 'recommended' | 'not-validated' | 'sink-too-slow' | 'sink-stalls';

export interface TuneResult {
  verdict: Verdict;
  /** One plain sentence for the verdict. */
  summary: string;
  sloMs: number;
  limitMs: number;
  records: string;
  sink: string;
  quick: boolean;
  cost: Omit<MeasuredCost, 'writesMs'>;
  stalls: { writes: number; overSlo: number; maxWriteMs: number; p99WriteMs: number };
  capacity: {
    perSec: number;
    probes: { ratePerSec: number; p99Ms: number; held: boolean; generatorLimited: boolean }[];
    /** 'found': a rate above it failed; 'at-least': no rate tried failed (the ramp ran out of probes). */
    bound: 'found' | 'at-least';
    /** The failing rate's runs could not offer their load although the queue never pushed back: this process, not the sink, was the limit. */
    limitedByGenerator: boolean;
  };
  loads: { peakPerSec: number; lowPerSec: number; peakFrom: string };
  derived: DerivedWindow | null;
  cells: CellResult[];
  choice: { chosen: string | null; runnerUp: string | null; reason: string; runnerUpLostOn: string };
  validation: { runs: { p99Ms: number; balanced: boolean; stalls: number }[]; medianP99Ms: number; held: boolean } | null;
  /** The config snippet `run --config` and `serve --config` accept as is; null when nothing is recommended. */
  snippet: Record<string, unknown> | null;
}

const label = (w: { maxItems: number; maxWaitMs: number }) => `${w.maxItems} items / ${w.maxWaitMs} ms`;

export async function tune(sink: TimedSink, rec: RecordShape, where: string, chooser: WindowChooser, o: TuneOptions): Promise<TuneResult> {
  if (!(o.sloMs > 0)) throw invalidOption('--slo-p99-ms', o.sloMs, 'a number > 0');
  const slo = o.sloMs;
  const limit = round3(slo * (1 - MARGIN_FRACTION));
  const quick = o.quick;
  // A run lasts runMs, longer at low rates until it holds minSamples latencies (p99 of 150 is
  // their 2nd-largest; of 14, the largest), but never past maxRunMs.
  const runMs = quick ? 1000 : 2000;
  const minSamples = quick ? 150 : 300;
  const maxRunMs = quick ? 3000 : 8000;
  const durFor = (perSec: number) => Math.round(Math.min(maxRunMs, Math.max(runMs, (minSamples / perSec) * 1000)));
  const sizes = quick ? [1, 16, 128, 1024] : [1, 8, 64, 256, 1024, 4096];
  const reps = quick ? 3 : 7;
  const gridItems = quick ? [32, 512] : [16, 128, 1024, 4096];
  const gridWaits = (quick ? [0.25, 0.5] : [0.1, 0.25, 0.5]).map((f) => round3(f * limit));
  const cellReps = quick ? 1 : 3;
  const probesMax = quick ? 6 : 10;
  // Progress: cost writes + capacity probes + grid runs + derived runs + validation (estimates).
  const total = sizes.length * reps * 2 + probesMax * 2 + (gridItems.length * gridWaits.length + 1) * 2 * cellReps + VALIDATION_RUNS;
  let done = 0;
  const step = (phase: string, n = 1) => {
    done = Math.min(total, done + n);
    o.progress?.(done, total, phase);
  };
  o.progress?.(0, total, 'cost model');

  // 1. cost model
  const costM = await measureCost(sink, rec, sizes, reps, () => step('cost model'));
  const allWrites = [...costM.writesMs];

  // 2. capacity at the SLO: a window that adds at most a quarter of the bound, large batches.
  const probeWin = { maxItems: 4096, maxWaitMs: round3(limit / 4) };
  const probes: TuneResult['capacity']['probes'] = [];
  const probeOnce = async (rate: number) => {
    const r = await pacedRun(sink, rec, { ratePerSec: Math.round(rate), durationMs: durFor(rate), ...probeWin, sloMs: slo }, allWrites);
    const held = r.p99Ms <= limit;
    // Items the producer never got to offer although the queue never pushed back: this
    // process, not the sink, set the limit (a blocked producer is the sink's backpressure).
    const generatorLimited = !held && r.notOffered > MAX_NOT_OFFERED_SHARE * Math.max(1, r.offered) && r.blockedMs < 0.01 * r.durationMs;
    probes.push({ ratePerSec: Math.round(rate), p99Ms: r.p99Ms, held, generatorLimited });
    step('capacity');
    return held;
  };
  // A rate holds when 2 of 3 runs hold (run lazily: two alike decide). One short run's p99 is
  // the 1%-largest of a few hundred latencies: one write stall sets it.
  const probe = async (rate: number) => {
    let yes = 0;
    let no = 0;
    while (yes < 2 && no < 2) (await probeOnce(rate)) ? yes++ : no++;
    return yes === 2;
  };
  // Start where single-record writes would keep the sink half busy; double until p99 > bound
  // (or step down by 4× until one holds), then two steps of geometric bisection.
  let lo = 0;
  let hi = 0;
  let rate = Math.max(20, Math.min(20_000, 500 / Math.max(0.01, costM.model.fixedMs)));
  for (let i = 0; i < probesMax; i++) {
    if (await probe(rate)) {
      lo = rate;
      if (hi > 0) break;
      rate *= 2;
    } else {
      hi = rate;
      if (lo > 0) break;
      rate /= 4;
      if (rate < 5) break;
    }
  }
  if (lo > 0 && hi > 0)
    for (let i = 0; i < 2; i++) {
      const mid = Math.sqrt(lo * hi);
      if (await probe(mid)) lo = mid;
      else hi = mid;
    }
  const capacity = Math.round(lo);
  const failedAtHi = probes.filter((p) => p.ratePerSec === Math.round(hi) && !p.held);
  const limitedByGenerator = hi > 0 && failedAtHi.length > 0 && failedAtHi.every((p) => p.generatorLimited);

  // 3. loads
  let peak: number;
  let peakFrom: string;
  if (o.peakPerSec !== undefined) {
    peak = o.peakPerSec;
    peakFrom = '--peak-rate';
  } else if (o.tracePath !== undefined) {
    const p = peakSecond(loadTrace(o.tracePath));
    peak = Math.max(1, Math.round(p.ratePerSec));
    peakFrom = `busiest second of ${o.tracePath} (mean ${Math.round(p.meanPerSec)}/s)`;
  } else {
    peak = Math.round(PEAK_SHARE * capacity);
    peakFrom = `${PEAK_SHARE * 100}% of the measured capacity at the SLO`;
  }
  const low = peak > 0 ? Math.max(1, Math.round(LOW_SHARE * peak)) : 0;

  const costOut = { fixedMs: round3(costM.fixedMs), perItemMs: costM.perItemMs, perByteMs: costM.perByteMs, model: { fixedMs: round3(costM.model.fixedMs), perItemMs: costM.model.perItemMs }, points: costM.points };
  const base = { sloMs: slo, limitMs: limit, records: rec.describe, sink: where, quick, cost: costOut, capacity: { perSec: capacity, probes, bound: hi > 0 ? ('found' as const) : ('at-least' as const), limitedByGenerator }, loads: { peakPerSec: peak, lowPerSec: low, peakFrom } };
  const stallsOf = (ws: number[]) => {
    const sorted = [...ws].sort((a, b) => a - b);
    return { writes: ws.length, overSlo: ws.filter((w) => w > slo).length, maxWriteMs: round3(sorted[sorted.length - 1] ?? 0), p99WriteMs: round3(sorted[Math.max(0, Math.ceil(0.99 * sorted.length) - 1)] ?? 0) };
  };

  const stop = (verdict: Verdict, summary: string, extra: Partial<TuneResult> = {}): TuneResult => ({
    verdict,
    summary,
    ...base,
    stalls: stallsOf(allWrites),
    derived: null,
    cells: [],
    choice: { chosen: null, runnerUp: null, reason: '', runnerUpLostOn: '' },
    validation: null,
    snippet: null,
    ...extra,
  });
  // Stalls explain a failure; they are not a verdict by themselves: a window that holds the
  // SLO in validation despite them is recommended (and the stalls reported).
  const stalled = () => {
    const st = stallsOf(allWrites);
    return st.overSlo > STALL_SHARE * st.writes
      ? `the sink stalls: ${st.overSlo} of ${st.writes} writes took longer than the SLO (${slo} ms; longest ${st.maxWriteMs} ms, p99 write ${st.p99WriteMs} ms)`
      : null;
  };
  if (capacity === 0 || capacity < peak)
    return stop(
      stalled() ? 'sink-stalls' : 'sink-too-slow',
      (stalled() ? `${stalled()}; ` : '') +
        (capacity === 0
          ? `the sink is too slow for the SLO: even at ${probes[probes.length - 1]?.ratePerSec}/s p99 was ${probes[probes.length - 1]?.p99Ms} ms (> ${limit} ms, SLO ${slo} ms − margin); a single write costs ${round3(costM.model.fixedMs)} ms`
          : `the sink is too slow for the peak: it holds p99 ≤ ${limit} ms up to ${capacity}/s, below the peak of ${peak}/s (${peakFrom})`),
    );

  // 4. grid + derived window, at low and at peak, repeated in interleaved rounds.
  const cells: CellResult[] = [];
  for (const w of gridWaits) for (const n of gridItems) cells.push(emptyCell({ maxItems: n, maxWaitMs: w }));
  const measureCells = async (cs: CellResult[], phase: string) => {
    for (let r = 0; r < cellReps; r++)
      for (const c of cs)
        for (const [load, perSec] of [['low', low], ['peak', peak]] as const) {
          const run = await pacedRun(sink, rec, { ratePerSec: perSec, durationMs: durFor(perSec), maxItems: c.maxItems, maxWaitMs: c.maxWaitMs, sloMs: slo }, allWrites);
          c[load].push(run);
          step(phase);
        }
    for (const c of cs) settle(c);
  };
  await measureCells(cells, 'grid');

  // The derived window: the wait the low load affords, maxItems what the peak fills in it.
  const lowTimer = cells.flatMap((c) => c.low).filter((r) => r.sizeCutShare < 0.5 && Number.isFinite(r.p99Ms));
  const lowOverheadMs = lowTimer.length ? median(lowTimer.map((r) => r.p99Ms - r.maxWaitMs)) : costM.model.fixedMs;
  const derived = chooser.deriveWindow({ limitMs: limit, lowPerSec: low, peakPerSec: peak, cost: costM.model, lowOverheadMs: Math.max(0, lowOverheadMs) });
  if (derived.feasible && !cells.some((c) => c.maxItems === derived.maxItems && c.maxWaitMs === derived.maxWaitMs)) {
    const d = emptyCell({ maxItems: derived.maxItems, maxWaitMs: derived.maxWaitMs });
    d.derived = true;
    cells.push(d);
    await measureCells([d], 'derived window');
  }

  // 5. the chooser, on the medians.
  const peakBatch = median(cells.map((c) => c.medianBatchAtPeak).filter((b) => b > 0));
  const choice: Choice<CellResult> = chooser.chooseWindow(cells, limit, slo, { tie: chooser.sizePreferenceTie(peakBatch || 1), preferSizeBound: true });
  const choiceOut = { chosen: choice.chosen?.label ?? null, runnerUp: choice.runnerUp?.label ?? null, reason: choice.reason, runnerUpLostOn: choice.runnerUpLostOn };
  if (!choice.chosen)
    return stop(stalled() ? 'sink-stalls' : 'sink-too-slow', `${stalled() ? `${stalled()}; ` : ''}no window held p99 ≤ ${limit} ms (SLO ${slo} ms − margin) at both the low load (${low}/s) and the peak (${peak}/s): ${choice.reason}`, { derived, cells, choice: choiceOut });

  // 6. validation at the peak.
  const vruns: PacedRun[] = [];
  for (let i = 0; i < VALIDATION_RUNS; i++) {
    vruns.push(await pacedRun(sink, rec, { ratePerSec: peak, durationMs: durFor(peak), maxItems: choice.chosen.maxItems, maxWaitMs: choice.chosen.maxWaitMs, sloMs: slo }, allWrites));
    step('validation');
  }
  const vmed = median(vruns.map((r) => r.p99Ms));
  const held = vmed <= slo && vruns.every((r) => r.balanced);
  const validation = { runs: vruns.map((r) => ({ p99Ms: r.p99Ms, balanced: r.balanced, stalls: r.stalls })), medianP99Ms: vmed, held };
  const snippet = {
    window: { maxItems: choice.chosen.maxItems, maxWaitMs: choice.chosen.maxWaitMs },
    queue: { maxItems: Math.max(10_000, 4 * choice.chosen.maxItems, Math.ceil(peak)) },
    sloP99Ms: slo,
  };
  o.progress?.(total, total, 'done');
  if (!held)
    return {
      verdict: 'not-validated',
      summary: `${stalled() ? `${stalled()}; ` : ''}${choice.chosen.label} met the bound in the grid but not in validation: median p99 ${vmed} ms over ${VALIDATION_RUNS} runs at ${peak}/s (SLO ${slo} ms): not recommended`,
      ...base,
      stalls: stallsOf(allWrites),
      derived,
      cells,
      choice: choiceOut,
      validation,
      snippet: null,
    };
  return {
    verdict: 'recommended',
    summary: `recommended window ${choice.chosen.label}: median p99 ${vmed} ms over ${VALIDATION_RUNS} validation runs at the peak of ${peak}/s (SLO ${slo} ms), ${round3(median(vruns.map((r) => r.opsPerItem)))} fixed-cost ops per item`,
    ...base,
    stalls: stallsOf(allWrites),
    derived,
    cells,
    choice: choiceOut,
    validation,
    snippet,
  };
}

function emptyCell(w: { maxItems: number; maxWaitMs: number }): CellResult {
  return { ...w, label: label(w), opsPerItem: Infinity, p99ByLoad: {}, low: [], peak: [], sizeCutShareAtPeak: 0, medianBatchAtPeak: 0 };
}

/** Medians over a cell's repetitions: what the chooser reads. */
function settle(c: CellResult): void {
  c.p99ByLoad = { low: median(c.low.map((r) => r.p99Ms)), peak: median(c.peak.map((r) => r.p99Ms)) };
  c.opsPerItem = median(c.peak.map((r) => r.opsPerItem));
  c.sizeCutShareAtPeak = median(c.peak.map((r) => r.sizeCutShare));
  c.medianBatchAtPeak = median(c.peak.map((r) => r.medianBatch));
  c.sizeBound = c.sizeCutShareAtPeak >= 0.5;
}
