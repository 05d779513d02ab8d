/**
 * The embedded append-only log: the default source with offsets and lag (no set-up).
 *
 * Log file: one JSON line per record, `{"o":offset,"id":…,"t":intended epoch ms,"d":base64 bytes}`,
 * offsets 0, 1, 2 … in file order (an offset is the line's index). Base64 because a record's
 * bytes need not be valid UTF-8 (the jsontestsuite reject cases are not).
 *
 * Committed-offset file (`<log>.committed`): `{"offset":N,"position":P}` — every record
 * below N is acknowledged (committed by the sink or durably dead-lettered), and P is the byte
 * position of record N, so a restart resumes there without rescanning. It advances
 * *contiguously*: with `maxInFlight > 1` batches complete out of order, and an ack above a
 * hole is remembered until the hole is filled. It is written atomically (temp file,
 * fdatasync, rename), coalesced to one write in flight. A crash between the sink's commit and
 * this write redelivers those records on restart; the sink's idempotent key absorbs them.
 *
 * Lag = records in the log − committed offset, read from the file itself (a tail count),
 * so it stays true while the consumer is stalled.
 */
import { open, readFile, rename, mkdir, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ErrorCode, SluiceError, isSluiceError } from '../core/errors.js';
import type { OfferResult } from '../core/pipeline.js';
import { envelope, type Envelope, type PipelineObserver } from '../core/types.js';

const NL = 0x0a;

export interface LogRecord {
  id: string;
  /** The record's bytes, as the sink will receive them. */
  data: Buffer;
  /** Intended arrival, epoch ms. @default Date.now() */
  ts?: number;
}

/** Counts complete lines in a file from `fromPos`; returns the count and the position after the last newline. */
async function countLines(fh: FileHandle, fromPos: number): Promise<{ lines: number; endPos: number }> {
  const buf = Buffer.allocUnsafe(1 << 20);
  let pos = fromPos;
  let lines = 0;
  let endPos = fromPos;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    for (let i = buf.indexOf(NL, 0); i !== -1 && i < bytesRead; i = buf.indexOf(NL, i + 1)) {
      lines++;
      endPos = pos + i + 1;
    }
    pos += bytesRead;
  }
  return { lines, endPos };
}

// ------------------------------------------------------------------ producer

/** Appends records to the log. One writer per log at a time (the lab's producer, a re-drive). */
export class EmbeddedLogWriter {
  private fh: FileHandle | null = null;
  private next = 0;
  private pos = 0;
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(readonly path: string) {}

  /** Opens (creating) the log; a torn last line from a crashed writer is cut off. */
  static async open(path: string): Promise<EmbeddedLogWriter> {
    const w = new EmbeddedLogWriter(path);
    await mkdir(dirname(path), { recursive: true });
    w.fh = await open(path, 'a+');
    const { lines, endPos } = await countLines(w.fh, 0);
    const size = (await w.fh.stat()).size;
    if (size !== endPos) await w.fh.truncate(endPos);
    w.next = lines;
    w.pos = endPos;
    return w;
  }

  /** Next offset to be assigned = records in the log. */
  size(): number {
    return this.next;
  }

  /** Appends in order; resolves with the first offset assigned. `sync` fdatasyncs before resolving. */
  append(records: readonly LogRecord[], opts: { sync?: boolean } = {}): Promise<number> {
    const p = this.tail.then(async () => {
      const first = this.next;
      let text = '';
      for (const r of records) text += `{"o":${this.next++},"id":${JSON.stringify(r.id)},"t":${r.ts ?? Date.now()},"d":"${r.data.toString('base64')}"}\n`;
      const buf = Buffer.from(text);
      let off = 0;
      while (off < buf.length) off += (await this.fh!.write(buf, off, buf.length - off, this.pos + off)).bytesWritten;
      this.pos += buf.length;
      if (opts.sync) await this.fh!.datasync();
      return first;
    });
    this.tail = p.catch(() => {});
    return p;
  }

  async close(): Promise<void> {
    await this.tail;
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close();
  }
}

