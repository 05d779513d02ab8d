import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import fc from 'fast-check';
import { boundedDecode, decodeSmallSync, openDecoderCount, parseContentEncoding, type Coding } from '../../packages/sluice/src/codec/bounded-decode.js';
import { ErrorCode, SluiceError } from '../../packages/sluice/src/core/errors.js';

const ENCODERS: Record<Coding, (b: Buffer) => Buffer> = {
  identity: (b) => b,
  gzip: (b) => zlib.gzipSync(b),
  deflate: (b) => zlib.deflateSync(b),
  br: (b) => zlib.brotliCompressSync(b),
};
const CODINGS = Object.keys(ENCODERS) as Coding[];

/** Splits `buf` into slices of 1–7 bytes chosen by `sizes` (cycled). */
function slice(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < buf.length; i++) {
    const n = sizes[i % sizes.length];
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  return out;
}

async function decodeAll(parts: Buffer[], coding: Coding, limits = {}) {
  const body = boundedDecode(Readable.from(parts, { objectMode: false }), coding, limits);
  const chunks: Buffer[] = [];
  let error: unknown = null;
  try {
    for await (const c of body.chunks) chunks.push(c);
  } catch (e) {
    error = e;
  }
  await body.closed;
  return { out: Buffer.concat(chunks), error, stats: body.stats };
}

const bodyArb = fc.oneof(
  fc.uint8Array({ maxLength: 3000 }),
  // Compressible, NDJSON-like bodies (long matches exercise the decoders' windows).
  fc.array(fc.constantFrom('{"a":1}\n', '{"user":"ünïcødé ✓"}\n', '\n', 'x'.repeat(200)), { maxLength: 200 }).map((a) => new TextEncoder().encode(a.join(''))),
);

test('bodies fed in random 1–7-byte slices decode exactly as whole ones', async () => {
  await fc.assert(
    fc.asyncProperty(bodyArb, fc.constantFrom(...CODINGS), fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 16 }), async (raw, coding, sizes) => {
      const plain = Buffer.from(raw);
      const z = ENCODERS[coding](plain);
      const whole = await decodeAll([z], coding);
      const sliced = await decodeAll(slice(z, sizes), coding);
      assert.equal(whole.error, null);
      assert.equal(sliced.error, null);
      assert.ok(sliced.out.equals(plain));
      assert.ok(whole.out.equals(plain));
      assert.equal(sliced.stats.compressedBytes, z.length);
      assert.equal(sliced.stats.decompressedBytesRead, plain.length);
      assert.equal(openDecoderCount(), 0);
    }),
    { numRuns: 150 },
  );
});

test('truncated compressed streams give SLUICE_MALFORMED_INPUT and leave no decoder open', async () => {
  const plain = Buffer.from('{"k":"some value"}\n'.repeat(500));
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<Coding>('gzip', 'deflate', 'br'), fc.double({ min: 0, max: 0.999, noNaN: true }), fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 8 }), async (coding, frac, sizes) => {
      const z = ENCODERS[coding](plain);
      const cut = z.subarray(0, Math.floor(z.length * frac));
      const r = await decodeAll(slice(cut, sizes), coding);
      assert.ok(r.error instanceof SluiceError, `expected a SluiceError, got ${r.error}`);
      assert.equal(r.error.code, ErrorCode.MalformedInput);
      assert.equal(openDecoderCount(), 0);
    }),
    { numRuns: 100 },
  );
});

test('corrupt compressed streams give SLUICE_MALFORMED_INPUT and leave no decoder open', async () => {
  const plain = Buffer.from('{"k":"v"}\n'.repeat(100));
  for (const coding of ['gzip', 'deflate', 'br'] as const) {
    const z = Buffer.from(ENCODERS[coding](plain));
    z[0] ^= 0xff; // header magic / zlib header check / brotli window bits
    const r = await decodeAll([z], coding);
    assert.ok(r.error instanceof SluiceError && r.error.code === ErrorCode.MalformedInput, `${coding}: ${r.error}`);
    assert.equal(r.error.details.reason, 'corrupt');
    // gzip's CRC catches a flipped byte anywhere in the data.
  }
  const g = Buffer.from(zlib.gzipSync(plain));
  g[g.length - 6] ^= 0x01;
  const r = await decodeAll([g], 'gzip');
  assert.ok(r.error instanceof SluiceError && r.error.code === ErrorCode.MalformedInput);
  assert.equal(openDecoderCount(), 0);
});

