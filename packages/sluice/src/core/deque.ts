/**
 * A growable ring buffer: O(1) push at the tail, shift at the head, and peek at both.
 * Arrays with `shift()` are O(n) once V8 leaves its fast path; this stays O(1).
 */
export class Deque<T> {
  private buf: (T | undefined)[];
  private head = 0;
  private len = 0;
  private mask: number;

  constructor(initialCapacity = 1024) {
    let cap = 16;
    while (cap < initialCapacity) cap <<= 1;
    this.buf = new Array<T | undefined>(cap);
    this.mask = cap - 1;
  }

  get length(): number {
    return this.len;
  }

  push(v: T): void {
    if (this.len === this.buf.length) this.grow();
    this.buf[(this.head + this.len) & this.mask] = v;
    this.len++;
  }

  shift(): T | undefined {
    if (this.len === 0) return undefined;
    const v = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.len--;
    return v;
  }

  /** Puts an item back at the head (used to return items in order). */
  unshift(v: T): void {
    if (this.len === this.buf.length) this.grow();
    this.head = (this.head - 1) & this.mask;
    this.buf[this.head] = v;
    this.len++;
  }

  peek(): T | undefined {
    return this.len === 0 ? undefined : this.buf[this.head];
  }

  peekLast(): T | undefined {
    return this.len === 0 ? undefined : this.buf[(this.head + this.len - 1) & this.mask];
  }

  /** i-th item from the head (0-based), without removing it. */
  at(i: number): T | undefined {
    return i < 0 || i >= this.len ? undefined : this.buf[(this.head + i) & this.mask];
  }

  clear(): void {
    this.buf.fill(undefined);
    this.head = 0;
    this.len = 0;
  }

  private grow(): void {
    const old = this.buf;
    const next = new Array<T | undefined>(old.length * 2);
    for (let i = 0; i < this.len; i++) next[i] = old[(this.head + i) & this.mask];
    this.buf = next;
    this.head = 0;
    this.mask = next.length - 1;
  }
}

/** Chunks are allocated at most this many slots at once (a window of 1M items must not preallocate 4 MB per batch). */
const MAX_CHUNK = 4096;

/**
 * The pipeline's queue: a FIFO kept as a list of chunks, each a plain array allocated for
 * up to `chunkSize` items (the window's maxItems, at most 4,096), so that a full window is
 * one chunk:
 *
 * - `push` stores into the tail chunk, a young array allocated at its full size (no growth
 *   copies). Storing young items into a long-lived ring buffer instead costs V8's write
 *   barrier a remembered-set entry per item (≈8 ns per item, measured, 512-item window).
 * - `takeFront` hands a whole chunk over as the batch when the cut takes exactly that chunk
 *   from its start (the usual case: a full window, or everything queued), with no copy; the
 *   tail chunk is trimmed to its items first. Otherwise it copies the items out.
 */
export class BatchQueue<T> {
  private readonly chunks = new Deque<T[]>(64);
  /** Index of the first live item in the head chunk. */
  private off = 0;
  private len = 0;
  /** The last chunk, being filled: `tailLen` items, its array's length is its capacity. */
  private tail: T[];
  private tailLen = 0;

  constructor(public chunkSize: number) {
    this.tail = this.newChunk();
    this.chunks.push(this.tail);
  }

  get length(): number {
    return this.len;
  }

  push(v: T): void {
    let t = this.tail;
    if (this.tailLen === t.length) {
      t = this.tail = this.newChunk();
      this.tailLen = 0;
      this.chunks.push(t);
    }
    t[this.tailLen++] = v;
    this.len++;
  }

  peek(): T | undefined {
    return this.len === 0 ? undefined : this.chunks.peek()![this.off];
  }

  shift(): T | undefined {
    if (this.len === 0) return undefined;
    const head = this.chunks.peek()!;
    const v = head[this.off];
    (head as (T | undefined)[])[this.off] = undefined;
    this.len--;
    if (++this.off === this.itemsIn(head)) this.dropHead();
    return v;
  }

  /** Puts an item back at the head. */
  unshift(v: T): void {
    if (this.off > 0) this.chunks.peek()![--this.off] = v;
    else this.chunks.unshift([v]);
    this.len++;
  }

  /** Removes the first `n` items (at most `length`) and returns them, in order, in one array. */
  takeFront(n: number): T[] {
    if (n > this.len) n = this.len;
    if (n <= 0) return [];
    let head = this.chunks.peek()!;
    let out: T[];
    const k = this.itemsIn(head);
    if (this.off === 0 && k <= n) {
      // The whole head chunk: it becomes the batch as it is.
      out = head;
      if (out.length !== k) out.length = k;
      this.len -= k;
      this.dropHead();
    } else out = [];
    while (out.length < n) {
      head = this.chunks.peek()!;
      const end = Math.min(this.itemsIn(head), this.off + n - out.length);
      for (let i = this.off; i < end; i++) {
        out.push(head[i]);
        (head as (T | undefined)[])[i] = undefined;
      }
      this.len -= end - this.off;
      this.off = end;
      if (end === this.itemsIn(head)) this.dropHead();
    }
    return out;
  }

  /** Puts `items[from..]` back at the head, in order, and truncates `items` to `from`. */
  putBackFront(items: T[], from: number): void {
    for (let i = items.length - 1; i >= from; i--) this.unshift(items[i]);
    items.length = from;
  }

  private itemsIn(chunk: T[]): number {
    return chunk === this.tail ? this.tailLen : chunk.length;
  }

  private newChunk(): T[] {
    return new Array<T>(Math.min(this.chunkSize, MAX_CHUNK));
  }

  /** The head chunk is used up: forget it (a fresh tail if it was the last one). */
  private dropHead(): void {
    this.off = 0;
    const head = this.chunks.shift()!;
    if (head === this.tail) {
      this.tail = this.newChunk();
      this.tailLen = 0;
      this.chunks.push(this.tail);
    }
  }
}
