/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, the one zlib, gzip and PNG use).
 * `zlib.crc32` only exists from Node 20.15 (package.json promises `>=20`), so the core
 * carries its own slice-by-8 table version (≈460 MB/s measured here on 22 kB records)
 * and uses the native one when the runtime has it (same results: tested).
 */
import zlib from 'node:zlib';

const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[0][n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[0][n];
    for (let k = 1; k < 8; k++) {
      c = t[0][c & 0xff] ^ (c >>> 8);
      t[k][n] = c >>> 0;
    }
  }
  return t;
})();

/**
 * CRC-32 of `buf[start, end)`, continuing from `crc` (pass the previous result to checksum
 * data in pieces). `crc32(Buffer.from('123456789')) === 0xcbf43926`.
 */
export function crc32(buf: Uint8Array, crc = 0, start = 0, end = buf.length): number {
  if (nativeCrc32 !== undefined) return nativeCrc32(start === 0 && end === buf.length ? buf : buf.subarray(start, end), crc);
  return crc32Table(buf, crc, start, end);
}

type NativeCrc32 = (data: Uint8Array, value?: number) => number;
const nativeCrc32: NativeCrc32 | undefined = (zlib as unknown as { crc32?: NativeCrc32 }).crc32;

/** The portable implementation (exported for the test that compares it with the native one). */
export function crc32Table(buf: Uint8Array, crc = 0, start = 0, end = buf.length): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
  let c = ~crc >>> 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a = (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)) ^ c;
    c =
      t7[a & 0xff] ^
      t6[(a >>> 8) & 0xff] ^
      t5[(a >>> 16) & 0xff] ^
      t4[a >>> 24] ^
      t3[buf[i + 4]] ^
      t2[buf[i + 5]] ^
      t1[buf[i + 6]] ^
      t0[buf[i + 7]];
  }
  for (; i < end; i++) c = t0[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
