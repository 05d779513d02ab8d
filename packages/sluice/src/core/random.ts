/** Seeded randomness, injected like the clock so that runs and tests are repeatable. */
export type Rng = () => number;

/** mulberry32: a small, fast 32-bit PRNG; uniform in [0, 1). */
export function seededRng(seed = 0x5eed): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
