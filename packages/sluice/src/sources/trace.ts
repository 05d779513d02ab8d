/**
 * Trace replay: real arrival timestamps, replayed open-loop.
 *
 * Reads a CSV file (a timestamp column, `TIMESTAMP` by default, else the first column) or
 * an NDJSON file (a timestamp field, `_write_ts` by default, else `ts`/`timestamp`/`time`),
 * gzip-compressed or not (detected from the magic bytes, not the name). Timestamps may be
 * ISO-8601 / `YYYY-MM-DD hh:mm:ss.fffffff` strings (any number of fractional digits: the
 * Azure traces carry 100 ns) or numbers (`numericUnit`, seconds by default).
 *
 * Replay (`traceArrivals`) turns the timestamps into an `ArrivalSchedule`:
 *   - `speedup` divides every inter-arrival gap (×10 plays an hour in 6 minutes);
 *   - `maxGapMs` caps each gap *after* the speedup (replay time): a trace with long silences
 *     (up to 217 s in the Azure `code` trace) then fits a time budget, while bursts keep their
 *     exact shape. Capping only removes idle time, so the peak second is never lowered;
 *   - `fromMs` starts the replay at that replay-time offset (e.g. just before the peak second).
 * `peakSecond` and `speedupForPeak` compute the busiest one-second window of the replay and
 * the speedup that makes it reach a target rate, so a trace can be scaled to a measured capacity.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { basename } from 'node:path';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';
import type { ArrivalSchedule } from './load.js';

export interface TraceOptions {
  /** `csv` or `ndjson`; @default from the content (a first line starting with `{` is NDJSON) */
  format?: 'csv' | 'ndjson';
  /** CSV column or NDJSON field holding the timestamp. */
  field?: string;
  /** Unit of numeric timestamps. @default 's' */
  numericUnit?: 's' | 'ms' | 'us' | 'ns';
  /** Keep each NDJSON line as a payload (for replaying real records). @default false */
  keepLines?: boolean;
  /** Stop after this many records. */
  limit?: number;
}

export interface Trace {
  /** File name (no directory). */
  source: string;
  format: 'csv' | 'ndjson';
  field: string;
  /** Arrival times in ms from the first arrival, non-decreasing. */
  timesMs: Float64Array;
  /** NDJSON lines (same order as `timesMs`) when `keepLines`. */
  lines?: string[];
  /** Records whose timestamp could not be read (skipped, counted). */
  skipped: number;
  /** Records that arrived out of order in the file (the trace was sorted). */
  outOfOrder: number;
  gzip: boolean;
}

const NDJSON_FIELDS = ['_write_ts', 'ts', 'timestamp', 'time'];

/** Reads and parses a trace file. */
export function loadTrace(path: string, opts: TraceOptions = {}): Trace {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (cause) {
    throw new SluiceError(ErrorCode.InvalidOption, `cannot read trace ${path}: ${(cause as Error).message}`, { cause, details: { path } });
  }
  return parseTrace(buf, basename(path), opts);
}

