/**
 * DiskSpillStore: the `spill` overflow policy's disk store (docs/overflow.md).
 *
 * Items the memory queue cannot hold are serialised into append-only segment files and
 * read back, in order, as the sink catches up. Nothing spilled stays in a JS array: the
 * store keeps counters, one decoded record at a time and a small read chunk.
 *
 * Record layout (little-endian), one after the other in `seg-<id 12 digits>.spill`:
 *
 *   u32 len   length of what follows the 8-byte prefix (fixed part + codec body)
 *   u32 crc   CRC-32 of those `len` bytes
 *   f64 seq             pipeline acceptance order
 *   f64 acceptedAtEpoch acceptance time, epoch ms (monotonic times do not survive a restart;
 *   f64 intendedAtEpoch intended arrival, epoch ms  epoch ones do, so latency stays honest)
 *   f64 itemBytes       the envelope's `bytes` (peekBytes() reads it without decoding)
 *   …   codec body      default: u32 raw length | raw bytes | JSON of {value, id, offset}
 *
 * Commits: the pipeline calls `release(batch)` once a batch it cut reaches a terminal state
 * (committed, dead-lettered or dropped). A segment is deleted when every record in it was
 * read back and released. The store also keeps a read pointer (`read.ptr`: the position of
 * the first record not yet released, in read order) rewritten — without fsync — whenever
 * that prefix advances.
 *
 * Durability (documented choice: spilled items survive a restart of the process):
 * - a record is handed to the kernel when the write buffer (`writeBufferBytes`) fills, when
 *   the reader needs it, on `flush()`/`sync()`/`close()`, or at once with `writeBufferBytes: 0`.
 *   From then on it survives the death of the process (kill -9, OOM kill): page cache.
 * - against power loss or a kernel crash, only what `sync()` (fdatasync) covered survives.
 * - `DiskSpillStore.open()` recovers every record after the read pointer: at-least-once,
 *   a batch that was committed by the sink but not yet released comes back again.
 * - a torn tail (a crash in the middle of a write) in the last segment is detected by the
 *   length prefix and the CRC and cut off (truncated); a bad record anywhere else is
 *   corruption, not a torn tail, and `open()`/`shift()` throw SLUICE_CORRUPT.
 */
