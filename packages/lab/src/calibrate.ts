/**
 * Measures a sink's fixed cost: the median of many single-item writes, each awaited
 * before the next (one operation at a time, as an unbatched pipeline would pay it).
 */
import { performance } from 'node:perf_hooks';
import type { Envelope, Sink } from 'sluice';

export interface Calibration {
  fixedCostMs: number;
  p90Ms: number;
  samples: number;
  /** C1 = 1 / cost: the unbatched pipeline's capacity. */
  unbatchedCapacityPerSec: number;
}

export async function calibrateSink<T>(
  sink: Sink<T>,
  make: (i: number) => Envelope<T>,
  samples = 300,
  warmup = 20,
): Promise<Calibration> {
  for (let i = 0; i < warmup; i++) await sink.write([make(i)]);
  const ms: number[] = [];
  for (let i = 0; i < samples; i++) {
    const e = make(warmup + i);
    const t0 = performance.now();
    await sink.write([e]);
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
  const fixedCostMs = q(0.5);
  return {
    fixedCostMs: Math.round(fixedCostMs * 1000) / 1000,
    p90Ms: Math.round(q(0.9) * 1000) / 1000,
    samples,
    unbatchedCapacityPerSec: Math.round(1000 / fixedCostMs),
  };
}
