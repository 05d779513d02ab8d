/**
 * HDR histograms for latency (recorded in microseconds, reported in milliseconds) and
 * for counts (batch sizes). 3 significant digits: a p99 of 12.3 ms is exact to 10 µs.
 */
import * as hdr from 'hdr-histogram-js';

export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export interface CountSummary {
  count: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

/** 1 µs .. 1 hour. Values above are clamped to the top rather than throwing. */
const LATENCY_MAX_US = 3_600_000_000;

/**
 * hdr-histogram-js computes a value's counts index with floating-point `log2`, `pow` and
 * `floor`: 35% of Sluice's CPU per item in bench case 1 (node --cpu-prof). For integer values
 * below 2^32 the same index comes from `Math.clz32` and shifts. This replaces the instance's
 * index function with that; `test/unit/histogram-index.test.ts` checks it returns the
 * library's own index over the whole range we record (1 µs .. 1 hour).
 */
export function withFastIndex<H extends object>(h: H): H {
  const x = h as unknown as {
    countsArrayIndex?: (v: number) => number;
    subBucketHalfCountMagnitude: number;
    unitMagnitude: number;
    subBucketHalfCount: number;
  };
  if (typeof x.countsArrayIndex !== 'function' || typeof x.subBucketHalfCountMagnitude !== 'number' || typeof x.unitMagnitude !== 'number') return h;
  const halfMag = x.subBucketHalfCountMagnitude;
  const unit = x.unitMagnitude;
  const half = x.subBucketHalfCount;
  const lib = x.countsArrayIndex.bind(x);
  x.countsArrayIndex = (v: number): number => {
    if (!(v >= 1 && v < 4294967296) || v !== Math.floor(v)) return lib(v);
    let bucket = 31 - Math.clz32(v) - halfMag - unit;
    if (bucket < 0) bucket = 0;
    // floor(v / 2^k) for an integer 0 ≤ v < 2^32: an unsigned shift, not pow + division.
    const sub = v >>> (bucket + unit);
    return ((bucket + 1) << halfMag) + sub - half;
  };
  return h;
}

interface RecordedValues {
  reset(): void;
  hasNext(): boolean;
  next(): { valueIteratedTo: number; countAtValueIteratedTo: number };
}

function summarize(h: hdr.Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  const r = (us: number) => Math.round(us) / 1000;
  return {
    count: h.totalCount,
    mean: r(h.mean),
    p50: r(h.getValueAtPercentile(50)),
    p90: r(h.getValueAtPercentile(90)),
    p99: r(h.getValueAtPercentile(99)),
    p999: r(h.getValueAtPercentile(99.9)),
    max: r(h.maxValue),
  };
}

export class LatencyHistogram {
  private h = withFastIndex(hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: LATENCY_MAX_US, numberOfSignificantValueDigits: 3 }));

  /** Records one latency in milliseconds (fractional). Negative values count as 0. */
  recordMs(ms: number): void {
    let us = Math.round(ms * 1000);
    if (us < 1) us = 1;
    else if (us > LATENCY_MAX_US) us = LATENCY_MAX_US;
    this.h.recordValue(us);
  }

  get count(): number {
    return this.h.totalCount;
  }

  /** Value at percentile `p` (0..100) in ms. */
  percentileMs(p: number): number {
    return this.h.totalCount === 0 ? 0 : this.h.getValueAtPercentile(p) / 1000;
  }

  summary(): LatencySummary {
    return summarize(this.h);
  }

  /**
   * Cumulative counts at each upper bound (ms, ascending), for a Prometheus histogram's
   * `le` buckets: a value counts under a bound when the lowest value of its HDR bucket is ≤
   * the bound, so a value equal to a bound is counted under it (Prometheus' `le`) and one at
   * most 0.1% above it may be too (the 3-digit precision). Walks only the recorded buckets.
   */
  cumulativeAtMs(boundsMs: readonly number[]): number[] {
    const out = new Array<number>(boundsMs.length).fill(0);
    if (this.h.totalCount === 0) return out;
    const h = this.h as unknown as { recordedValuesIterator: RecordedValues; lowestEquivalentValue(v: number): number };
    const it = h.recordedValuesIterator;
    it.reset();
    const boundsUs = boundsMs.map((b) => b * 1000);
    while (it.hasNext()) {
      const v = it.next();
      const low = h.lowestEquivalentValue(v.valueIteratedTo);
      for (let i = boundsUs.length - 1; i >= 0 && low <= boundsUs[i]; i--) out[i] += v.countAtValueIteratedTo;
    }
    return out;
  }

  /**
   * A reader of the values recorded since its previous call (the first call: since the
   * start). It keeps one copy of the histogram between calls and costs two copies and one
   * subtraction per call (≈ 24k counts each), nothing per recorded value: for the live page,
   * which reads once per second and only while someone watches.
   */
  intervalReader(): () => LatencySummary {
    let prev: hdr.Histogram | null = null;
    return () => {
      const cur = this.h.copyCorrectedForCoordinatedOmission(0);
      const d = cur.copyCorrectedForCoordinatedOmission(0);
      if (prev) d.subtract(prev);
      prev = cur;
      return summarize(d);
    };
  }

  /** Sum of recorded values in ms (for Prometheus summaries). */
  sumMs(): number {
    return this.h.totalCount === 0 ? 0 : (this.h.mean * this.h.totalCount) / 1000;
  }

  reset(): void {
    this.h.reset();
  }
}

