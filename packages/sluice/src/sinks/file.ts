/**
 * The embedded default sink: a durable append-only NDJSON log.
 * One synchronous write per batch, through libuv's thread pool (off the event loop): when
 * `write()` resolves, every item of the batch is on disk. By default the data file is opened
 * with O_DSYNC, so the positional write itself returns only once the batch is durable (the
 * guarantee of a write + fdatasync, in one trip through the pool); `sync: 'fdatasync'` makes
 * it a write, then an fdatasync. The fixed cost is the device flush (≈140–150 µs on this
 * project's reference machine; a write without it ≈2 µs).
 * Each record is written exactly as received (`env.raw`; JSON of the value when absent).
 *
 * Failure semantics (issue 19). Batches are written one at a time at an explicit position,
 * the end of what is durable (`durableSize`: the size after the last successful fdatasync).
 * - A write that fails half-way (ENOSPC, EIO) leaves no torn line and no duplicate on retry:
 *   the file is truncated back to `durableSize` before the error is thrown (transient), so
 *   the retry writes the batch again at the same place.
 * - A failed sync (an fdatasync, or any failed write under O_DSYNC, which may carry a
 *   writeback error) is fatal for that file descriptor: Linux reports a writeback error
 *   once and may drop the dirty pages it could not write, so a second fdatasync on the same
 *   fd can succeed with the data gone (the PostgreSQL "fsyncgate" discussion,
 *   https://wiki.postgresql.org/wiki/Fsync_Errors, and https://lwn.net/Articles/752063/).
 *   The sink closes the fd, reopens the file, re-verifies the tail (truncates back to
 *   `durableSize`), and the retry writes and syncs the whole batch again.
 * - `open()` cuts a torn last line (a crash mid-write) back to the last newline.
 */
import { constants as fsc } from 'node:fs';
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RecentSet } from '../core/recent-set.js';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { SinkError, invalidOption } from '../core/errors.js';
import { ndjsonBatch } from './serialize.js';

export interface FileSinkOptions {
  path: string;
  /** Serializes a batch to bytes. @default NDJSON: `raw` or JSON.stringify(value), one line each */
  encode?: (batch: readonly Envelope<unknown>[]) => Buffer;
  /** Record validation before writing; a throw becomes an item-level SinkError. */
  validate?: (env: Envelope<unknown>) => void;
  /**
   * Idempotent by id (issue 6, docs/dlq.md): records whose `env.id` was written recently (or
   * earlier in the same batch) are skipped, so a redelivery or a re-drive leaves one line per
   * id. The ids come from `env.id` (records are any JSON and need no `id` field) and are kept
   * in a sidecar index `<path>.ids` (one JSON line per batch: `{"end": file size after the
   * batch, "ids": [...]}`), appended before the batch's data so that a crash cannot leave
   * data the index does not know. In memory only the last `dedupeWindow` ids are held, and
   * `open()` reads only the index's tail (backwards, until that many ids): memory is
   * O(dedupeWindow × id length) however large the file grows. A duplicate of a record older
   * than the window is written again (`sluice reconcile` reports it). @default false
   */
  dedupeById?: boolean;
  /**
   * Ids remembered for `dedupeById` (the JetStream redelivery window is maxAckPending, 50,000
   * by default): the last this many distinct ids written (core/recent-set.ts). @default 262_144
   */
  dedupeWindow?: number;
  /**
   * How a batch is made durable before `write()` resolves.
   * - `'dsync'`: the data file is opened with O_DSYNC and each batch is one positional write
   *   that returns when it is on disk: one trip through libuv's thread pool per batch.
   * - `'fdatasync'`: a write, then an fdatasync: two trips, and the fdatasync is issued only
   *   when the event loop gets to it, so a busy loop (a producer, the front door's parsing)
   *   delays every batch's flush. Bench case 2 runs both (`sluice` and `sluice-fdatasync`
   *   beside the sink alone, docs/bench.md "Case 2").
   * Both count one fixed-cost operation per sync really made (`fixedCostOps()`).
   * @default 'dsync'
   */
  sync?: 'dsync' | 'fdatasync';
}

/** errno codes that retrying can fix; ENOSPC/EDQUOT also page someone. */
const TRANSIENT_ERRNO = new Set(['EAGAIN', 'EINTR', 'EIO', 'EBUSY', 'ENOSPC', 'EDQUOT', 'EMFILE', 'ENFILE']);
const ALERTING_ERRNO = new Set(['ENOSPC', 'EDQUOT', 'EIO']);

const NL = 0x0a;

