/**
 * The window chooser: pure functions that pick a batching window (maxItems, maxWaitMs) from a
 * p99 SLO, the loads it must serve and the sink's measured cost model. The lab's `window` and
 * `adaptive` experiments call these (docs/window.md); `sluice tune` (issue 21) is to call the
 * same ones. Core module: no I/O, no clock, Node built-ins only.
 */
export interface Candidate {
  maxItems: number;
  maxWaitMs: number;
  /** ops/item at the load that is optimised. */
  opsPerItem: number;
  /** p99 at every load that constrains (ms). */
  p99ByLoad: Record<string, number>;
  /** Most cuts at the optimised load were by size: the window is sized by the load it serves. */
  sizeBound?: boolean;
}

/** A candidate's worst p99 over the loads that constrain it (ms). */
export function worstP99(c: Candidate): number {
  return Math.max(...Object.values(c.p99ByLoad));
}

export interface Choice<C extends Candidate> {
  chosen: C | null;
  runnerUp: C | null;
  /** Cheapest candidate that failed the latency bound (what tempted and why not). */
  cheapestInfeasible: C | null;
  reason: string;
  runnerUpLostOn: string;
}

export interface ChooseOptions {
  /**
   * Ops/item within this fraction of the minimum count as equal. @default 0.02 (run-to-run
   * noise). The `window` and `adaptive` experiments pass sizePreferenceTie(B) with `preferSizeBound`.
   */
  tie?: number;
  /** Among equals, prefer windows whose cuts at the optimised load were by size. @default false */
  preferSizeBound?: boolean;
}

/**
 * The selection rule: among candidates whose p99 ≤ limit at every load, the fewest fixed-cost
 * ops per item. Candidates within `tie` of the minimum count as equal; among them a size-bound
 * window comes first when asked, then the lower ops/item, then the lower worst-case p99.
 */
