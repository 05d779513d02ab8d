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

/** What intervalSummary reads of hdr-histogram-js's JS histogram (32-bit counts). */
interface HdrInternals {
  _counts: Uint32Array;
  countsArrayLength: number;
  valueFromIndex(i: number): number;
  highestEquivalentValue(v: number): number;
  medianEquivalentValue(v: number): number;
}

const SUMMARY_PERCENTILES = [50, 90, 99, 99.9] as const;

/** The summary of `cur − prev` (counts arrays of `h`'s layout), as summarize() reads a histogram. */
function intervalSummary(h: HdrInternals, cur: Uint32Array, prev: Uint32Array): LatencySummary {
  let total = 0;
  let sum = 0;
  let maxIndex = -1;
  for (let i = 0; i < cur.length; i++) {
    const c = cur[i] - prev[i];
    if (c > 0) {
      total += c;
      sum += h.medianEquivalentValue(h.valueFromIndex(i)) * c;
      maxIndex = i;
    }
  }
  if (total === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  // getValueAtPercentile's count for each percentile, with its guard against 1-ulp excess.
  const wanted = SUMMARY_PERCENTILES.map((pct) => {
    const fp = (pct / 100) * total;
    return Math.max(Math.ceil(fp - 2 ** (Math.floor(Math.log2(fp)) - 52)), 1);
  });
  const at: number[] = [];
  let seen = 0;
  for (let i = 0; i < cur.length && at.length < wanted.length; i++) {
    seen += cur[i] - prev[i];
    while (at.length < wanted.length && seen >= wanted[at.length]) at.push(h.highestEquivalentValue(h.valueFromIndex(i)));
  }
  const r = (us: number) => Math.round(us) / 1000;
  return {
    count: total,
    mean: r(sum / total),
    p50: r(at[0]),
    p90: r(at[1]),
    p99: r(at[2]),
    p999: r(at[3]),
    max: r(h.highestEquivalentValue(h.valueFromIndex(maxIndex))),
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
   * A reader of the values recorded since its previous call (the first call: since the start),
   * for the live page, which reads once per second and only while someone watches. It keeps a
   * copy of the counts array between calls (a typed-array copy, ≈ 0.1 MB) and reads the
   * interval's count, mean, percentiles and max from the difference in one walk, with the
   * library's own rules (`getValueAtPercentile`, `mean`, the highest equivalent value of the
   * top bucket): nothing per recorded value, and no histogram built. The former reader copied
   * the histogram twice and subtracted (hdr's copies re-record every bucket): 6–17 ms per read
   * with 200k values recorded, a pause on the server's event loop every second a viewer watched
   * (docs/bench.md, case 5, the live page's cost). `test/unit/histogram-interval.test.ts`
   * checks it against a histogram of the interval's values alone.
   */
  intervalReader(): () => LatencySummary {
    const h = this.h as unknown as HdrInternals;
    if (!(h._counts instanceof Uint32Array) || typeof h.valueFromIndex !== 'function') return this.copyingIntervalReader();
    const n = h.countsArrayLength;
    // The first read covers everything since the start: the difference from all zeros.
    let prev = new Uint32Array(n);
    return () => {
      const cur = h._counts.slice(0, n);
      const p = prev;
      prev = cur;
      return intervalSummary(h, cur, p);
    };
  }

  /** The former reader (two copies and a subtraction), for a histogram without a typed counts array. */
  private copyingIntervalReader(): () => LatencySummary {
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
