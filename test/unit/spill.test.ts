import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskSpillStore, defaultSpillCodec, jsonSpillCodec, rawLineSpillCodec } from '../../packages/sluice/src/core/spill.js';
import { crc32, crc32Table } from '../../packages/sluice/src/core/crc32.js';
import { isSluiceError, ErrorCode } from '../../packages/sluice/src/core/errors.js';
import { envelope, type Envelope } from '../../packages/sluice/src/core/types.js';

interface Rec {
  n: number;
  pad: string;
}

function item(n: number, padBytes = 40): Envelope<Rec> {
  const pad = 'x'.repeat(padBytes);
  const raw = Buffer.from(JSON.stringify({ n, pad }));
  const e = envelope<Rec>({ n, pad }, { bytes: raw.length, intendedAtMs: 1000 + n, id: `id${n}`, raw, offset: n * 10 });
  e.acceptedAtMs = 2000 + n;
  e.seq = n;
  return e;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'sluice-spill-test-'));
}

function segFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith('.spill')).sort();
}

test('crc32: known vector, pieces, and the portable table agrees with the native one', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32Table(Buffer.from('123456789')), 0xcbf43926);
  const b = Buffer.alloc(10_001);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7919) & 255;
  assert.equal(crc32Table(b), crc32(b));
  assert.equal(crc32(b, crc32(b, 0, 0, 333), 333), crc32(b));
  assert.equal(crc32Table(b, crc32Table(b, 0, 0, 5), 5, b.length), crc32(b));
});