export class FileSink<T = unknown> implements Sink<T> {
  readonly name = 'file';
  readonly fixedCostKind: FixedCostKind = 'fsync';
  readonly path: string;
  readonly indexPath: string;
  private fh: FileHandle | null = null;
  private ix: FileHandle | null = null;
  private opening: Promise<FileHandle> | null = null;
  private ops = 0;
  private bytes = 0;
  /** File size after the last successful sync: everything below is durable and acknowledged. */
  private durableSize = 0;
  private ixSize = 0;
  private readonly encode: (batch: readonly Envelope<unknown>[]) => Buffer;
  private readonly validate?: (env: Envelope<unknown>) => void;
  /** Recent ids (dedupeById), at most `window` (core/recent-set.ts). */
  private ids: RecentSet | null = null;
  private readonly dedupe: boolean;
  private readonly window: number;
  private serial: Promise<void> = Promise.resolve();
  /** Writes issued and not yet settled (write()'s fast path starts one only when this is 0). */
  private writing = 0;
  private skipped = 0;
  private readonly st = { failedWrites: 0, failedSyncs: 0, reopens: 0, truncatedBytes: 0 };
  private readonly dsync: boolean;

  constructor(opts: FileSinkOptions) {
    this.path = opts.path;
    this.indexPath = `${opts.path}.ids`;
    this.encode = opts.encode ?? ndjsonBatch;
    this.validate = opts.validate;
    this.dedupe = opts.dedupeById ?? false;
    this.window = opts.dedupeWindow ?? 262_144;
    if (!Number.isInteger(this.window) || this.window < 1) throw invalidOption('dedupeWindow', opts.dedupeWindow, 'an integer ≥ 1');
    const sync = opts.sync ?? 'dsync';
    if (sync !== 'dsync' && sync !== 'fdatasync') throw invalidOption('sync', opts.sync, "'dsync' or 'fdatasync'");
    this.dsync = sync === 'dsync';
  }

  /** Which durability mechanism this sink uses (the `sync` option). */
  get syncMode(): 'dsync' | 'fdatasync' {
    return this.dsync ? 'dsync' : 'fdatasync';
  }

  /** The data file for positional writes ('r+'; with O_DSYNC in the default `sync` mode). */
  private openData(): Promise<FileHandle> {
    return open(this.path, this.dsync ? fsc.O_RDWR | fsc.O_DSYNC : 'r+');
  }

  /** Opens (creating directories) eagerly, so a bad path fails at start-up, not at the first batch. */
  async open(): Promise<this> {
    await this.handle();
    return this;
  }

  private handle(): Promise<FileHandle> {
    if (this.fh) return Promise.resolve(this.fh);
    if (!this.opening) {
      this.opening = (async () => {
        await mkdir(dirname(this.path), { recursive: true });
        // 'a' creates it; then read-write for positional writes (O_APPEND ignores the position on Linux).
        await (await open(this.path, 'a')).close();
        const fh = await this.openData();
        try {
          this.durableSize = await cutTornTail(fh);
          if (this.dedupe) await this.openIndex();
        } catch (e) {
          await fh.close().catch(() => {});
          throw e;
        }
        this.fh = fh;
        return fh;
      })();
      this.opening.catch(() => (this.opening = null));
    }
    return this.opening;
  }

  /** Opens the sidecar index, drops entries past the data (a batch that never landed), loads the last `window` ids. */
  private async openIndex(): Promise<void> {
    if (this.ix) {
      await this.ix.close().catch(() => {});
      this.ix = null;
    }
    await (await open(this.indexPath, 'a')).close();
    const ix = await open(this.indexPath, 'r+');
    try {
      const { ids, validSize } = await readIndexTail(ix, this.durableSize, this.window);
      const size = (await ix.stat()).size;
      if (validSize !== size) await ix.truncate(validSize);
      this.ixSize = validSize;
      if (!this.ids) this.ids = ids;
      else for (const id of ids) this.ids.add(id);
      this.ix = ix;
    } catch (e) {
      await ix.close().catch(() => {});
      throw e;
    }
  }

  /**
   * Batches are written one at a time: each at the durable end of the file. When none is in
   * progress the write is issued in this very call, not a microtask later: a producer whose
   * turn is queued behind it (the pipeline admits blocked producers right after it hands a
   * batch over) would otherwise run its whole turn before the batch reaches the disk
   * (bench case 2, docs/bench.md "Case 2").
   */
  write(batch: readonly Envelope<T>[]): Promise<void> {
    const next = this.writing === 0 ? this.writeOne(batch) : this.serial.then(() => this.writeOne(batch));
    this.writing++;
    this.serial = next.then(
      () => void this.writing--,
      () => void this.writing--,
    );
    return next;
  }

