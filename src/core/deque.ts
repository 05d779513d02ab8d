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

/**
 * The pipeline's queue: a FIFO kept as a list of chunks, each a plain array of up to
 * `chunkSize` items (the window's maxItems), so that a full window is one chunk:
 *
 * - `push` appends to the tail chunk, a young array like the one a hand-written batcher
 *   fills. (Storing young items into a long-lived ring buffer costs V8's write barrier a
 *   remembered-set entry per item: ≈8 ns per item, measured, on a 512-item window.)
 * - `takeFront` hands a whole chunk over as the batch when the cut takes exactly that chunk
 *   from its start (the usual case: a full window, or everything queued), with no copy;
 *   otherwise it copies the items out.
 */
export class BatchQueue<T> {
  private readonly chunks = new Deque<T[]>(64);
  /** Index of the first live item in the head chunk. */
  private off = 0;
  private len = 0;
  private tail: T[] = [];

  constructor(public chunkSize: number) {
    this.chunks.push(this.tail);
  }

  get length(): number {
    return this.len;
  }

  push(v: T): void {
    let t = this.tail;
    if (t.length >= this.chunkSize) {
      t = this.tail = [];
      this.chunks.push(t);
    }
    t.push(v);
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
    if (++this.off === head.length) this.dropHead();
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
    if (this.off === 0 && head.length <= n) {
      // The whole head chunk: it becomes the batch as it is.
      out = head;
      this.len -= head.length;
      this.dropHead();
    } else out = [];
    while (out.length < n) {
      head = this.chunks.peek()!;
      const end = Math.min(head.length, this.off + n - out.length);
      for (let i = this.off; i < end; i++) {
        out.push(head[i]);
        (head as (T | undefined)[])[i] = undefined;
      }
      this.len -= end - this.off;
      this.off = end;
      if (end === head.length) this.dropHead();
    }
    return out;
  }

  /** Puts `items[from..]` back at the head, in order, and truncates `items` to `from`. */
  putBackFront(items: T[], from: number): void {
    for (let i = items.length - 1; i >= from; i--) this.unshift(items[i]);
    items.length = from;
  }

  /** The head chunk is used up: forget it (a fresh tail if it was the last one). */
  private dropHead(): void {
    this.off = 0;
    this.chunks.shift();
    if (this.chunks.length === 0) {
      this.tail = [];
      this.chunks.push(this.tail);
    }
  }
}
