/**
 * Every lab experiment, in the order `sluice lab` runs them. Adding an experiment is one
 * import and one entry here.
 */
import type { Experiment } from './types.js';
import { batching } from './experiments/batching.js';
import { windowExperiment } from './experiments/window.js';
import { adaptive } from './experiments/adaptive.js';
import { nagle } from './experiments/nagle.js';
import { compression } from './experiments/compression.js';
import { poison } from './experiments/poison.js';
import { redriveExperiment } from './experiments/redrive.js';
import { overflow } from './experiments/overflow.js';
import { bomb } from './experiments/bomb.js';
import { tenants } from './experiments/tenants.js';
import { chaos } from './experiments/chaos.js';
import { scaleout } from './experiments/scaleout.js';

export const EXPERIMENTS: Experiment[] = [
  batching,
  windowExperiment,
  adaptive,
  nagle,
  compression,
  poison,
  redriveExperiment,
  overflow,
  bomb,
  tenants,
  chaos,
  scaleout,
];

export function findExperiment(name: string): Experiment | undefined {
  return EXPERIMENTS.find((e) => e.name === name);
}