/** Reads every record of a log (tests, re-drive, reconciliation). */
export async function readLog(path: string): Promise<{ offset: number; id: string; ts: number; data: Buffer }[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line) as { o: number; id: string; t: number; d: string };
    out.push({ offset: r.o, id: r.id, ts: r.t, data: Buffer.from(r.d, 'base64') });
  }
  return out;
}

export async function readCommitted(path: string): Promise<{ offset: number; position: number }> {
  try {
    const c = JSON.parse(await readFile(path, 'utf8')) as { offset: unknown; position: unknown };
    if (!Number.isInteger(c.offset) || !Number.isInteger(c.position)) throw new Error('bad fields');
    return { offset: c.offset as number, position: c.position as number };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { offset: 0, position: 0 };
    throw new SluiceError(ErrorCode.Corrupt, `committed-offset file ${path} is corrupt: ${(e as Error).message}`, { cause: e });
  }
}

// ------------------------------------------------------------------ consumer

export interface PutTarget<T> {
  offer(env: Envelope<T>): OfferResult;
  put(env: Envelope<T>): Promise<OfferResult>;
  /** A redelivery absorbed by the source (not offered again): counted apart in the ledger. */
  noteRedelivered?(n: number): void;
}

/**
 * Offers one record, waiting as long as it takes: a source must not skip a record because
 * the pipeline is slow (SLUICE_QUEUE_FULL after `blockTimeoutMs` → wait again). Any other
 * error (SLUICE_CLOSED) propagates: the source stops, the record stays unacknowledged.
 */
export async function offerPatiently<T>(target: PutTarget<T>, env: Envelope<T>): Promise<OfferResult> {
  const r = target.offer(env);
  if (r !== 'full') return r;
  for (;;) {
    try {
      return await target.put(env);
    } catch (e) {
      if (!isSluiceError(e, ErrorCode.QueueFull)) throw e;
    }
  }
}

function reportToStderr(error: unknown): void {
  const e = error as { code?: unknown; message?: string };
  process.stderr.write(JSON.stringify({ level: 'error', msg: 'sluice source error', code: e?.code, error: String(e?.message ?? error) }) + '\n');
}

export interface EmbeddedLogSourceOptions<T> {
  path: string;
  /** @default `${path}.committed` */
  committedPath?: string;
  /** Bytes → value. A throw makes the value `null` (the sink's validation then rejects it as poison). @default JSON.parse of UTF-8 */
  decode?: (data: Buffer) => T;
  /** How long to wait before looking again at the end of the log (ms). @default 5 */
  pollMs?: number;
  /** Stop by itself at the end of the log (tests, one-shot runs). @default false */
  stopAtEnd?: boolean;
  /**
   * A failed persist of the committed offset (disk full, a removed directory). The source keeps
   * going (the offset is persisted again at the next ack; a restart redelivers from the last
   * persisted one, which the idempotent sink absorbs) and `flushAcks()`/`close()` reject with
   * SLUICE_SOURCE_UNAVAILABLE while the last persist failed.
   * @default one JSON line on stderr
   */
  onError?: (error: unknown) => void;
}

interface LogMeta {
  source: string;
  /** Byte position just after this record's line. */
  endPos: number;
}

export interface SourceStats {
  /** Records read and handed to the pipeline. */
  delivered: number;
  /** Records acknowledged (committed or dead-lettered). */
  acked: number;
  /** Offers the pipeline refused (closed, block timeout): not acked, redelivered next start. */
  refused: number;
  /** Deliveries the server marked as redeliveries (JetStream; absent where a run never redelivers). */
  redelivered?: number;
  /** Committed-offset persists that failed (embedded log). */
  persistFailures?: number;
}

/** The common face of the two sources with offsets (the lab and `sluice run` use it). */
export interface OffsetSource<T> {
  readonly name: string;
  /** Reads and offers until stopped (or the end of the log with `stopAtEnd`). */
  run(target: PutTarget<T>): Promise<void>;
  /** Stops fetching; `run()` resolves soon after. */
  stop(): void;
  /** Acks on commit and on dead-lettering; nothing else. */
  observer(): PipelineObserver<T>;
  /** Records not yet acknowledged. */
  lag(): Promise<number>;
  /** Makes every ack so far durable (committed-offset file written / acks flushed). */
  flushAcks(): Promise<void>;
  stats(): SourceStats;
  close(): Promise<void>;
}