export class CountHistogram {
  // The fast index here too, though batch sizes are recorded once per batch: hdr's call site
  // for the index function must see one target (closures from the same site count as one),
  // or V8 stops inlining it in the per-item latency recording (measured: ≈11% of Sluice's
  // CPU in bench case 1, spent calling it out of line).
  private h = withFastIndex(hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 100_000_000, numberOfSignificantValueDigits: 3 }));
  private exact = new Map<number, number>();

  record(n: number): void {
    const v = Math.max(1, Math.round(n));
    this.h.recordValue(v);
    this.exact.set(v, (this.exact.get(v) ?? 0) + 1);
  }

  get count(): number {
    return this.h.totalCount;
  }

  summary(): CountSummary {
    const h = this.h;
    if (h.totalCount === 0) return { count: 0, mean: 0, p50: 0, p99: 0, max: 0 };
    return {
      count: h.totalCount,
      mean: Math.round(h.mean * 100) / 100,
      p50: h.getValueAtPercentile(50),
      p99: h.getValueAtPercentile(99),
      max: h.maxValue,
    };
  }

  /** Cumulative counts at each upper bound (ascending), exact (from the per-value counts). */
  cumulativeAt(bounds: readonly number[]): number[] {
    const out = new Array<number>(bounds.length).fill(0);
    for (const [v, c] of this.exact) for (let i = bounds.length - 1; i >= 0 && v <= bounds[i]; i--) out[i] += c;
    return out;
  }

  /**
   * Histogram as [upper bound, count] pairs over power-of-two buckets (1, 2, 4, …),
   * exact: each recorded value is counted in the first bucket whose bound is ≥ it.
   * `extraBounds` (e.g. maxItems) are added so a full window has its own bucket.
   */
  buckets(extraBounds: number[] = []): [number, number][] {
    if (this.exact.size === 0) return [];
    let max = 0;
    for (const k of this.exact.keys()) if (k > max) max = k;
    const bounds = new Set<number>(extraBounds.filter((b) => b >= 1));
    for (let b = 1; ; b *= 2) {
      bounds.add(b);
      if (b >= max) break;
    }
    const sorted = [...bounds].sort((a, b) => a - b);
    const counts = new Map<number, number>(sorted.map((b) => [b, 0]));
    for (const [v, c] of this.exact) {
      const b = sorted.find((x) => x >= v)!;
      counts.set(b, counts.get(b)! + c);
    }
    return sorted.filter((b) => b <= Math.max(max, ...extraBounds)).map((b) => [b, counts.get(b)!]);
  }

  reset(): void {
    this.h.reset();
    this.exact.clear();
  }
}
