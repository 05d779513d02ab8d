/**
 * The most recent distinct keys seen, bounded: the de-duplication windows of the file sink's
 * id index (`dedupeWindow`) and of the JetStream source's recent acks (`recentAcks`).
 *
 * Kept as Sets of ⌈capacity / generations⌉ keys each: when the newest is full a new one starts,
 * and when the window is full the oldest is dropped whole. It holds at most `capacity` keys
 * and, once that many went through, at least `capacity − ⌈capacity / generations⌉ + 1`.
 *
 * Why not one Set that evicts its oldest entry (`set.delete(set.values().next().value)`): V8
 * leaves a deleted entry as a hole until the table is rebuilt, and every new iterator starts at
 * the first slot, so each eviction walked all the holes before it. Past a full window every key
 * cost tens of µs on the event loop (a 262,144-id window: 4.5–13 s per 200,000 ids), which is
 * what broke `sluice serve`'s p99 after a quarter of a million records (docs/bench.md, case 5).
 * Generations also bound the pause of a Set's rehash to that of one generation.
 */
export class RecentSet {
  private readonly gens: Set<string>[] = [new Set()];
  private readonly perGen: number;
  private held = 0;

  constructor(
    readonly capacity: number,
    generations = 8,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity: an integer ≥ 1, got ${capacity}`);
    this.perGen = Math.ceil(capacity / generations);
  }

  has(key: string): boolean {
    // Newest first: a redelivery is most often of something recent.
    for (let i = this.gens.length - 1; i >= 0; i--) if (this.gens[i].has(key)) return true;
    return false;
  }

  /** Adds `key` unless held (a key already held keeps its place). */
  add(key: string): void {
    if (!this.has(key)) this.addAbsent(key);
  }

  /**
   * Adds a key the caller has just found not held (no lookup: on the file sink's write path
   * every id was already looked up once, and a lookup asks every generation).
   */
  addAbsent(key: string): void {
    // Full: the oldest generation goes whole (at most ⌈capacity / generations⌉ keys).
    if (this.held >= this.capacity) {
      this.held -= this.gens.shift()!.size;
      if (this.gens.length === 0) this.gens.push(new Set());
    }
    let cur = this.gens[this.gens.length - 1];
    if (cur.size >= this.perGen) {
      cur = new Set();
      this.gens.push(cur);
    }
    cur.add(key);
    this.held++;
  }

  get size(): number {
    return this.held;
  }

  /** The keys held, oldest generation first. */
  *[Symbol.iterator](): IterableIterator<string> {
    for (const g of this.gens) yield* g;
  }
}
