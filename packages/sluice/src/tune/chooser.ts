/**
 * The window chooser `sluice tune` calls: the product's (core/window-chooser.ts), the same
 * functions the lab's `window` experiment uses; no second copy. tune depends on the three it
 * needs through this small interface.
 */
import { chooseWindow, deriveWindow, sizePreferenceTie } from '../core/window-chooser.js';

export type { Candidate, Choice, CostModel, DeriveInput, DerivedWindow } from '../core/window-chooser.js';

export interface WindowChooser {
  chooseWindow: typeof chooseWindow;
  deriveWindow: typeof deriveWindow;
  /** Fixed-cost ops/item within this fraction count as equal, for a peak median batch B (the lab's preference for size-bound windows). */
  sizePreferenceTie: typeof sizePreferenceTie;
}

export const productChooser: WindowChooser = { chooseWindow, deriveWindow, sizePreferenceTie };