export function chooseWindow<C extends Candidate>(cands: C[], limitMs: number, sloMs: number, opts: ChooseOptions = {}): Choice<C> {
  const tie = opts.tie ?? 0.02;
  const feasible = cands.filter((c) => worstP99(c) <= limitMs && c.opsPerItem > 0);
  const infeasible = cands.filter((c) => !(worstP99(c) <= limitMs) && c.opsPerItem > 0);
  const minOps = Math.min(...feasible.map((c) => c.opsPerItem));
  const tied = (c: C) => c.opsPerItem <= minOps * (1 + tie);
  const pref = (c: C) => (opts.preferSizeBound && c.sizeBound ? 0 : 1);
  const near = (a: C, b: C) => Math.abs(a.opsPerItem - b.opsPerItem) <= 0.02 * Math.min(a.opsPerItem, b.opsPerItem);
  feasible.sort((a, b) => {
    const ta = tied(a) ? 0 : 1;
    const tb = tied(b) ? 0 : 1;
    if (ta !== tb) return ta - tb;
    if (ta === 0 && pref(a) !== pref(b)) return pref(a) - pref(b);
    if (!near(a, b)) return a.opsPerItem - b.opsPerItem;
    return worstP99(a) - worstP99(b);
  });
  const chosen = feasible[0] ?? null;
  const runnerUp = feasible[1] ?? null;
  const cheapestInfeasible = chosen ? (infeasible.filter((c) => c.opsPerItem < chosen.opsPerItem * 0.98).sort((a, b) => a.opsPerItem - b.opsPerItem)[0] ?? null) : null;
  const fmtP = (c: C) => Object.entries(c.p99ByLoad).map(([k, v]) => `${v.toFixed(2)} ms at ${k}`).join(', ');
  const w = (c: C) => `${c.maxItems} items / ${c.maxWaitMs} ms`;
  if (!chosen) return { chosen, runnerUp, cheapestInfeasible, reason: `no window kept p99 ≤ ${limitMs} ms (SLO ${sloMs} ms − margin) at every load`, runnerUpLostOn: '' };
  const cheapest = feasible.reduce((m, c) => (c.opsPerItem < m.opsPerItem ? c : m), chosen);
  let reason = `${w(chosen)}: ${cheapest === chosen ? 'fewest' : `within ${pref(chosen) < pref(cheapest) ? Math.round(tie * 100) : 2}% of the fewest`} fixed-cost ops per item (${chosen.opsPerItem.toFixed(5)}) among the ${feasible.length} windows with p99 ≤ ${limitMs} ms (SLO ${sloMs} ms − margin) at every load (p99 ${fmtP(chosen)})`;
  if (cheapest !== chosen && pref(chosen) < pref(cheapest))
    reason += `; preferred to ${w(cheapest)} (${cheapest.opsPerItem.toFixed(5)} ops/item, timer-bound) because its batches are cut by size at this load: the window is sized by the measured load and bounds each batch (memory, write time); the price is headroom: a burst above the peak is cut into more writes instead of filling larger batches`;
  else if (cheapest !== chosen)
    reason += `; preferred to ${w(cheapest)} (${cheapest.opsPerItem.toFixed(5)} ops/item, within 2%) for its lower worst-case p99 (${worstP99(cheapest).toFixed(2)} ms)`;
  if (cheapestInfeasible) reason += `; cheaper windows breach the bound, e.g. ${w(cheapestInfeasible)} (${cheapestInfeasible.opsPerItem.toFixed(5)} ops/item) has p99 ${fmtP(cheapestInfeasible)}`;
  let runnerUpLostOn = 'no runner-up: only one window met the bound';
  if (runnerUp) {
    if (tied(runnerUp) && pref(runnerUp) > pref(chosen)) runnerUpLostOn = `${w(runnerUp)} (${runnerUp.opsPerItem.toFixed(5)} ops/item, p99 ${fmtP(runnerUp)}) is as cheap within ${Math.round(tie * 100)}% but its cuts at this load are by the timer, not by size`;
    else if (near(runnerUp, chosen)) runnerUpLostOn = `${w(runnerUp)} tied on ops/item (${runnerUp.opsPerItem.toFixed(5)}, within 2%) and lost on worst-case p99: ${worstP99(runnerUp).toFixed(2)} ms vs ${worstP99(chosen).toFixed(2)} ms`;
    else runnerUpLostOn = `${w(runnerUp)} lost on fixed-cost ops per item: ${runnerUp.opsPerItem.toFixed(5)} vs ${chosen.opsPerItem.toFixed(5)} (${runnerUp.opsPerItem > chosen.opsPerItem ? '+' : ''}${(100 * (runnerUp.opsPerItem / chosen.opsPerItem - 1)).toFixed(0)}%)${pref(runnerUp) > pref(chosen) ? ', and it is timer-bound at this load' : ''}`;
  }
  return { chosen, runnerUp, cheapestInfeasible, reason, runnerUpLostOn };
}