  /**
   * Which of `ids` the file holds, as far as its id index knows (dedupeById; without it none is
   * known; an id older than `dedupeWindow` is not known either): the optional `storedIds`
   * capability the Elasticsearch `_bulk` door uses for `create` (docs/serve.md).
   */
  async storedIds(ids: readonly string[]): Promise<ReadonlySet<string>> {
    if (!this.dedupe) return new Set();
    await this.serial;
    await this.handle();
    return new Set(ids.filter((id) => this.ids!.has(id)));
  }

  private async writeOne(batch: readonly Envelope<T>[]): Promise<void> {
    this.check(batch);
    // Open already (the common case): no await, so the write below is issued synchronously.
    if (this.fh === null) {
      await this.handle().catch((cause) => {
        throw classifyFsError(cause);
      });
    }
    let fresh = batch;
    let seen: Set<string> | null = null;
    if (this.dedupe) {
      seen = new Set<string>();
      const s = seen;
      fresh = batch.filter((e) => e.id === undefined || (!this.ids!.has(e.id) && !s.has(e.id) && (s.add(e.id), true)));
      this.skipped += batch.length - fresh.length;
      // A batch of duplicates only commits nothing new: no write, no fdatasync.
      if (fresh.length === 0) return;
    }
    const buf = this.encode(fresh as readonly Envelope<unknown>[]);
    await this.append(buf, seen);
    // Every id in `seen` was found not held above, and writes are serial (`this.serial`).
    if (seen) for (const id of seen) this.ids!.addAbsent(id);
  }

  private check(batch: readonly Envelope<T>[]): void {
    if (!this.validate) return;
    for (let i = 0; i < batch.length; i++) {
      try {
        this.validate(batch[i] as Envelope<unknown>);
      } catch (cause) {
        throw new SinkError('item', `record ${i} of the batch failed validation: ${(cause as Error).message}`, {
          cause,
          sinkCode: 'VALIDATION',
          details: { index: i },
        });
      }
    }
  }

  private async append(buf: Buffer, ids: Set<string> | null): Promise<void> {
    const fh = this.fh!;
    const at = this.durableSize;
    const end = at + buf.length;
    let stage: 'write' | 'sync' = 'write';
    try {
      let indexLine: Buffer | null = null;
      if (ids && ids.size > 0) {
        // The index entry first (no fdatasync of its own): a crash can leave an entry whose
        // batch did not land (dropped at open: its end is past the data), never the reverse.
        indexLine = Buffer.from(JSON.stringify({ end, ids: [...ids] }) + '\n');
        await writeAll(this.ix!, indexLine, this.ixSize);
      }
      if (this.dsync) {
        // Every write call on an O_DSYNC fd is a sync of its own: counted per call made.
        await writeAll(fh, buf, at, () => this.ops++);
      } else {
        await writeAll(fh, buf, at);
        stage = 'sync';
        this.ops++;
        await fh.datasync();
      }
      if (indexLine) this.ixSize += indexLine.length;
      this.durableSize = end;
      this.bytes += buf.length;
    } catch (cause) {
      if (stage === 'sync') this.st.failedSyncs++;
      else this.st.failedWrites++;
      await this.recover(stage === 'sync' || this.dsync);
      throw classifyFsError(cause);
    }
  }

  /**
   * Back to the last durable state after a failed write or sync: the data file and the index
   * truncated to their sizes before the batch. After a failed sync (an fdatasync, or any write
   * under O_DSYNC: it cannot tell a full disk from a writeback error) the fd is not trusted
   * again (see the file comment): closed, reopened, the tail re-verified. If even that fails,
   * the next write reopens (handle()) and cuts the tail there.
   */
  private async recover(reopen: boolean): Promise<void> {
    try {
      if (reopen) {
        const old = this.fh;
        this.fh = null;
        this.opening = null;
        await old?.close().catch(() => {});
        this.st.reopens++;
        const fh = await this.openData();
        this.fh = fh;
        this.opening = Promise.resolve(fh);
      }
      const size = (await this.fh!.stat()).size;
      if (size > this.durableSize) {
        await this.fh!.truncate(this.durableSize);
        this.st.truncatedBytes += size - this.durableSize;
      }
      if (this.ix) {
        const ixs = (await this.ix.stat()).size;
        if (ixs > this.ixSize) await this.ix.truncate(this.ixSize);
      }
      if (reopen) await this.fh!.datasync(); // the truncation itself made durable on the new fd
    } catch {
      // Could not even truncate: forget the fd; the next write reopens and cuts the tail.
      const old = this.fh;
      this.fh = null;
      this.opening = null;
      await old?.close().catch(() => {});
    }
  }

  /** Records skipped because their id was already in the file (dedupeById). */
  duplicatesSkipped(): number {
    return this.skipped;
  }

  /**
   * Failure counters (issue 19): writes and fdatasyncs that failed (under O_DSYNC a failed sync
   * is a failed write), fd reopens, bytes cut back.
   */
  faults(): { failedWrites: number; failedSyncs: number; reopens: number; truncatedBytes: number } {
    return { ...this.st };
  }

