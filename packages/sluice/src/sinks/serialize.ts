import type { Envelope } from '../core/types.js';

const NL = 0x0a;

/** One NDJSON line (with trailing newline) per item: the producer's `raw` bytes when given, else JSON. */
export function ndjsonBatch(batch: readonly Envelope<unknown>[]): Buffer {
  const parts: Buffer[] = new Array(batch.length);
  let total = 0;
  for (let i = 0; i < batch.length; i++) {
    const e = batch[i];
    const b = e.raw ?? Buffer.from(typeof e.value === 'string' ? e.value : JSON.stringify(e.value));
    parts[i] = b;
    total += b.length + 1;
  }
  const out = Buffer.allocUnsafe(total);
  let off = 0;
  for (const b of parts) {
    b.copy(out, off);
    off += b.length;
    out[off++] = NL;
  }
  return out;
}
