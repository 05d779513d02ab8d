/**
 * Where the `spill` overflow policy puts items when the memory queue is full.
 * The core only sees this interface; the disk implementation (segment files with
 * length prefixes and checksums) lives beside it and is wired in by the caller.
 *
 * Contract: items come back from `shift()` in the order they were appended, each
 * with the `seq` it was appended with. `tryAppend` returns false when the store's
 * byte bound is reached; the pipeline then applies `fallback`.
 */
import type { Envelope } from './types.js';

export interface SpillStore<T> {
  /** What to do when the store itself is full. */
  readonly fallback: 'block' | 'drop-newest';
  tryAppend(env: Envelope<T>, seq: number): boolean;
  /** Bytes of the next item `shift()` would return (0 when empty). */
  peekBytes(): number;
  shift(): Envelope<T> | undefined;
  /** Seq of the oldest item held (Infinity when empty). */
  firstSeq(): number;
  size(): number;
  bytes(): number;
  /**
   * Optional: the pipeline calls it with every batch it completes (committed, dead-lettered
   * or dropped), so a durable store learns which read-back items it may forget (delete
   * segments, advance its read pointer). Items the store never held must be ignored.
   */
  release?(items: readonly Envelope<T>[]): void;
  /**
   * Optional: the highest seq the store holds (a store reopened after a restart holds
   * items accepted by an earlier pipeline: the new one numbers after them).
   */
  lastSeq?(): number;
}