import {
  closeSync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { crc32 } from './crc32.js';
import { Deque } from './deque.js';
import { ErrorCode, SluiceError, invalidOption } from './errors.js';
import type { SpillStore } from './spill-store.js';
import type { Envelope } from './types.js';

/** Serialises what an envelope carries besides seq, times and bytes (those are in the fixed header). */
export interface SpillCodec<T> {
  /**
   * The record body, whole or in parts the store writes one after the other (parts spare
   * a copy: the default codec hands over the item's own `raw` bytes).
   */
  encode(env: Envelope<T>): Uint8Array | readonly Uint8Array[];
  /** Must not keep references into `body` (the read buffer is reused). */
  decode(body: Buffer): { value: T; id?: string; raw?: Buffer; offset?: number };
}

/**
 * The default codec: the raw bytes as they are, then JSON of `{value, id, offset}`:
 *   u32 rawLength (0xffffffff: no raw) | raw | JSON
 * No base64 and no escaping of the raw bytes into a JSON string: about a third of
 * `jsonSpillCodec`'s encoding time (see rawLineSpillCodec for figures). `meta` is not persisted.
 */
export function defaultSpillCodec<T>(): SpillCodec<T> {
  const NO_RAW = 0xffffffff;
  return {
    encode(env) {
      const len = Buffer.allocUnsafe(4);
      len.writeUInt32LE(env.raw ? env.raw.length : NO_RAW, 0);
      const json = Buffer.from(JSON.stringify({ value: env.value, id: env.id, offset: env.offset }));
      return env.raw ? [len, env.raw, json] : [len, json];
    },
    decode(body) {
      const rawLen = body.readUInt32LE(0);
      const has = rawLen !== NO_RAW;
      const jsonAt = 4 + (has ? rawLen : 0);
      const o = JSON.parse(body.toString('utf8', jsonAt)) as { value: T; id?: string; offset?: number };
      // A copy: `body` is the store's reusable read buffer.
      return { value: o.value, id: o.id, raw: has ? Buffer.from(body.subarray(4, jsonAt)) : undefined, offset: o.offset };
    },
  };
}

/**
 * For records whose `raw` is the JSON of their `value` (an NDJSON line, as sources and the
 * lab's RecordFactory produce): writes the raw bytes and `{id, offset}` only, and rebuilds
 * the value with JSON.parse on read-back. Measured here (busy 2-core machine, records whose
 * value holds an 8 KiB string; tryAppend / shift per record): rawLine ≈40 / 75 µs, default
 * ≈185 / 205 µs, json ≈290 / 170 µs — JSON.stringify of a large value dominates.
 */
export function rawLineSpillCodec<T>(): SpillCodec<T> {
  return {
    encode(env) {
      if (!env.raw) throw invalidOption('raw', undefined, 'a raw line on every item spilled with rawLineSpillCodec');
      const meta = Buffer.from(JSON.stringify({ id: env.id, offset: env.offset }));
      const len = Buffer.allocUnsafe(4);
      len.writeUInt32LE(meta.length, 0);
      return [len, meta, env.raw];
    },
    decode(body) {
      const metaLen = body.readUInt32LE(0);
      const m = JSON.parse(body.toString('utf8', 4, 4 + metaLen)) as { id?: string; offset?: number };
      const raw = Buffer.from(body.subarray(4 + metaLen));
      return { value: JSON.parse(raw.toString('utf8')) as T, id: m.id, raw, offset: m.offset };
    },
  };
}

/** All-JSON codec: `{value, id, raw (base64), offset}` — readable with any tool, slower. */
export function jsonSpillCodec<T>(): SpillCodec<T> {
  return {
    encode(env) {
      return Buffer.from(JSON.stringify({ value: env.value, id: env.id, raw: env.raw?.toString('base64'), offset: env.offset }));
    },
    decode(body) {
      const o = JSON.parse(body.toString('utf8')) as { value: T; id?: string; raw?: string; offset?: number };
      return { value: o.value, id: o.id, raw: o.raw === undefined ? undefined : Buffer.from(o.raw, 'base64'), offset: o.offset };
    },
  };
}

export interface DiskSpillOptions<T> {
  /** Directory of the segment files (created; a previous store's segments are recovered). */
  dir: string;
  /** Bytes on disk the store may hold, segments not yet deleted included. @default 256 MiB */
  spillMaxBytes?: number;
  /** A new segment starts when the current one would exceed this. @default min(4 MiB, spillMaxBytes / 4) */
  segmentBytes?: number;
  /** What the pipeline does when the store is full. @default 'block' */
  fallback?: 'block' | 'drop-newest';
  /** Appends are gathered up to this many bytes before one write(2); 0 writes each at once. @default 64 KiB */
  writeBufferBytes?: number;
  /** Read-back chunk (one buffer, reused). @default 256 KiB */
  readChunkBytes?: number;
  /** A length prefix above this is corruption, not a record. @default 64 MiB */
  maxRecordBytes?: number;
  codec?: SpillCodec<T>;
}

export const SPILL_DEFAULTS = Object.freeze({
  spillMaxBytes: 256 * 2 ** 20,
  segmentBytes: 4 * 2 ** 20,
  fallback: 'block' as const,
  writeBufferBytes: 64 * 1024,
  readChunkBytes: 256 * 1024,
  maxRecordBytes: 64 * 2 ** 20,
});

export interface DiskSpillStats {
  segments: number;
  diskBytes: number;
  pendingItems: number;
  pendingBytes: number;
  appended: number;
  readBack: number;
  released: number;
  /** tryAppend calls refused because of spillMaxBytes. */
  refused: number;
  deletedSegments: number;
  /** Records found by open() after the read pointer. */
  recoveredRecords: number;
  /** Bytes of torn tail cut by open(). */
  tornBytesCut: number;
  /**
   * The store's I/O is synchronous, on the caller's thread (the event loop), and bounded per
   * call: one write of at most `writeBufferBytes`, one read of at most `readChunkBytes` (or
   * one record, if larger), one open, one unlink or one 24-byte pointer write. These time
   * every such call (not open()'s recovery scan, nor sync()/close()): how long the store held
   * the event loop in all, and its longest single call. `lab overflow` reports them
   * (results/overflow.json, the spill variant's `spillIo`).
   */
  ioCalls: number;
  ioMs: number;
  ioMaxMs: number;
}

/** Bytes before the codec body: len, crc, seq, accepted, intended, itemBytes. */
const PREFIX = 8;
const FIXED = 32;
const SEG_RE = /^seg-(\d{12})\.spill$/;
const PTR_FILE = 'read.ptr';

interface Segment {
  id: number;
  path: string;
  /** Bytes in the file (buffered appends included). */
  size: number;
  /** Offset of the first record still to read (recovery may start past 0). */
  startOff: number;
  /** Records held from startOff on. */
  records: number;
  readDone: number;
  released: number;
}

interface ReadBack {
  seg: Segment;
  /** File offset just past this record. */
  end: number;
  released: boolean;
}

function segName(id: number): string {
  return `seg-${String(id).padStart(12, '0')}.spill`;
}

function corrupt(msg: string, details: Record<string, unknown>): SluiceError {
  return new SluiceError(ErrorCode.Corrupt, msg, { details });
}

export class DiskSpillStore<T> implements SpillStore<T> {
  readonly fallback: 'block' | 'drop-newest';
  readonly dir: string;
  readonly spillMaxBytes: number;
  readonly segmentBytes: number;
  private readonly codec: SpillCodec<T>;
  private readonly maxRecordBytes: number;

  private readonly segments: Segment[] = [];
  private nextId = 1;
  private diskBytes = 0;
  private pending = 0;
  private pendingBytes = 0;
  private maxSeq = 0;

  // writer
  private wSeg: Segment | null = null;
  private wFd = -1;
  private readonly wBuf: Buffer;
  private wLen = 0;

  // reader
  private rSeg: Segment | null = null;
  private rFd = -1;
  private rOff = 0;
  private chunk: Buffer;
  private chunkStart = 0;
  private chunkLen = 0;
  /** Length (prefix included) of the verified record at rOff, or -1. */
  private headLen = -1;

  // commit tracking
  private readonly readBack = new Deque<ReadBack>();
  private readonly tracked = new WeakMap<Envelope<T>, ReadBack>();
  private ptrFd = -1;
  private readonly ptrBuf = Buffer.alloc(24);

  private readonly counters = { appended: 0, readBack: 0, released: 0, refused: 0, deletedSegments: 0, recoveredRecords: 0, tornBytesCut: 0, ioCalls: 0, ioMs: 0, ioMaxMs: 0 };

  /** Runs one synchronous I/O call and adds its time to the io counters (see DiskSpillStats). */
  private io<R>(call: () => R): R {
    const t = performance.now();
    try {
      return call();
    } finally {
      const ms = performance.now() - t;
      this.counters.ioCalls++;
      this.counters.ioMs += ms;
      if (ms > this.counters.ioMaxMs) this.counters.ioMaxMs = ms;
    }
  }
  private closed = false;

  /** Opens (or creates) the store in `opts.dir`, recovering what a previous process left. */
  static open<T>(opts: DiskSpillOptions<T>): DiskSpillStore<T> {
    const s = new DiskSpillStore<T>(opts);
    s.recover();
    return s;
  }

  private constructor(opts: DiskSpillOptions<T>) {
    if (!opts || typeof opts.dir !== 'string' || opts.dir === '') throw invalidOption('dir', opts?.dir, 'a directory path');
    const o = { ...SPILL_DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as Required<DiskSpillOptions<T>>;
    const int = (name: string, v: number, min: number) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw invalidOption(name, v, `an integer ≥ ${min}`);
      return v;
    };
    this.dir = opts.dir;
    this.spillMaxBytes = int('spillMaxBytes', o.spillMaxBytes, 1);
    this.segmentBytes = int('segmentBytes', opts.segmentBytes ?? Math.max(1, Math.min(SPILL_DEFAULTS.segmentBytes, Math.floor(this.spillMaxBytes / 4))), 1);
    if (o.fallback !== 'block' && o.fallback !== 'drop-newest') throw invalidOption('fallback', o.fallback, '"block" or "drop-newest"');
    this.fallback = o.fallback;
    this.wBuf = Buffer.allocUnsafe(int('writeBufferBytes', o.writeBufferBytes, 0));
    this.chunk = Buffer.allocUnsafe(int('readChunkBytes', o.readChunkBytes, 64));
    this.maxRecordBytes = int('maxRecordBytes', o.maxRecordBytes, FIXED + 1);
    this.codec = opts.codec ?? defaultSpillCodec<T>();
  }

  // ------------------------------------------------------------ SpillStore

  tryAppend(env: Envelope<T>, seq: number): boolean {
    this.assertOpen();
    const enc = this.codec.encode(env);
    const parts: readonly Uint8Array[] = enc instanceof Uint8Array ? [enc] : enc;
    let bodyLen = 0;
    for (let k = 0; k < parts.length; k++) bodyLen += parts[k].length;
    const total = PREFIX + FIXED + bodyLen;
    if (total - PREFIX > this.maxRecordBytes)
      throw invalidOption('item', `${total} bytes encoded`, `a record ≤ maxRecordBytes (${this.maxRecordBytes})`);
    if (this.diskBytes + total > this.spillMaxBytes) {
      this.counters.refused++;
      return false;
    }
    if (this.wSeg === null || (this.wSeg.size > 0 && this.wSeg.size + total > this.segmentBytes)) this.roll();
    if (this.wLen + total > this.wBuf.length) this.flushWrites();
    let buf: Buffer;
    let at: number;
    if (total > this.wBuf.length) {
      buf = Buffer.allocUnsafe(total);
      at = 0;
    } else {
      buf = this.wBuf;
      at = this.wLen;
    }
    buf.writeUInt32LE(total - PREFIX, at);
    buf.writeDoubleLE(seq, at + 8);
    buf.writeDoubleLE(performance.timeOrigin + env.acceptedAtMs, at + 16);
    buf.writeDoubleLE(performance.timeOrigin + env.intendedAtMs, at + 24);
    buf.writeDoubleLE(env.bytes, at + 32);
    let o = at + PREFIX + FIXED;
    for (let k = 0; k < parts.length; k++) {
      buf.set(parts[k], o);
      o += parts[k].length;
    }
    buf.writeUInt32LE(crc32(buf, 0, at + PREFIX, at + total), at + 4);
    if (buf === this.wBuf) this.wLen += total;
    else this.writeAll(this.wFd, buf, 0, total);
    const seg = this.wSeg!;
    seg.size += total;
    seg.records++;
    this.diskBytes += total;
    this.pending++;
    this.pendingBytes += env.bytes;
    if (seq > this.maxSeq) this.maxSeq = seq;
    this.counters.appended++;
    return true;
  }

  peekBytes(): number {
    if (!this.loadHead()) return 0;
    return this.chunk.readDoubleLE(this.rOff - this.chunkStart + 32);
  }

  firstSeq(): number {
    if (!this.loadHead()) return Infinity;
    return this.chunk.readDoubleLE(this.rOff - this.chunkStart + 8);
  }

  lastSeq(): number {
    return this.maxSeq;
  }

  shift(): Envelope<T> | undefined {
    if (!this.loadHead()) return undefined;
    const p = this.rOff - this.chunkStart;
    const c = this.chunk;
    const seq = c.readDoubleLE(p + 8);
    const acceptedEpoch = c.readDoubleLE(p + 16);
    const intendedEpoch = c.readDoubleLE(p + 24);
    const bytes = c.readDoubleLE(p + 32);
    const d = this.codec.decode(c.subarray(p + PREFIX + FIXED, p + this.headLen));
    const env: Envelope<T> = {
      value: d.value,
      bytes,
      intendedAtMs: intendedEpoch - performance.timeOrigin,
      id: d.id,
      raw: d.raw,
      offset: d.offset,
      meta: undefined,
      acceptedAtMs: acceptedEpoch - performance.timeOrigin,
      seq,
    };
    const seg = this.rSeg!;
    this.rOff += this.headLen;
    this.headLen = -1;
    seg.readDone++;
    this.pending--;
    this.pendingBytes -= bytes;
    this.counters.readBack++;
    const rb: ReadBack = { seg, end: this.rOff, released: false };
    this.readBack.push(rb);
    this.tracked.set(env, rb);
    return env;
  }

  size(): number {
    return this.pending;
  }

  /** Sum of `bytes` of the items waiting on disk (the unit of the memory queue's byte bound). */
  bytes(): number {
    return this.pendingBytes;
  }

  /**
   * Tells the store that items it handed out reached a terminal state (committed,
   * dead-lettered or dropped). Items the store never held are ignored. Called by the
   * Pipeline for every batch it completes.
   */
  release(items: readonly Envelope<T>[]): void {
    let any = false;
    for (let i = 0; i < items.length; i++) {
      const rb = this.tracked.get(items[i]);
      if (rb === undefined || rb.released) continue;
      this.tracked.delete(items[i]);
      rb.released = true;
      rb.seg.released++;
      this.counters.released++;
      any = true;
      this.maybeDelete(rb.seg);
    }
    if (!any) return;
    let last: ReadBack | undefined;
    while (this.readBack.length > 0 && this.readBack.peek()!.released) last = this.readBack.shift();
    if (last !== undefined && !this.closed) this.writePointer(last.seg.id, last.end);
  }

  // ------------------------------------------------------------ durability, lifecycle

  /** Hands buffered appends to the kernel: from now on they survive a crash of the process. */
  flush(): void {
    this.assertOpen();
    this.flushWrites();
  }

  /** flush() + fdatasync of the current segment and the read pointer: survives power loss. */
  sync(): void {
    this.flush();
    if (this.wFd >= 0) fdatasyncSync(this.wFd);
    if (this.ptrFd >= 0) fdatasyncSync(this.ptrFd);
  }

  stats(): DiskSpillStats {
    return {
      segments: this.segments.length,
      diskBytes: this.diskBytes,
      pendingItems: this.pending,
      pendingBytes: this.pendingBytes,
      ...this.counters,
    };
  }

  /** Bytes the segment files hold on disk right now (what spillMaxBytes bounds). */
  diskUsage(): number {
    return this.diskBytes;
  }

  /** Flushes and closes the files; pending records stay on disk for the next open(). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.flushWrites();
    this.closed = true;
    for (const fd of [this.wFd, this.rFd, this.ptrFd]) if (fd >= 0) closeSync(fd);
    this.wFd = this.rFd = this.ptrFd = -1;
  }

  /** close() and remove the directory with everything in it. */
  destroy(): void {
    this.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ internals

  private assertOpen(): void {
    if (this.closed) throw new SluiceError(ErrorCode.Closed, `spill store ${this.dir} is closed`);
  }

  private writeAll(fd: number, buf: Buffer, off: number, len: number): void {
    while (len > 0) {
      const n = this.io(() => writeSync(fd, buf, off, len));
      off += n;
      len -= n;
    }
  }

  private flushWrites(): void {
    if (this.wLen === 0) return;
    this.writeAll(this.wFd, this.wBuf, 0, this.wLen);
    this.wLen = 0;
  }

  private roll(): void {
    this.flushWrites();
    if (this.wFd >= 0) closeSync(this.wFd);
    const id = this.nextId++;
    const seg: Segment = { id, path: join(this.dir, segName(id)), size: 0, startOff: 0, records: 0, readDone: 0, released: 0 };
    this.wFd = this.io(() => openSync(seg.path, 'wx'));
    this.wSeg = seg;
    this.segments.push(seg);
  }

  /** Bytes of the write segment already handed to the kernel. */
  private flushedEnd(seg: Segment): number {
    return seg === this.wSeg ? seg.size - this.wLen : seg.size;
  }

  /** Positions the reader on the next record and verifies it (length + CRC). */
  private loadHead(): boolean {
    if (this.headLen >= 0) return true;
    if (this.pending === 0) return false;
    this.assertOpen();
    while (this.rSeg === null || this.rSeg.readDone === this.rSeg.records) {
      const next = this.rSeg === null ? this.segments.find((s) => s.readDone < s.records) : this.segments[this.segments.indexOf(this.rSeg) + 1];
      if (next === undefined) throw corrupt('spill store lost track of its read position', { pending: this.pending });
      if (this.rFd >= 0) closeSync(this.rFd);
      this.rSeg = next;
      this.rFd = this.io(() => openSync(next.path, 'r'));
      this.rOff = next.startOff;
      this.chunkLen = 0;
    }
    const seg = this.rSeg;
    if (this.rOff + PREFIX > this.flushedEnd(seg)) this.flushWrites();
    this.ensureChunk(this.rOff, PREFIX);
    const p = this.rOff - this.chunkStart;
    const len = this.chunk.readUInt32LE(p);
    if (len < FIXED || len > this.maxRecordBytes)
      throw corrupt(`spill segment ${seg.path}: bad record length ${len} at offset ${this.rOff}`, { path: seg.path, offset: this.rOff, len });
    const total = PREFIX + len;
    if (this.rOff + total > this.flushedEnd(seg)) this.flushWrites();
    this.ensureChunk(this.rOff, total);
    const q = this.rOff - this.chunkStart;
    if (crc32(this.chunk, 0, q + PREFIX, q + total) !== this.chunk.readUInt32LE(q + 4))
      throw corrupt(`spill segment ${seg.path}: checksum mismatch at offset ${this.rOff}`, { path: seg.path, offset: this.rOff });
    this.headLen = total;
    return true;
  }

  private ensureChunk(off: number, n: number): void {
    if (off >= this.chunkStart && off + n <= this.chunkStart + this.chunkLen) return;
    if (n > this.chunk.length) this.chunk = Buffer.allocUnsafe(Math.max(n, this.chunk.length * 2));
    let got = 0;
    while (got < this.chunk.length) {
      const r = this.io(() => readSync(this.rFd, this.chunk, got, this.chunk.length - got, off + got));
      if (r === 0) break;
      got += r;
    }
    this.chunkStart = off;
    this.chunkLen = got;
    if (got < n) throw corrupt(`spill segment ${this.rSeg!.path}: record at offset ${off} is truncated`, { path: this.rSeg!.path, offset: off });
  }

  private maybeDelete(seg: Segment): void {
    if (seg.released < seg.records || seg.readDone < seg.records) return;
    // After close() the files stay as they are: the next open() recovers from the pointer.
    if (this.closed) return;
    if (seg === this.wSeg) {
      this.flushWrites();
      if (this.wFd >= 0) closeSync(this.wFd);
      this.wFd = -1;
      this.wSeg = null;
    }
    if (seg === this.rSeg) {
      if (this.rFd >= 0) closeSync(this.rFd);
      this.rFd = -1;
      this.rSeg = null;
      this.chunkLen = 0;
    }
    this.io(() => unlinkSync(seg.path));
    const i = this.segments.indexOf(seg);
    if (i >= 0) this.segments.splice(i, 1);
    this.diskBytes -= seg.size;
    this.counters.deletedSegments++;
  }

  private writePointer(segId: number, off: number): void {
    const b = this.ptrBuf;
    b.writeDoubleLE(segId, 8);
    b.writeDoubleLE(off, 16);
    b.writeUInt32LE(crc32(b, 0, 8, 24), 0);
    b.writeUInt32LE(0, 4);
    this.io(() => writeSync(this.ptrFd, b, 0, 24, 0));
  }

  /** Reads the pointer, deletes released segments, scans the rest and cuts a torn tail. */
  private recover(): void {
    mkdirSync(this.dir, { recursive: true });
    const ptrPath = join(this.dir, PTR_FILE);
    this.ptrFd = openSync(ptrPath, 'a+');
    closeSync(this.ptrFd);
    this.ptrFd = openSync(ptrPath, 'r+');
    let ptrSeg = 0;
    let ptrOff = 0;
    const pb = Buffer.alloc(24);
    if (readSync(this.ptrFd, pb, 0, 24, 0) === 24 && crc32(pb, 0, 8, 24) === pb.readUInt32LE(0)) {
      ptrSeg = pb.readDoubleLE(8);
      ptrOff = pb.readDoubleLE(16);
    }
    const ids = readdirSync(this.dir)
      .map((n) => SEG_RE.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k];
      const path = join(this.dir, segName(id));
      this.nextId = Math.max(this.nextId, id + 1);
      if (id < ptrSeg) {
        unlinkSync(path); // every record in it was released
        continue;
      }
      const isLast = k === ids.length - 1;
      const seg = this.scanSegment(id, path, id === ptrSeg ? ptrOff : 0, isLast);
      if (seg.records === 0) {
        unlinkSync(path);
        continue;
      }
      this.segments.push(seg);
      this.diskBytes += seg.size;
    }
  }

  private scanSegment(id: number, path: string, startOff: number, isLast: boolean): Segment {
    const fd = openSync(path, 'r+');
    try {
      const size = fstatSync(fd).size;
      const seg: Segment = { id, path, size, startOff: Math.min(startOff, size), records: 0, readDone: 0, released: 0 };
      let buf = Buffer.allocUnsafe(Math.min(Math.max(size, 1), 1 << 20));
      let bufStart = 0;
      let bufLen = 0;
      const need = (off: number, n: number): boolean => {
        if (off + n > size) return false;
        if (off >= bufStart && off + n <= bufStart + bufLen) return true;
        if (n > buf.length) buf = Buffer.allocUnsafe(n);
        bufStart = off;
        bufLen = readSync(fd, buf, 0, Math.min(buf.length, size - off), off);
        return bufLen >= n;
      };
      let off = seg.startOff;
      let bad: string | null = null;
      while (off < size) {
        if (!need(off, PREFIX)) {
          bad = 'truncated length prefix';
          break;
        }
        const len = buf.readUInt32LE(off - bufStart);
        if (len < FIXED || len > this.maxRecordBytes) {
          bad = `bad length ${len}`;
          break;
        }
        if (!need(off, PREFIX + len)) {
          bad = 'truncated record';
          break;
        }
        const p = off - bufStart;
        if (crc32(buf, 0, p + PREFIX, p + PREFIX + len) !== buf.readUInt32LE(p + 4)) {
          bad = 'checksum mismatch';
          break;
        }
        seg.records++;
        const seq = buf.readDoubleLE(p + 8);
        if (seq > this.maxSeq) this.maxSeq = seq;
        this.pendingBytes += buf.readDoubleLE(p + 32);
        off += PREFIX + len;
      }
      if (bad !== null) {
        if (!isLast) throw corrupt(`spill segment ${path}: ${bad} at offset ${off} (not the last segment: corruption, not a torn tail)`, { path, offset: off, reason: bad });
        // A torn tail: the process died in the middle of a write. Cut it, never read it.
        ftruncateSync(fd, off);
        this.counters.tornBytesCut += size - off;
        seg.size = off;
      }
      this.pending += seg.records;
      this.counters.recoveredRecords += seg.records;
      return seg;
    } finally {
      closeSync(fd);
    }
  }
}