  /** Ids currently held for de-duplication (the last `dedupeWindow` distinct ids written, or all of them while fewer). */
  idsHeld(): number {
    return this.ids?.size ?? 0;
  }

  fixedCostOps(): number {
    return this.ops;
  }

  bytesWritten(): number {
    return this.bytes;
  }

  async close(): Promise<void> {
    await this.serial;
    const fh = this.fh;
    const ix = this.ix;
    this.fh = this.ix = null;
    this.opening = null;
    if (ix) await ix.close();
    if (fh) await fh.close();
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, at: number, onCall?: () => void): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    onCall?.();
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, at + off);
    off += bytesWritten;
  }
}

/** Cuts a torn last line (no trailing newline: a crash or a failed write mid-line); returns the size kept. */
async function cutTornTail(fh: FileHandle): Promise<number> {
  const size = (await fh.stat()).size;
  if (size === 0) return 0;
  const chunk = Buffer.allocUnsafe(64 * 1024);
  let end = size;
  while (end > 0) {
    const from = Math.max(0, end - chunk.length);
    const { bytesRead } = await fh.read(chunk, 0, end - from, from);
    const i = chunk.subarray(0, bytesRead).lastIndexOf(NL);
    if (i >= 0) {
      const keep = from + i + 1;
      if (keep !== size) {
        await fh.truncate(keep);
        await fh.datasync();
      }
      return keep;
    }
    end = from;
  }
  await fh.truncate(0);
  return 0;
}

/**
 * Reads the sidecar index backwards: a torn last line and entries whose `end` is past the data
 * size (a batch that never landed) are cut (`validSize` = the size to keep); ids are collected
 * newest first until `window` of them. Memory: one read chunk plus the ids kept.
 */
async function readIndexTail(ix: FileHandle, dataSize: number, window: number): Promise<{ ids: RecentSet; validSize: number }> {
  const size = (await ix.stat()).size;
  const newestFirst: string[][] = [];
  let count = 0;
  let validSize = -1;
  let pos = size;
  let rest = Buffer.alloc(0); // bytes [pos, pos + rest.length) not yet parsed
  const chunk = Buffer.allocUnsafe(256 * 1024);
  /** One complete line (with its newline) at `at`; false once enough ids are held. */
  const line = (at: number, raw: Buffer): boolean => {
    if (raw.length === 0 || raw[raw.length - 1] !== NL) return true; // torn: cut
    let e: { end?: unknown; ids?: unknown };
    try {
      e = JSON.parse(raw.toString('utf8'));
    } catch {
      return true;
    }
    if (typeof e.end !== 'number' || !Array.isArray(e.ids)) return true;
    if (validSize < 0) {
      if (e.end > dataSize) return true; // its batch did not land: cut
      validSize = at + raw.length;
    }
    newestFirst.push(e.ids.filter((x): x is string => typeof x === 'string'));
    count += e.ids.length;
    return count < window;
  };
  for (;;) {
    if (pos > 0) {
      const from = Math.max(0, pos - chunk.length);
      const { bytesRead } = await ix.read(chunk, 0, pos - from, from);
      rest = Buffer.concat([chunk.subarray(0, bytesRead), rest]);
      pos = from;
    }
    let done = false;
    while (rest.length > 0) {
      const i = rest.lastIndexOf(NL, rest.length - 2);
      if (i < 0 && pos > 0) break; // the line may start in the previous chunk
      const lineStart = i + 1;
      if (!line(pos + lineStart, rest.subarray(lineStart))) {
        done = true;
        break;
      }
      rest = rest.subarray(0, lineStart);
    }
    if (done || (pos === 0 && rest.length === 0)) break;
    if (pos === 0) break;
  }
  const ids = new RecentSet(window);
  for (let k = newestFirst.length - 1; k >= 0; k--) for (const id of newestFirst[k]) ids.add(id);
  return { ids, validSize: validSize < 0 ? 0 : validSize };
}

export function classifyFsError(cause: unknown): SinkError {
  const code = (cause as NodeJS.ErrnoException)?.code ?? 'UNKNOWN';
  const msg = `file sink: ${(cause as Error)?.message ?? String(cause)}`;
  if (TRANSIENT_ERRNO.has(code)) return new SinkError('transient', msg, { cause, sinkCode: code, alerting: ALERTING_ERRNO.has(code) });
  // Anything else (EACCES, EISDIR, ENOENT on a removed dir): retrying the same batch will
  // not help either, but no record caused it; treat as transient-and-alerting so a
  // retry budget ends it instead of splitting good records into the DLQ.
  return new SinkError('transient', msg, { cause, sinkCode: code, alerting: true });
}

