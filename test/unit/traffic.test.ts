import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { burstyArrivals, burstyShape } from '../../packages/sluice/src/sources/bursty.js';
import { loadTrace, parseTimestamp, peakSecond, replayTimes, speedupForPeak, traceArrivals } from '../../packages/sluice/src/sources/trace.js';
import { seededRng } from '../../packages/sluice/src/core/random.js';
import type { ArrivalSchedule } from '../../packages/sluice/src/sources/load.js';

function take(s: ArrivalSchedule, untilMs: number): number[] {
  const out: number[] = [];
  for (let t = s.next(); t !== null && t < untilMs; t = s.next()) out.push(t);
  return out;
}

function perSecond(times: number[], seconds: number): number[] {
  const c = new Array<number>(seconds).fill(0);
  for (const t of times) if (t < seconds * 1000) c[Math.floor(t / 1000)]++;
  return c;
}

test('bursty schedule is increasing and hits the mean rate and peak-to-mean asked (generous bounds)', () => {
  for (const [mean, ptm] of [
    [200, 5],
    [1000, 10],
  ] as const) {
    const s = burstyArrivals({ meanPerSec: mean, peakToMean: ptm, meanOnMs: 1000, rng: seededRng(1) });
    const seconds = 3000; // ~300 ON/OFF cycles: the mean converges within the bounds
    const times = take(s, seconds * 1000);
    for (let i = 1; i < times.length; i++) assert.ok(times[i] >= times[i - 1], `not increasing at ${i}`);
    const rate = times.length / seconds;
    assert.ok(rate > 0.75 * mean && rate < 1.25 * mean, `mean rate ${rate} vs ${mean}`);
    const secs = perSecond(times, seconds);
    const peak = Math.max(...secs);
    // A one-second window inside an ON period sees the ON rate, mean × ptm (± Poisson noise).
    assert.ok(peak / rate > 0.7 * ptm && peak / rate < 1.6 * ptm, `peak-to-mean ${peak / rate} vs ${ptm}`);
  }
});

test('bursty shape: ON fraction follows from mean, peak and OFF rate; bad options are refused', () => {
  const sh = burstyShape({ meanPerSec: 100, peakToMean: 4, offPerSec: 20 });
  assert.equal(sh.peakPerSec, 400);
  assert.ok(Math.abs(sh.onFraction * 400 + (1 - sh.onFraction) * 20 - 100) < 1e-9);
  assert.throws(() => burstyShape({ meanPerSec: 100, peakToMean: 1 }), /peakToMean/);
  assert.throws(() => burstyShape({ meanPerSec: 100, peakToMean: 3, offPerSec: 100 }), /offPerSec/);
  // Fixed sojourns give a square wave: OFF then ON for exactly meanOnMs.
  const sq = take(burstyArrivals({ meanPerSec: 100, peakToMean: 4, meanOnMs: 500, sojourn: 'fixed', rng: seededRng(1) }), 2000);
  assert.ok(sq.every((t) => t >= 1500), 'first arrivals only after the 1500 ms OFF period');
});

test('timestamps: ISO with 7 fractional digits, zones, numbers with units', () => {
  assert.equal(parseTimestamp('2023-11-16 18:17:03.9799600'), Date.UTC(2023, 10, 16, 18, 17, 3) + 979.96);
  assert.equal(parseTimestamp('2018-03-24T17:15:20.629574Z'), Date.UTC(2018, 2, 24, 17, 15, 20) + 629.574);
  assert.equal(parseTimestamp('2018-03-24T19:15:20+02:00'), Date.UTC(2018, 2, 24, 17, 15, 20));
  assert.equal(parseTimestamp(1.5), 1500);
  assert.equal(parseTimestamp(1500, 'ms'), 1500);
  assert.equal(parseTimestamp('n/a'), null);
});

