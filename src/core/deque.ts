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
    this.buf = slots<T>(cap);
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

  /**
   * Removes the first `n` items (at most `length`) and returns them, in order, in one new
   * array: one or two slices of the ring instead of a shift + push per item.
   */
  takeFront(n: number): T[] {
    if (n > this.len) n = this.len;
    if (n <= 0) return [];
    const buf = this.buf;
    const h = this.head;
    const end = h + n;
    let out: (T | undefined)[];
    if (end <= buf.length) {
      out = buf.slice(h, end);
      buf.fill(undefined, h, end);
    } else {
      const wrapped = end - buf.length;
      out = buf.slice(h);
      for (let i = 0; i < wrapped; i++) out.push(buf[i]);
      buf.fill(undefined, h);
      buf.fill(undefined, 0, wrapped);
    }
    this.head = end & this.mask;
    this.len -= n;
    return out as T[];
  }

  /** Puts `items[from..]` back at the head, in order, and truncates `items` to `from`. */
  putBackFront(items: T[], from: number): void {
    for (let i = items.length - 1; i >= from; i--) this.unshift(items[i]);
    items.length = from;
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
    const next = slots<T>(old.length * 2);
    for (let i = 0; i < this.len; i++) next[i] = old[(this.head + i) & this.mask];
    this.buf = next;
    this.head = 0;
    this.mask = next.length - 1;
  }
}

/**
 * `cap` empty slots in a packed array (V8's PACKED_ELEMENTS, not a holey `new Array(cap)`),
 * so the batches `takeFront` slices out of it are packed too and iterate without hole checks.
 */
function slots<T>(cap: number): (T | undefined)[] {
  const a: (T | undefined)[] = [];
  for (let i = 0; i < cap; i++) a.push(undefined);
  return a;
}