/** The ack contract of every offset source: ack on commit and on durable dead-lettering, nothing else. */
export function ackingObserver<T>(source: { ack(items: readonly Envelope<T>[]): void }): PipelineObserver<T> {
  return {
    onCommitted: (batch) => source.ack(batch),
    onDeadLettered: (items) => source.ack(items),
  };
}

export class EmbeddedLogSource<T = unknown> implements OffsetSource<T> {
  readonly name: string;
  readonly committedPath: string;
  private readonly decode: (data: Buffer) => T;
  private readonly pollMs: number;
  private fh: FileHandle | null = null;
  private lagFh: FileHandle | null = null;
  /** Next offset not acknowledged, and the byte position of its line. */
  private committedOffset = 0;
  private committedPos = 0;
  /** Acks above the contiguous prefix: offset → end position of its line. */
  private readonly ahead = new Map<number, number>();
  private readPos = 0;
  private readOffset = 0;
  private stopping = false;
  private wake: (() => void) | null = null;
  private persisted = { offset: 0, position: 0 };
  private writing: Promise<void> | null = null;
  private dirty = false;
  private linesCounted = 0;
  private countedPos = 0;
  private readonly st: SourceStats = { delivered: 0, acked: 0, refused: 0, persistFailures: 0 };
  /** The error of the last persist, while it has not been followed by a successful one. */
  private persistError: unknown = null;

  private constructor(private readonly opts: EmbeddedLogSourceOptions<T>) {
    this.name = `embedded:${opts.path}`;
    this.committedPath = opts.committedPath ?? `${opts.path}.committed`;
    this.decode = opts.decode ?? ((d) => JSON.parse(d.toString('utf8')) as T);
    this.pollMs = opts.pollMs ?? 5;
  }

  static async open<T>(opts: EmbeddedLogSourceOptions<T>): Promise<EmbeddedLogSource<T>> {
    const s = new EmbeddedLogSource<T>(opts);
    try {
      await mkdir(dirname(opts.path), { recursive: true });
      s.fh = await open(opts.path, 'a+');
      s.lagFh = await open(opts.path, 'r');
    } catch (cause) {
      throw new SluiceError(ErrorCode.SourceUnavailable, `cannot open log ${opts.path}: ${(cause as Error).message}`, { cause });
    }
    const c = await readCommitted(s.committedPath);
    s.committedOffset = s.readOffset = c.offset;
    s.committedPos = s.readPos = c.position;
    s.persisted = c;
    return s;
  }

  /** The committed offset (every record below it is acknowledged), as known in memory. */
  committed(): number {
    return this.committedOffset;
  }

  stats(): SourceStats {
    return { ...this.st };
  }