/** Parses trace bytes (gzip detected from the magic bytes 1f 8b). */
export function parseTrace(bytes: Buffer, source: string, opts: TraceOptions = {}): Trace {
  const gzip = bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
  const text = (gzip ? gunzipSync(bytes) : bytes).toString('utf8');
  const firstChar = text.trimStart()[0];
  const format = opts.format ?? (firstChar === '{' ? 'ndjson' : 'csv');
  const unit = opts.numericUnit ?? 's';
  const limit = opts.limit ?? Infinity;
  const raw: number[] = [];
  const lines: string[] | undefined = opts.keepLines ? [] : undefined;
  let skipped = 0;
  let field = opts.field ?? '';
  let pos = 0;
  const nextLine = (): string | null => {
    if (pos >= text.length) return null;
    let end = text.indexOf('\n', pos);
    if (end === -1) end = text.length;
    const l = text.slice(pos, end).replace(/\r$/, '');
    pos = end + 1;
    return l;
  };
  if (format === 'csv') {
    const header = nextLine();
    if (header === null) throw malformed(source, 'empty CSV');
    const cols = header.split(',').map((c) => c.trim());
    field = field || (cols.includes('TIMESTAMP') ? 'TIMESTAMP' : cols[0]);
    const idx = cols.indexOf(field);
    if (idx < 0) throw malformed(source, `CSV has no column ${JSON.stringify(field)} (columns: ${cols.join(', ')})`);
    for (let l = nextLine(); l !== null && raw.length < limit; l = nextLine()) {
      if (l.trim() === '') continue;
      const v = parseTimestamp(l.split(',')[idx]?.trim(), unit);
      if (v === null) skipped++;
      else raw.push(v);
    }
  } else {
    for (let l = nextLine(); l !== null && raw.length < limit; l = nextLine()) {
      if (l.trim() === '') continue;
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(l) as Record<string, unknown>;
      } catch {
        skipped++;
        continue;
      }
      if (!field) field = opts.field ?? NDJSON_FIELDS.find((f) => f in rec) ?? '';
      const v = parseTimestamp(rec[field], unit);
      if (v === null) skipped++;
      else {
        raw.push(v);
        lines?.push(l);
      }
    }
  }
  if (raw.length === 0) throw malformed(source, `no readable timestamps in field ${JSON.stringify(field)}`);
  let outOfOrder = 0;
  for (let i = 1; i < raw.length; i++) if (raw[i] < raw[i - 1]) outOfOrder++;
  let order: number[] | null = null;
  if (outOfOrder > 0) {
    order = raw.map((_, i) => i).sort((a, b) => raw[a] - raw[b]);
  }
  const t0 = order ? raw[order[0]] : raw[0];
  const timesMs = new Float64Array(raw.length);
  for (let i = 0; i < raw.length; i++) timesMs[i] = (order ? raw[order[i]] : raw[i]) - t0;
  const sortedLines = lines && order ? order.map((i) => lines[i]) : lines;
  return { source, format, field, timesMs, lines: sortedLines, skipped, outOfOrder, gzip };
}

function malformed(source: string, why: string): SluiceError {
  return new SluiceError(ErrorCode.MalformedInput, `trace ${source}: ${why}`, { details: { source } });
}

const UNIT_MS = { s: 1000, ms: 1, us: 1e-3, ns: 1e-6 } as const;
const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$/;

/** Epoch ms (fractional) of a timestamp, or null. Strings without a zone are read as UTC. */
export function parseTimestamp(v: unknown, unit: keyof typeof UNIT_MS = 's'): number | null {
  if (typeof v === 'number') return Number.isFinite(v) ? v * UNIT_MS[unit] : null;
  if (typeof v !== 'string' || v === '') return null;
  const m = DATE_RE.exec(v);
  if (!m) {
    const n = Number(v);
    return Number.isFinite(n) ? n * UNIT_MS[unit] : null;
  }
  // Date.parse keeps only milliseconds: parse the fraction ourselves (100 ns in Azure traces).
  const whole = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  const frac = m[7] ? Number(`0.${m[7]}`) * 1000 : 0;
  let zoneMs = 0;
  if (m[8] && m[8] !== 'Z') {
    const z = m[8].replace(':', '');
    const sign = z[0] === '-' ? -1 : 1;
    zoneMs = sign * (Number(z.slice(1, 3)) * 60 + Number(z.slice(3, 5))) * 60_000;
  }
  return whole + frac - zoneMs;
}

export interface ReplayOptions {
  /** Divides inter-arrival gaps. @default 1 */
  speedup?: number;
  /** Caps each gap of the replay (ms of replay time, after the speedup). @default Infinity (no cap) */
  maxGapMs?: number;
  /** Starts the replay at this replay-time offset (ms); earlier arrivals are skipped. @default 0 */
  fromMs?: number;
}