test('decodeSmallSync: the same bytes or the same coded error as the stream, for whole, truncated, corrupt and trailing-garbage bodies', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<Coding>('identity', 'gzip', 'deflate'),
      bodyArb,
      fc.constantFrom('whole', 'cut', 'flip', 'trailing'),
      fc.double({ min: 0, max: 0.999, noNaN: true }),
      async (coding, plain, damage, frac) => {
        let z = Buffer.from(ENCODERS[coding](Buffer.from(plain)));
        const at = Math.floor(z.length * frac);
        if (damage === 'cut') z = z.subarray(0, at);
        else if (damage === 'flip' && z.length > 0) z[at] ^= 0x5a;
        else if (damage === 'trailing') z = Buffer.concat([z, Buffer.from('junk')]);
        const streamed = await decodeAll([z], coding);
        let sync: Buffer | null = null;
        let error: unknown = null;
        try {
          sync = decodeSmallSync(z, coding, 2 ** 20);
        } catch (e) {
          error = e;
        }
        if (streamed.error) {
          assert.ok(error instanceof SluiceError, `stream failed (${streamed.error}), sync gave ${error ?? 'bytes'}`);
          assert.equal(error.code, (streamed.error as SluiceError).code);
          assert.equal(error.details.reason, (streamed.error as SluiceError).details.reason);
        } else {
          assert.equal(error, null, String(error));
          assert.deepEqual(sync, streamed.out);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('decodeSmallSync: null past the output bound (the caller streams instead) and always for brotli', () => {
  const plain = Buffer.from('{"a":1}\n'.repeat(10_000)); // 80,000 bytes
  assert.deepEqual(decodeSmallSync(zlib.gzipSync(plain), 'gzip', 80_000), plain);
  assert.equal(decodeSmallSync(zlib.gzipSync(plain), 'gzip', 79_999), null);
  assert.equal(decodeSmallSync(zlib.deflateSync(plain), 'deflate', 1000), null);
  assert.equal(decodeSmallSync(plain, 'identity', 1000), null);
  assert.equal(decodeSmallSync(plain, 'identity', 80_000), plain);
  assert.equal(decodeSmallSync(zlib.brotliCompressSync(plain), 'br', 2 ** 20), null);
  assert.equal(openDecoderCount(), 0);
});

test('the decompressed cap is hit at cap + at most one decoder chunk, whatever the ratio', async () => {
  const zeros = Buffer.alloc(2 * 2 ** 20);
  const compressed = { gzip: zlib.gzipSync(zeros, { level: 9 }), deflate: zlib.deflateSync(zeros), br: zlib.brotliCompressSync(zeros) };
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<'gzip' | 'deflate' | 'br'>('gzip', 'deflate', 'br'),
      fc.integer({ min: 1, max: 2 ** 20 }),
      fc.constantFrom(256, 4096, 16 * 1024, 64 * 1024),
      async (coding, cap, chunk) => {
        const r = await decodeAll([compressed[coding]], coding, { maxDecompressedBytes: cap, decoderChunkBytes: chunk });
        assert.ok(r.error instanceof SluiceError && r.error.code === ErrorCode.DecompressedTooLarge, String(r.error));
        assert.equal(r.error.details.cap, 'decompressed-bytes');
        assert.ok(r.stats.decompressedBytesRead > cap);
        assert.ok(r.stats.decompressedBytesRead <= cap + chunk, `read ${r.stats.decompressedBytesRead} > cap ${cap} + chunk ${chunk}`);
        assert.ok(r.stats.decompressedBytesPassed <= cap);
        assert.ok(r.out.length <= cap);
        assert.equal(openDecoderCount(), 0);
      },
    ),
    { numRuns: 40 },
  );
});

test('identity bodies are capped too, and the compressed cap counts bytes as sent', async () => {
  const big = Buffer.alloc(200_000, 0x61);
  const a = await decodeAll(slice(big, [4096]), 'identity', { maxDecompressedBytes: 10_000 });
  assert.ok(a.error instanceof SluiceError && a.error.code === ErrorCode.DecompressedTooLarge);
  assert.ok(a.stats.decompressedBytesRead <= 10_000 + 4096);
  const z = zlib.gzipSync(Buffer.from(Array.from({ length: 20_000 }, (_, i) => `{"i":${i}}\n`).join('')));
  const b = await decodeAll(slice(z, [1000]), 'gzip', { maxCompressedBytes: 5000 });
  assert.ok(b.error instanceof SluiceError && b.error.code === ErrorCode.CompressedTooLarge);
  assert.ok(b.stats.compressedBytes <= 5000 + 1000);
  assert.equal(openDecoderCount(), 0);
});

test('a consumer that stops early releases the decoder', async () => {
  const z = zlib.gzipSync(Buffer.alloc(2 ** 20));
  const body = boundedDecode(Readable.from([z], { objectMode: false }), 'gzip');
  for await (const _ of body.chunks) break;
  await body.closed;
  assert.equal(openDecoderCount(), 0);
});

test('Content-Encoding: one known coding; stacked and unknown codings are refused with codes', () => {
  assert.equal(parseContentEncoding(undefined), 'identity');
  assert.equal(parseContentEncoding(''), 'identity');
  assert.equal(parseContentEncoding('GZIP'), 'gzip');
  assert.equal(parseContentEncoding('x-gzip'), 'gzip');
  assert.equal(parseContentEncoding('identity, br'), 'br');
  assert.equal(parseContentEncoding(' deflate '), 'deflate');
  const refused = (h: string | string[], reason: string, allowed?: Coding[]) =>
    assert.throws(
      () => parseContentEncoding(h, allowed),
      (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.UnsupportedEncoding && e.details.reason === reason,
    );
  refused('gzip, gzip', 'stacked');
  refused('gzip,br', 'stacked');
  refused(['gzip', 'gzip'], 'stacked');
  refused('zstd', 'unknown');
  refused('compress', 'unknown');
  refused('br', 'unknown', ['identity', 'gzip']);
});