  async run(target: PutTarget<T>): Promise<void> {
    const buf = Buffer.allocUnsafe(1 << 18);
    let carry: Buffer | null = null;
    let carryPos = this.readPos; // byte position of carry[0]
    let pos = this.readPos; // next byte to read
    while (!this.stopping) {
      const { bytesRead } = await this.fh!.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) {
        if (this.opts.stopAtEnd) break;
        await new Promise<void>((r) => {
          const t = setTimeout(r, this.pollMs);
          this.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.wake = null;
        continue;
      }
      pos += bytesRead;
      const chunk: Buffer = carry ? Buffer.concat([carry, buf.subarray(0, bytesRead)]) : Buffer.from(buf.subarray(0, bytesRead));
      let start = 0;
      for (let nl = chunk.indexOf(NL); nl !== -1 && !this.stopping; nl = chunk.indexOf(NL, start)) {
        const line = chunk.subarray(start, nl);
        const endPos = carryPos + nl + 1;
        start = nl + 1;
        const env = this.toEnvelope(line, endPos);
        this.readOffset++;
        this.readPos = endPos;
        let r: OfferResult;
        try {
          r = await offerPatiently(target, env);
        } catch {
          this.st.refused++;
          this.stopping = true;
          break;
        }
        if (r === 'accepted' || r === 'dropped') this.st.delivered++;
      }
      if (this.stopping) break;
      carry = start < chunk.length ? chunk.subarray(start) : null;
      carryPos += start;
    }
  }

  private toEnvelope(line: Buffer, endPos: number): Envelope<T> {
    const r = JSON.parse(line.toString('utf8')) as { o: number; id: string; t: number; d: string };
    if (r.o !== this.readOffset)
      throw new SluiceError(ErrorCode.Corrupt, `${this.opts.path}: expected offset ${this.readOffset} at byte ${endPos - line.length - 1}, found ${r.o}`);
    const data = Buffer.from(r.d, 'base64');
    let value: T;
    try {
      value = this.decode(data);
    } catch {
      value = null as T;
    }
    const meta: LogMeta = { source: this.name, endPos };
    return envelope(value, { bytes: data.length, intendedAtMs: r.t - performance.timeOrigin, id: r.id, raw: data, offset: r.o, meta });
  }

  stop(): void {
    this.stopping = true;
    this.wake?.();
  }

  observer(): PipelineObserver<T> {
    return ackingObserver(this);
  }

  /** Acknowledges records (after commit or durable dead-lettering); advances the committed offset contiguously. */
  ack(items: readonly Envelope<T>[]): void {
    for (const e of items) {
      const off = e.offset;
      if (off === undefined || off < this.committedOffset) continue;
      this.ahead.set(off, (e.meta as LogMeta).endPos);
      this.st.acked++;
    }
    let moved = false;
    for (let p = this.ahead.get(this.committedOffset); p !== undefined; p = this.ahead.get(this.committedOffset)) {
      this.ahead.delete(this.committedOffset);
      this.committedOffset++;
      this.committedPos = p;
      moved = true;
    }
    if (moved) this.schedulePersist();
  }

  /**
   * Writes the committed offset (tmp file, fdatasync, rename), coalesced to one write in
   * flight. Every error is caught here (never an unhandled rejection): counted, reported
   * through `onError`, kept for `flushAcks()`, and the offset stays dirty so the next ack or
   * flush tries again.
   */
  private schedulePersist(): void {
    this.dirty = true;
    if (this.writing) return;
    this.writing = (async () => {
      while (this.dirty) {
        this.dirty = false;
        const c = { offset: this.committedOffset, position: this.committedPos };
        try {
          await this.persist(c);
          this.persisted = c;
          this.persistError = null;
        } catch (cause) {
          this.dirty = true;
          this.st.persistFailures = (this.st.persistFailures ?? 0) + 1;
          this.persistError = new SluiceError(ErrorCode.SourceUnavailable, `cannot persist the committed offset ${c.offset} to ${this.committedPath}: ${(cause as Error)?.message ?? cause}`, {
            cause,
            retryable: true,
            details: { offset: c.offset, path: this.committedPath },
          });
          try {
            (this.opts.onError ?? reportToStderr)(this.persistError);
          } catch {
            /* a reporter must not break the source */
          }
          return;
        }
      }
    })().finally(() => (this.writing = null));
  }

  private async persist(c: { offset: number; position: number }): Promise<void> {
    const tmp = `${this.committedPath}.tmp`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(c) + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.committedPath);
  }

  /** Makes every ack so far durable; rejects (SLUICE_SOURCE_UNAVAILABLE) if the committed offset cannot be written. */
  async flushAcks(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.dirty) {
      this.schedulePersist(); // one more try, now
      while (this.writing) await this.writing;
    }
    if (this.persistError) throw this.persistError;
  }

  /** Committed offset as it is on disk. */
  persistedOffset(): number {
    return this.persisted.offset;
  }

  async lag(): Promise<number> {
    const { lines, endPos } = await countLines(this.lagFh!, this.countedPos);
    this.linesCounted += lines;
    this.countedPos = endPos;
    return Math.max(0, this.linesCounted - this.committedOffset);
  }

  async close(): Promise<void> {
    this.stop();
    try {
      await this.flushAcks();
    } finally {
      await this.fh?.close();
      await this.lagFh?.close();
      this.fh = this.lagFh = null;
    }
  }
}