test('spill: items come back in append order with every field round-tripped', () => {
  const dir = tmp();
  try {
    const s = DiskSpillStore.open<Rec>({ dir, segmentBytes: 1024 });
    for (let n = 1; n <= 50; n++) assert.equal(s.tryAppend(item(n), n), true);
    assert.equal(s.size(), 50);
    assert.equal(s.firstSeq(), 1);
    assert.equal(s.lastSeq(), 50);
    assert.equal(s.bytes(), Array.from({ length: 50 }, (_, i) => item(i + 1).bytes).reduce((a, b) => a + b));
    for (let n = 1; n <= 50; n++) {
      assert.equal(s.peekBytes(), item(n).bytes);
      const e = s.shift()!;
      const want = item(n);
      assert.deepEqual(e.value, want.value);
      assert.equal(e.seq, n);
      assert.equal(e.id, want.id);
      assert.equal(e.offset, want.offset);
      assert.deepEqual(e.raw, want.raw);
      assert.ok(Math.abs(e.intendedAtMs - want.intendedAtMs) < 0.01);
      assert.ok(Math.abs(e.acceptedAtMs - want.acceptedAtMs) < 0.01);
    }
    assert.equal(s.shift(), undefined);
    assert.equal(s.size(), 0);
    assert.equal(s.bytes(), 0);
    assert.equal(s.firstSeq(), Infinity);
    s.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: segments roll at segmentBytes and are deleted only once read back AND released', () => {
  const dir = tmp();
  try {
    const s = DiskSpillStore.open<Rec>({ dir, segmentBytes: 1000, writeBufferBytes: 0 });
    for (let n = 1; n <= 40; n++) s.tryAppend(item(n), n);
    const segs = segFiles(dir).length;
    assert.ok(segs >= 4, `expected several segments, got ${segs}`);
    for (const f of segFiles(dir)) assert.ok(statSync(join(dir, f)).size <= 1000);
    // Read everything back: nothing deleted until released.
    const got: Envelope<Rec>[] = [];
    for (let e = s.shift(); e; e = s.shift()) got.push(e);
    assert.equal(got.length, 40);
    assert.equal(segFiles(dir).length, segs);
    // Release the first half (out of order within it): the fully released segments go.
    const half = got.slice(0, 20).reverse();
    s.release(half);
    const left = segFiles(dir).length;
    assert.ok(left < segs && left > 0, `${left} of ${segs} segments left`);
    // Items the store never handed out are ignored.
    s.release([item(999)]);
    s.release(got.slice(20));
    assert.equal(segFiles(dir).length, 0);
    assert.equal(s.stats().diskBytes, 0);
    assert.equal(s.stats().released, 40);
    // Appending again starts a fresh segment.
    assert.equal(s.tryAppend(item(41), 41), true);
    assert.equal(segFiles(dir).length, 1);
    assert.equal(s.shift()!.seq, 41);
    s.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: spillMaxBytes bounds the disk; a full store refuses until segments are released', () => {
  const dir = tmp();
  try {
    const s = DiskSpillStore.open<Rec>({ dir, spillMaxBytes: 2000, segmentBytes: 500, fallback: 'drop-newest' });
    assert.equal(s.fallback, 'drop-newest');
    let n = 0;
    while (s.tryAppend(item(n + 1), n + 1)) n++;
    assert.ok(n > 5);
    assert.ok(s.diskUsage() <= 2000, `disk ${s.diskUsage()}`);
    assert.equal(s.stats().refused, 1);
    assert.equal(s.tryAppend(item(n + 1), n + 1), false);
    // Reading back alone frees nothing (not committed yet) …
    const first = [s.shift()!, s.shift()!, s.shift()!, s.shift()!, s.shift()!, s.shift()!];
    assert.equal(s.tryAppend(item(n + 1), n + 1), false);
    // … releasing a whole segment does.
    s.release(first);
    assert.equal(s.tryAppend(item(n + 1), n + 1), true);
    s.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: reopen recovers pending records after the read pointer, in order', () => {
  const dir = tmp();
  try {
    const a = DiskSpillStore.open<Rec>({ dir, segmentBytes: 800 });
    for (let n = 1; n <= 30; n++) a.tryAppend(item(n), n);
    const firstTen = Array.from({ length: 10 }, () => a.shift()!);
    a.release(firstTen); // committed: must not come back
    a.shift(); // read back but never released: must come back (at-least-once)
    a.close();
    const b = DiskSpillStore.open<Rec>({ dir, segmentBytes: 800 });
    assert.equal(b.size(), 20);
    assert.equal(b.lastSeq(), 30);
    assert.equal(b.stats().recoveredRecords, 20);
    const seqs: number[] = [];
    for (let e = b.shift(); e; e = b.shift()) seqs.push(e.seq);
    assert.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => i + 11));
    b.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: a torn tail is cut on reopen by length and checksum, never read as data', () => {
  for (const tear of ['half-record', 'bad-crc', 'garbage-length', 'short-prefix']) {
    const dir = tmp();
    try {
      const a = DiskSpillStore.open<Rec>({ dir });
      for (let n = 1; n <= 5; n++) a.tryAppend(item(n), n);
      a.close();
      const [seg] = segFiles(dir);
      const path = join(dir, seg);
      const good = readFileSync(path);
      // Build a sixth record the way a crash would leave it.
      const b = DiskSpillStore.open<Rec>({ dir: join(dir, 'donor') });
      b.tryAppend(item(6), 6);
      b.close();
      const rec6 = readFileSync(join(dir, 'donor', segFiles(join(dir, 'donor'))[0]));
      rmSync(join(dir, 'donor'), { recursive: true });
      let tail: Buffer;
      if (tear === 'half-record') tail = rec6.subarray(0, Math.floor(rec6.length / 2));
      else if (tear === 'bad-crc') {
        tail = Buffer.from(rec6);
        tail[tail.length - 3] ^= 0x40;
      } else if (tear === 'garbage-length') tail = Buffer.from([0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5, 6]);
      else tail = rec6.subarray(0, 3);
      appendFileSync(path, tail);
      const c = DiskSpillStore.open<Rec>({ dir });
      assert.equal(c.size(), 5, tear);
      assert.equal(c.stats().tornBytesCut, tail.length, tear);
      assert.equal(statSync(path).size, good.length, tear);
      const seqs: number[] = [];
      for (let e = c.shift(); e; e = c.shift()) seqs.push(e.seq);
      assert.deepEqual(seqs, [1, 2, 3, 4, 5], tear);
      // The store goes on appending after the cut.
      assert.equal(c.tryAppend(item(7), 7), true);
      assert.equal(c.shift()!.seq, 7);
      c.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('spill: a corrupted record is detected (SLUICE_CORRUPT), at read-back and on reopen of a non-last segment', () => {
  const dir = tmp();
  try {
    const s = DiskSpillStore.open<Rec>({ dir, segmentBytes: 400, writeBufferBytes: 0 });
    for (let n = 1; n <= 20; n++) s.tryAppend(item(n), n);
    const [first] = segFiles(dir);
    const path = join(dir, first);
    const buf = readFileSync(path);
    buf[60] ^= 0x01; // inside the first record's body
    writeFileSync(path, buf);
    assert.throws(() => s.shift(), (e: unknown) => isSluiceError(e, ErrorCode.Corrupt));
    s.close();
    assert.throws(() => DiskSpillStore.open<Rec>({ dir, segmentBytes: 400 }), (e: unknown) => isSluiceError(e, ErrorCode.Corrupt));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: every codec round-trips value, id, raw and offset through the store', () => {
  for (const [name, codec] of [
    ['default', defaultSpillCodec<Rec>()],
    ['json', jsonSpillCodec<Rec>()],
    ['rawLine', rawLineSpillCodec<Rec>()],
  ] as const) {
    const dir = tmp();
    try {
      const s = DiskSpillStore.open<Rec>({ dir, codec });
      for (let n = 1; n <= 20; n++) s.tryAppend(item(n, n * 100), n);
      if (name !== 'rawLine') {
        const noRaw = item(21);
        noRaw.raw = undefined;
        s.tryAppend(noRaw, 21);
      }
      for (let n = 1; n <= 20; n++) {
        const e = s.shift()!;
        const want = item(n, n * 100);
        assert.deepEqual(e.value, want.value, name);
        assert.deepEqual(e.raw, want.raw, name);
        assert.equal(e.id, want.id, name);
        assert.equal(e.offset, want.offset, name);
      }
      if (name !== 'rawLine') assert.equal(s.shift()!.raw, undefined);
      s.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('spill: releases that arrive after close() leave the files for the next open()', () => {
  const dir = tmp();
  try {
    const s = DiskSpillStore.open<Rec>({ dir, segmentBytes: 300 });
    for (let n = 1; n <= 6; n++) s.tryAppend(item(n), n);
    const got = [s.shift()!, s.shift()!, s.shift()!];
    s.close();
    s.release(got); // a batch completing after shutdown: no throw, nothing deleted
    assert.throws(() => s.tryAppend(item(7), 7), (e: unknown) => isSluiceError(e, ErrorCode.Closed));
    const r = DiskSpillStore.open<Rec>({ dir, segmentBytes: 300 });
    assert.equal(r.size(), 6, 'at-least-once: the unreleased pointer brings all six back');
    r.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('spill: options are validated with the bad value in the message', () => {
  assert.throws(() => DiskSpillStore.open<Rec>({ dir: '' }), /dir/);
  assert.throws(() => DiskSpillStore.open<Rec>({ dir: join(tmpdir(), 'x'), spillMaxBytes: 0 }), /spillMaxBytes=0/);
  assert.throws(() => DiskSpillStore.open<Rec>({ dir: join(tmpdir(), 'x'), fallback: 'drop-oldest' as 'block' }), /fallback/);
});

test('spill: its synchronous I/O is counted and timed, one bounded call at a time (DiskSpillStats io*)', () => {
  const dir = tmp();
  try {
    const writeBufferBytes = 16 * 1024;
    const s = DiskSpillStore.open<Rec>({ dir, spillMaxBytes: 64 * 2 ** 20, segmentBytes: 1 << 20, writeBufferBytes, readChunkBytes: 32 * 1024 });
    const n = 2_000;
    for (let i = 0; i < n; i++) assert.ok(s.tryAppend(item(i, 200), i));
    const written = s.stats().diskBytes;
    let back = 0;
    while (s.shift()) back++;
    assert.equal(back, n);
    const st = s.stats();
    // Every byte went through writes of at most writeBufferBytes and came back through reads of
    // at most readChunkBytes: at least that many calls, each one timed.
    assert.ok(st.ioCalls >= Math.ceil(written / writeBufferBytes) + Math.ceil(written / (32 * 1024)), JSON.stringify(st));
    assert.ok(st.ioMaxMs > 0 && st.ioMs >= st.ioMaxMs, JSON.stringify(st));
    s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
