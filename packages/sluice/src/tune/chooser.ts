/**
 * The window chooser `sluice tune` calls: the same one as the lab's `window` experiment
 * (core/window-chooser.ts, moved into the product by issue 20). `tune` needs two of its
 * functions, typed here as it defines them, so the measuring and reporting code depends on
 * this small interface only.
 */
export interface Candidate {
  maxItems: number;
  maxWaitMs: number;
  /** ops/item at the load that is optimised (the peak). */
  opsPerItem: number;
  /** p99 at every load that constrains (ms). */
  p99ByLoad: Record<string, number>;
  /** Most cuts at the optimised load were by size. */
  sizeBound?: boolean;
}

export interface Choice<C extends Candidate> {
  chosen: C | null;
  runnerUp: C | null;
  cheapestInfeasible: C | null;
  reason: string;
  runnerUpLostOn: string;
}

export interface CostModel {
  fixedMs: number;
  perItemMs: number;
}

export interface DeriveInput {
  limitMs: number;
  lowPerSec: number;
  peakPerSec: number;
  cost: CostModel;
  lowOverheadMs: number;
  waitStepMs?: number;
  maxItemsCap?: number;
  maxBusy?: number;
}

export interface DerivedWindow {
  maxItems: number;
  maxWaitMs: number;
  feasible: boolean;
  reason: string;
  predicted: { peakP99Ms: number; lowP99Ms: number; sinkBusyAtPeak: number; [k: string]: number };
}

export interface WindowChooser {
  chooseWindow<C extends Candidate>(cands: C[], limitMs: number, sloMs: number, opts?: { tie?: number; preferSizeBound?: boolean }): Choice<C>;
  deriveWindow(inp: DeriveInput): DerivedWindow;
  /** Fixed-cost ops/item within this fraction count as equal, for a peak median batch B (the lab's preference for size-bound windows). */
  sizePreferenceTie(medianBatch: number): number;
}

/**
 * The product's chooser. Loaded by a computed specifier while issue 20's move of the chooser
 * into core/ is not merged in this branch, so the branch builds either way; once it is, this
 * becomes a static import.
 */
export async function loadChooser(): Promise<WindowChooser> {
  const spec = '../core/window-chooser.js';
  try {
    return (await import(spec)) as WindowChooser;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    throw new Error('sluice tune needs the window chooser (core/window-chooser.js, issue 20), which this build lacks');
  }
}
