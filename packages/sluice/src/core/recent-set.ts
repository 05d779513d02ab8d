/**
 * The most recent distinct keys seen, bounded: the de-duplication windows of the file sink's
 * id index (`dedupeWindow`) and of the JetStream source's recent acks (`recentAcks`).
 *
 * It holds exactly the last `capacity` distinct keys added (all of them while fewer went
 * through): a ring of the keys in the order they were added, and Sets that answer `has`. When
 * the ring is full, the key a new one overwrites leaves its Set.
 *
 * Why not one Set that evicts its oldest entry (`set.delete(set.values().next().value)`): V8
 * leaves a deleted entry as a hole until the table is rebuilt, and every new iterator starts at
 * the first slot, so each eviction walked all the holes before it. Past a full window every key
 * cost tens of µs on the event loop (a 262,144-id window: 4.5–13 s per 200,000 ids), which is
 * what broke `sluice serve`'s p99 after a quarter of a million records (docs/bench.md, case 5).
 * The ring names the key to delete instead.
 *
 * Why several Sets (shards, by two characters of the key), not one: a Set full of holes is
 * rebuilt in one step when it runs out of room, and one Set of 262,144 keys took up to 7 ms to
 * rebuild, on the event loop; eight shards rebuild an eighth each, ≈1 ms. Why not the former
 * generations (eight Sets in order of age, the oldest dropped whole): a key that is not held —
 * every new record — was looked up in all eight; in `sluice serve`'s CPU profile that was the
 * largest single cost per record (docs/bench.md, case 5, "What lengthened the tail").
 */
export class RecentSet {
  private readonly shards: Set<string>[];
  private readonly mask: number;
  /** Keys in the order added; once `capacity` long, `head` is the oldest. */
  private readonly ring: string[] = [];
  private head = 0;

  constructor(
    readonly capacity: number,
    shards = 8,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity: an integer ≥ 1, got ${capacity}`);
    if (!Number.isInteger(shards) || shards < 1 || (shards & (shards - 1)) !== 0) throw new RangeError(`shards: a power of two ≥ 1, got ${shards}`);
    this.mask = shards - 1;
    this.shards = Array.from({ length: shards }, () => new Set<string>());
  }

  /** The shard of a key: two of its characters (the ends of hex hashes and counters vary most). */
  private shardOf(key: string): Set<string> {
    const n = key.length;
    return this.shards[n === 0 ? 0 : (key.charCodeAt(n - 1) ^ (key.charCodeAt(n >> 1) << 1)) & this.mask];
  }

  has(key: string): boolean {
    return this.shardOf(key).has(key);
  }

  /** Adds `key` unless held (a key already held keeps its place). */
  add(key: string): void {
    if (!this.has(key)) this.addAbsent(key);
  }

  /**
   * Adds a key the caller has just found not held (no second lookup: on the file sink's write
   * path every id was looked up once already).
   */
  addAbsent(key: string): void {
    if (this.ring.length < this.capacity) this.ring.push(key);
    else {
      const oldest = this.ring[this.head];
      this.shardOf(oldest).delete(oldest);
      this.ring[this.head] = key;
      this.head = this.head + 1 === this.capacity ? 0 : this.head + 1;
    }
    this.shardOf(key).add(key);
  }

  get size(): number {
    return this.ring.length;
  }

  /** The keys held, oldest first. */
  *[Symbol.iterator](): IterableIterator<string> {
    const n = this.ring.length;
    for (let i = 0; i < n; i++) yield this.ring[(this.head + i) % n];
  }
}
