/**
 * Bursty open-loop arrivals: an on/off Markov-modulated Poisson process (MMPP-2).
 *
 * The source alternates between an ON state (Poisson at `peakPerSec`) and an OFF state
 * (Poisson at `offPerSec`, 0 by default). Sojourn times are exponential (memoryless, the
 * textbook MMPP) or fixed (`sojourn: 'fixed'`, a square wave: repeatable peaks for the lab).
 *
 * The parameters are the ones an operator reasons with: the mean rate and the peak-to-mean
 * ratio. The fraction of time ON follows from them:
 *   mean = p·peak + (1−p)·off  ⇒  p = (mean − off) / (peak − off),  peak = mean × peakToMean.
 * With the default OFF rate of 0, p = 1 / peakToMean: a 10:1 burstiness is ON 10% of the time.
 */
import { invalidOption } from '../core/errors.js';
import { seededRng, type Rng } from '../core/random.js';
import type { ArrivalSchedule } from './load.js';

export interface BurstyOptions {
  /** Long-run mean rate (items/s). */
  meanPerSec: number;
  /** Rate while ON divided by the mean rate; > 1. */
  peakToMean: number;
  /** Mean length of one ON period (ms). @default 1000 (a burst covers a whole second, so the peak second reaches the peak rate) */
  meanOnMs?: number;
  /** Rate while OFF (items/s), below the mean. @default 0 */
  offPerSec?: number;
  /** `exponential` sojourns (MMPP) or `fixed` (square wave). @default 'exponential' */
  sojourn?: 'exponential' | 'fixed';
  /** Start in the ON state (the first burst at t = 0). @default false: start OFF */
  startOn?: boolean;
  rng?: Rng;
}

export interface BurstyShape {
  peakPerSec: number;
  offPerSec: number;
  /** Fraction of time spent ON. */
  onFraction: number;
  meanOnMs: number;
  meanOffMs: number;
}

/** The derived shape of a bursty source (rates and mean sojourns). */
export function burstyShape(o: BurstyOptions): BurstyShape {
  if (!(o.meanPerSec > 0)) throw invalidOption('meanPerSec', o.meanPerSec, 'a number > 0');
  if (!(o.peakToMean > 1)) throw invalidOption('peakToMean', o.peakToMean, 'a number > 1');
  const off = o.offPerSec ?? 0;
  if (!(off >= 0 && off < o.meanPerSec)) throw invalidOption('offPerSec', off, `a number in [0, meanPerSec=${o.meanPerSec})`);
  const meanOnMs = o.meanOnMs ?? 1000;
  if (!(meanOnMs > 0)) throw invalidOption('meanOnMs', meanOnMs, 'a number > 0');
  const peak = o.meanPerSec * o.peakToMean;
  const onFraction = (o.meanPerSec - off) / (peak - off);
  return { peakPerSec: peak, offPerSec: off, onFraction, meanOnMs, meanOffMs: (meanOnMs * (1 - onFraction)) / onFraction };
}

export function burstyArrivals(o: BurstyOptions): ArrivalSchedule {
  const shape = burstyShape(o);
  const rng = o.rng ?? seededRng(11);
  const fixed = o.sojourn === 'fixed';
  const exp = (mean: number) => (fixed ? mean : -Math.log(1 - rng()) * mean);
  let on = o.startOn ?? false;
  let stateEnd = exp(on ? shape.meanOnMs : shape.meanOffMs);
  let t = 0;
  return {
    description: `bursty on/off mean ${o.meanPerSec}/s peak ${Math.round(shape.peakPerSec)}/s (peak-to-mean ${o.peakToMean}, ON ${Math.round(shape.meanOnMs)} ms / OFF ${Math.round(shape.meanOffMs)} ms, ${fixed ? 'fixed' : 'exponential'} sojourns)`,
    next: () => {
      // Memorylessness lets us restart the exponential draw at each state change.
      for (;;) {
        const rate = on ? shape.peakPerSec : shape.offPerSec;
        const cand = rate > 0 ? t + -Math.log(1 - rng()) * (1000 / rate) : Infinity;
        if (cand <= stateEnd) {
          t = cand;
          return t;
        }
        t = stateEnd;
        on = !on;
        stateEnd = t + exp(on ? shape.meanOnMs : shape.meanOffMs);
      }
    },
  };
}