/** Replay offsets (ms from the first arrival) after speedup and gap capping. */
export function replayTimes(trace: Pick<Trace, 'timesMs'>, opts: ReplayOptions = {}): Float64Array {
  const speedup = opts.speedup ?? 1;
  if (!(speedup > 0)) throw invalidOption('speedup', speedup, 'a number > 0');
  const maxGap = opts.maxGapMs ?? Infinity;
  if (!(maxGap > 0)) throw invalidOption('maxGapMs', maxGap, 'a number > 0');
  const src = trace.timesMs;
  const out = new Float64Array(src.length);
  let t = 0;
  for (let i = 1; i < src.length; i++) {
    t += Math.min((src[i] - src[i - 1]) / speedup, maxGap);
    out[i] = t;
  }
  return out;
}

/** The trace as an open-loop schedule (see the module comment for the options). */
export function traceArrivals(trace: Trace, opts: ReplayOptions = {}): ArrivalSchedule & { readonly firstIndex: number } {
  const times = replayTimes(trace, opts);
  const from = opts.fromMs ?? 0;
  let i = 0;
  while (i < times.length && times[i] < from) i++;
  const firstIndex = i;
  return {
    firstIndex,
    description: `trace ${trace.source} (${trace.timesMs.length} arrivals, ×${round(opts.speedup ?? 1)}${opts.maxGapMs !== undefined ? `, gaps ≤ ${opts.maxGapMs} ms` : ''}${from > 0 ? `, from ${Math.round(from)} ms` : ''})`,
    next: () => (i < times.length ? times[i++] - from : null),
  };
}

export interface PeakSecond {
  /** Most arrivals in any one-second (sliding) window of the replay. */
  ratePerSec: number;
  /** Replay time (ms) where that window starts. */
  atMs: number;
  /** Replay length (ms) and mean rate, for the peak-to-mean ratio. */
  durationMs: number;
  meanPerSec: number;
}

/** The busiest second of the replay (sliding window over the replay offsets). */
export function peakSecond(trace: Pick<Trace, 'timesMs'>, opts: ReplayOptions = {}, windowMs = 1000): PeakSecond {
  const t = replayTimes(trace, opts);
  let best = 0;
  let at = 0;
  for (let lo = 0, hi = 0; hi < t.length; hi++) {
    while (t[hi] - t[lo] >= windowMs) lo++;
    if (hi - lo + 1 > best) {
      best = hi - lo + 1;
      at = t[lo];
    }
  }
  const durationMs = t.length > 0 ? t[t.length - 1] : 0;
  return {
    ratePerSec: (best * 1000) / windowMs,
    atMs: at,
    durationMs,
    meanPerSec: durationMs > 0 ? (t.length * 1000) / durationMs : t.length,
  };
}

/**
 * The speedup that makes the replay's peak second reach `targetPerSec` (within ~1%).
 * The peak count in a one-second window of the replay grows with the speedup (a replay
 * second covers more of the trace), so a bisection on log(speedup) finds it.
 */
export function speedupForPeak(trace: Pick<Trace, 'timesMs'>, targetPerSec: number, opts: Omit<ReplayOptions, 'speedup' | 'fromMs'> = {}): number {
  if (!(targetPerSec > 0)) throw invalidOption('targetPerSec', targetPerSec, 'a number > 0');
  if (trace.timesMs.length < targetPerSec) {
    throw invalidOption('targetPerSec', targetPerSec, `at most the trace's ${trace.timesMs.length} arrivals (a second cannot hold more)`);
  }
  const at = (s: number) => peakSecond(trace, { ...opts, speedup: s }).ratePerSec;
  let lo = 1e-6;
  let hi = 1;
  while (at(hi) < targetPerSec) hi *= 2;
  for (let k = 0; k < 60 && hi / lo > 1.005; k++) {
    const mid = Math.sqrt(lo * hi);
    if (at(mid) < targetPerSec) lo = mid;
    else hi = mid;
  }
  return hi;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