/** Median of the p99s of a finalist's runs (a run that lost items or could not offer the load counts as Infinity). */
export function medianOf(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return Infinity;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/**
 * The corner of the timer-bound family: maxItems 1.5 standard deviations below the median
 * batch B a load fills in maxWaitMs (Poisson: sd = √B), so ≈ 93% of cuts come by size, for
 * 1/(1 − 1.5/√B) − 1 more fixed-cost ops (+5.6% at B = 800, +11% at B = 200).
 */
export function snappedMaxItems(medianBatch: number): number {
  return Math.max(1, Math.floor(medianBatch - 1.5 * Math.sqrt(medianBatch)));
}

/**
 * The wait within which a Poisson load of `perSec` brings `items` items in ≈ 97.7% of windows
 * (mean + 2 sd of the arrival count), rounded up to 0.5 ms. A window of `items` items with this
 * wait is cut by size at that load, so it costs the fixed-cost ops per item of a timer-bound
 * window whose median batch is `items`, without leaving maxItems open.
 */
export function fillWaitMs(items: number, perSec: number): number {
  if (!(perSec > 0) || !(items > 0)) return Infinity;
  return Math.ceil(((items + 2 * Math.sqrt(items)) / perSec) * 1000 * 2) / 2;
}

/** Kept between the headroom corner's estimated low-load p99 and the bound (ms). */
export const HEADROOM_SAFETY_MS = 0.5;

/**
 * The headroom corner: the longest wait the low load can afford, and the size the peak fills
 * in that wait in ≈ 97.7% of windows. The low load's p99 is its wait plus an overhead (the
 * write, the timer's lateness, the tail), read off the base cell at low load
 * (`lowP99Ms − maxWaitMs`); the wait is the bound minus that overhead minus HEADROOM_SAFETY_MS,
 * rounded down to 0.5 ms. maxItems is the peak's arrival count in that wait, n = rate × wait,
 * minus 2√n (Poisson), counted from the arrivals alone: the timer's lateness and what arrives
 * during the previous write only add items, so cuts by size can only be more frequent.
 * (B − 1.5√B from the measured median batch B credits that lateness, which varies: at 7.7k/s on
 * in one run, 73 items / 10 ms, snapped from B = 87, was cut by size in 84% of its cell's
 * windows and 79% of its validation's, against the ≈ 93% its construction assumes.)
 * Null when no wait longer than the cell's fits, or the peak fills fewer than 2 items in it.
 */
export function headroomCorner(maxWaitMs: number, lowP99Ms: number, perSec: number, limitMs: number): { maxItems: number; maxWaitMs: number } | null {
  if (!(lowP99Ms >= maxWaitMs) || !Number.isFinite(lowP99Ms) || !(perSec > 0)) return null;
  const wait = Math.floor((limitMs - (lowP99Ms - maxWaitMs) - HEADROOM_SAFETY_MS) * 2) / 2;
  if (!(wait > maxWaitMs)) return null;
  const n = (perSec * wait) / 1000;
  const items = Math.floor(n - 2 * Math.sqrt(n));
  return items >= 2 ? { maxItems: items, maxWaitMs: wait } : null;
}

/**
 * The corners of the timer-bound family around the cheapest cell (`maxWaitMs`, median batch B
 * at the optimised load of `perSec`), to be measured beside the grid (docs/window.md,
 * *Refinement*): the headroom corner, when the base cell's low-load p99 is given
 * (`headroomCorner`); maxItems B with the wait in which the load fills it (fillWaitMs), when
 * that wait is longer than the cell's and within `limitMs`; and maxItems B − 1.5√B at the
 * cell's wait and at the grid's next one (if within `limitMs`). Distinct windows, in that order.
 */
export function refinementCorners(
  maxWaitMs: number,
  medianBatch: number,
  perSec: number,
  waits: readonly number[],
  limitMs: number,
  lowP99Ms?: number,
): { maxItems: number; maxWaitMs: number }[] {
  const fillItems = Math.max(1, Math.round(medianBatch));
  const fillWait = fillWaitMs(fillItems, perSec);
  const snapped = snappedMaxItems(medianBatch);
  const nextWait = waits.find((w) => w > maxWaitMs);
  const corners: { maxItems: number; maxWaitMs: number }[] = [];
  const headroom = lowP99Ms === undefined ? null : headroomCorner(maxWaitMs, lowP99Ms, perSec, limitMs);
  if (headroom) corners.push(headroom);
  if (fillWait > maxWaitMs && fillWait <= limitMs) corners.push({ maxItems: fillItems, maxWaitMs: fillWait });
  corners.push({ maxItems: snapped, maxWaitMs });
  if (nextWait !== undefined && nextWait <= limitMs) corners.push({ maxItems: snapped, maxWaitMs: nextWait });
  return corners.filter((c, i) => corners.findIndex((d) => d.maxItems === c.maxItems && d.maxWaitMs === c.maxWaitMs) === i);
}

/**
 * How much more ops/item a window cut by size at peak may cost and still be preferred to the
 * cheapest timer-bound one: what snapping maxItems to B − 1.5√B costs by construction for the
 * peak's median batch B (1/(1 − 1.5/√B) − 1: +11% at B = 200, +28% at B = 48), plus
 * SIZE_PREFERENCE_NOISE; never below 10%, never above 50% (a corner costing more than half
 * again, B < 20 or so, is no refinement: batches that small are not worth sizing).
 */
export function sizePreferenceTie(medianBatch: number): number {
  const penalty = medianBatch > 2.25 ? medianBatch / snappedMaxItems(medianBatch) - 1 : 0;
  return Math.min(0.5, Math.max(0.1, penalty + SIZE_PREFERENCE_NOISE));
}

/**
 * The noise allowance of sizePreferenceTie. The band is measured against the *minimum* ops/item
 * of the feasible cells, and the cheapest ones are the timer-bound family at one wait, all
 * cutting the same batch: in one run (8.1k/s peak, 10 ms) its five cells read
 * 0.01097–0.01140 ops/item (±2%). The minimum of several such cells sits ≈ 2% below their
 * centre, and the corner's own cell is as noisy again, so a corner costing exactly its
 * construction's price can read ≈ 4% over the band's base. With 2% that run's snapped corner
 * (74 / 10 ms: 84% of cuts by size, p99 14.9 ms low and 15.0 ms peak) read 1.251× the minimum
 * against a band of 1.223 and lost to the timer-bound 128 / 10 ms, which failed both
 * "tuned, not guessed" checks at peak.
 */
export const SIZE_PREFERENCE_NOISE = 0.05;


// ------------------------------------------------------------------ derived choice

/**
 * A sink's cost model: one write of n items costs `fixedMs + perItemMs × (n − 1)` (ms). The
 * lab measures it (the median single-item write, and the median write of a full batch).
 */
export interface CostModel {
  fixedMs: number;
  perItemMs: number;
}

/** The cost model through two measured points: a single-item write and a write of `batchItems`. */
export function costModel(singleWriteMs: number, batchItems: number, batchWriteMs: number): CostModel {
  const perItemMs = batchItems > 1 ? Math.max(0, (batchWriteMs - singleWriteMs) / (batchItems - 1)) : 0;
  return { fixedMs: singleWriteMs, perItemMs };
}

/** What one write of `items` items costs under the model (ms). */
export function writeCostMs(c: CostModel, items: number): number {
  return c.fixedMs + c.perItemMs * Math.max(0, items - 1);
}

export interface DeriveInput {
  /** The selection bound every window is held to: SLO − margin (ms). */
  limitMs: number;
  lowPerSec: number;
  peakPerSec: number;
  cost: CostModel;
  /**
   * What the low load's p99 adds to the wait (ms): its small write, the timer's lateness and the
   * tail, measured (the lab takes the median of p99 − wait over its timer-bound low-load runs).
   */
  lowOverheadMs: number;
  /** Waits are rounded down to this grid (ms). @default 0.5 */
  waitStepMs?: number;
  /** Largest maxItems allowed. @default 4096 */
  maxItemsCap?: number;
  /** The sink may be at most this busy at peak (write time ÷ time between cuts). @default 0.5 */
  maxBusy?: number;
}

export interface DerivedWindow {
  maxItems: number;
  maxWaitMs: number;
  /** False when no window fits: then maxItems/maxWaitMs are the closest try, and `reason` says what does not fit. */
  feasible: boolean;
  reason: string;
  /** What the model predicts, for the report and the checks to compare with. */
  predicted: {
    /** Arrivals the peak brings in the wait, mean. */
    peakArrivalsInWait: number;
    /** Share of peak cuts by size the construction gives from the arrivals alone (Poisson, mean − 2 sd). */
    peakSizeCutShare: number;
    /** Mean arrivals the low load brings in the wait: far below maxItems, so the timer cuts. */
    lowArrivalsInWait: number;
    lowP99Ms: number;
    /** Fill time + the in-flight write + own write + the tail (ms). */
    peakP99Ms: number;
    /** Write time ÷ time between cuts at peak. */
    sinkBusyAtPeak: number;
  };
}

/** Kept between the derived window's predicted low-load p99 and the bound (ms). */
export const DERIVE_SAFETY_MS = 0.5;

/**
 * The window derived from the cost model and the loads (docs/window.md, *Derived choice*),
 * with no argmin over noisy cells:
 *   - the wait is the longest the low load affords: limit − lowOverheadMs − DERIVE_SAFETY_MS,
 *     rounded down to `waitStepMs`; at low load the timer cuts (the low load brings far fewer
 *     items than maxItems in that wait), so its p99 is the wait plus the measured overhead;
 *   - maxItems is the largest batch the peak brings within that wait in ≈ 97.7% of windows:
 *     n − 2√n for the mean arrival count n (Poisson), so the peak cuts by size by construction;
 *   - at peak an item waits at most maxItems / rate to fill, behind one write in flight, plus
 *     its own write and the tail: while that exceeds the limit (a per-item cost large against
 *     the wait), the wait shrinks one step;
 *   - the sink must be at most `maxBusy` busy at peak, else no window fits there.
 * Its inputs are medians (of the calibration and of many runs), so the window moves with the
 * machine's cost, not with which run a stall fell in.
 */
export function deriveWindow(inp: DeriveInput): DerivedWindow {
  const step = inp.waitStepMs ?? 0.5;
  const cap = inp.maxItemsCap ?? 4096;
  const maxBusy = inp.maxBusy ?? 0.5;
  const { cost, lowPerSec, peakPerSec, limitMs, lowOverheadMs } = inp;
  const tailMs = Math.max(0, lowOverheadMs - cost.fixedMs);
  const itemsIn = (waitMs: number) => {
    const n = (peakPerSec * waitMs) / 1000;
    return { n, items: Math.min(cap, Math.floor(n - 2 * Math.sqrt(n))) };
  };
  const peakP99 = (items: number) => (items / peakPerSec) * 1000 + 2 * writeCostMs(cost, items) + tailMs;
  let wait = Math.floor((limitMs - lowOverheadMs - DERIVE_SAFETY_MS) / step) * step;
  const maxWait = wait;
  let { n, items } = itemsIn(wait);
  while (wait > step && items >= 2 && peakP99(items) > limitMs - DERIVE_SAFETY_MS) {
    wait -= step;
    ({ n, items } = itemsIn(wait));
  }
  const fillMs = items > 0 ? (items / peakPerSec) * 1000 : Infinity;
  const busy = items > 0 ? writeCostMs(cost, items) / Math.min(fillMs, wait) : Infinity;
  const lowN = (lowPerSec * wait) / 1000;
  const predicted = {
    peakArrivalsInWait: round3(n),
    peakSizeCutShare: 0.977,
    lowArrivalsInWait: round3(lowN),
    lowP99Ms: round3(wait + lowOverheadMs),
    peakP99Ms: round3(peakP99(Math.max(1, items))),
    sinkBusyAtPeak: round3(busy),
  };
  const w = (x: number, y: number) => `${x} items / ${y} ms`;
  if (!(wait > 0) || items < 2)
    return { maxItems: Math.max(1, items), maxWaitMs: Math.max(0, wait), feasible: false, predicted, reason: `no window fits: the low load's overhead (${round3(lowOverheadMs)} ms) leaves ${round3(maxWait)} ms of wait under the ${limitMs} ms bound, in which the peak (${peakPerSec}/s) brings fewer than 2 items by construction` };
  if (busy > maxBusy)
    return { maxItems: items, maxWaitMs: wait, feasible: false, predicted, reason: `no window fits: ${w(items, wait)} keeps the sink ${Math.round(busy * 100)}% busy at the peak (${peakPerSec}/s; a write of ${items} items costs ${round3(writeCostMs(cost, items))} ms), above ${Math.round(maxBusy * 100)}%` };
  if (lowN + 2 * Math.sqrt(lowN) >= items)
    return { maxItems: items, maxWaitMs: wait, feasible: false, predicted, reason: `no window fits: the low load (${lowPerSec}/s) brings ${round3(lowN)} items in ${wait} ms, too close to maxItems ${items} for its timer to cut` };
  const shrunk = wait < maxWait ? `; the wait the low load affords, ${maxWait} ms, was shortened to ${wait} ms so that at peak fill + the write in flight + its own write + the tail (${round3(peakP99(items))} ms) stay under the bound` : '';
  return {
    maxItems: items,
    maxWaitMs: wait,
    feasible: true,
    predicted,
    reason:
      `${w(items, wait)}, derived from the cost model (fixed ${round3(cost.fixedMs)} ms + ${round3(cost.perItemMs * 1000)} µs/item) and the loads: ` +
      `the wait is the longest the low load affords (bound ${limitMs} ms − its measured overhead ${round3(lowOverheadMs)} ms − ${DERIVE_SAFETY_MS} ms), ` +
      `maxItems is what the peak (${peakPerSec}/s) brings in it in ≈ 97.7% of windows (n − 2√n, n = ${round3(n)}), so the peak cuts by size and the low load (${round3(lowN)} items per wait) by the timer${shrunk}`,
  };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