test('trace parsing: CSV, NDJSON and gzip NDJSON give the same relative times', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-traffic-'));
  try {
    const secs = [0, 0.1, 0.25, 1.0, 1.004, 5];
    const iso = (s: number) => new Date(Date.UTC(2023, 0, 1) + s * 1000).toISOString().replace('T', ' ').replace('Z', '') + '0';
    writeFileSync(join(dir, 'a.csv'), 'TIMESTAMP,ContextTokens\n' + secs.map((s) => `${iso(s)},10`).join('\n') + '\n');
    const nd = secs.map((s, i) => JSON.stringify({ _write_ts: new Date(Date.UTC(2018, 0, 1) + s * 1000).toISOString(), n: i })).join('\n') + '\n';
    writeFileSync(join(dir, 'b.json'), nd);
    writeFileSync(join(dir, 'c.log'), gzipSync(nd)); // no .gz name: detected from magic bytes
    writeFileSync(join(dir, 'd.csv'), 'at_s\n3\n1\n2\n'); // numeric seconds, out of order
    const a = loadTrace(join(dir, 'a.csv'));
    const b = loadTrace(join(dir, 'b.json'), { keepLines: true });
    const c = loadTrace(join(dir, 'c.log'));
    const d = loadTrace(join(dir, 'd.csv'));
    assert.equal(a.format, 'csv');
    assert.equal(b.format, 'ndjson');
    assert.equal(b.field, '_write_ts');
    assert.equal(c.gzip, true);
    for (const t of [a, b, c]) {
      assert.equal(t.timesMs.length, secs.length);
      t.timesMs.forEach((v, i) => assert.ok(Math.abs(v - secs[i] * 1000) < 0.01, `${t.source}[${i}] = ${v}`));
    }
    assert.equal(JSON.parse(b.lines![2]).n, 2);
    assert.deepEqual([...d.timesMs], [0, 1000, 2000]);
    assert.equal(d.outOfOrder, 1);
    writeFileSync(join(dir, 'bad.csv'), 'foo\nbar\n');
    assert.throws(() => loadTrace(join(dir, 'bad.csv')), /no readable timestamps/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('replay: speedup divides gaps, maxGapMs caps them, fromMs skips ahead; schedule increases', () => {
  const trace = { timesMs: Float64Array.from([0, 100, 200, 60_000, 60_050]) };
  assert.deepEqual([...replayTimes(trace, { speedup: 10 })], [0, 10, 20, 6_000, 6_005]);
  assert.deepEqual([...replayTimes(trace, { speedup: 10, maxGapMs: 100 })], [0, 10, 20, 120, 125]);
  const full = { ...trace, source: 'x', format: 'csv' as const, field: 't', skipped: 0, outOfOrder: 0, gzip: false };
  const s = traceArrivals(full, { speedup: 2, fromMs: 75 });
  const got = take(s, Infinity);
  assert.deepEqual(got, [25, 29_925, 29_950]);
  assert.equal(s.firstIndex, 2);
});

test('peak second and the speedup that makes it reach a target rate', () => {
  // 1 arrival per second for 100 s, then a burst of 50 in 0.5 s.
  const times: number[] = [];
  for (let i = 0; i < 100; i++) times.push(i * 1000);
  for (let i = 0; i < 50; i++) times.push(100_000 + i * 10);
  const trace = { timesMs: Float64Array.from(times) };
  const p1 = peakSecond(trace);
  assert.equal(p1.ratePerSec, 50); // windows are [t, t + 1000): the arrival at 99 s is 1000 ms before the burst
  const s = speedupForPeak(trace, 100);
  const p = peakSecond(trace, { speedup: s });
  assert.ok(p.ratePerSec >= 100 && p.ratePerSec <= 103, `peak ${p.ratePerSec} at ×${s}`);
  // Capping gaps never lowers the peak second.
  assert.ok(peakSecond(trace, { speedup: s, maxGapMs: 5 }).ratePerSec >= p.ratePerSec);
});
