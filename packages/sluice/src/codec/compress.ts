/**
 * Batch compression for the wire: one codec compresses one whole batch buffer (NDJSON),
 * so the dictionary a codec builds from the first records pays off on the rest. On a
 * single ~400 B record every codec is close to useless (ratio ≈ 1.1–1.6); on a batch of
 * hundreds of telemetry records it reaches ≈ 9–14 (see docs/wire.md for the measurements).
 *
 * gzip and brotli use Node's synchronous zlib so that the CPU time measured around the call
 * is the compression and nothing else. zstd comes from `@mongodb-js/zstd` 1.2.2 (Node 20's
 * zlib has no zstd; that release ships its binary in a platform package, later releases
 * download a prebuilt binary at install time, which this project cannot do). It is loaded
 * lazily: where it is missing, `createCodec({ codec: 'zstd' })` fails with
 * SLUICE_CODEC_UNAVAILABLE and the reason.
 */
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';

export type CodecName = 'none' | 'gzip' | 'brotli' | 'zstd';
export const CODEC_NAMES: readonly CodecName[] = ['none', 'gzip', 'brotli', 'zstd'];

export interface CodecSpec {
  codec: CodecName;
  /** Codec level; `undefined` takes the codec's default (gzip 6, brotli 5, zstd 3). */
  level?: number;
}

/** Levels accepted per codec, and the default taken when none is given. */
export const CODEC_LEVELS: Readonly<Record<CodecName, { min: number; max: number; default: number | null }>> = Object.freeze({
  none: { min: 0, max: 0, default: null },
  /** zlib's own default (6): about 3× faster than 9 for a few % of size. */
  gzip: { min: 1, max: 9, default: 6 },
  /** Brotli's default quality (11) is ~50× slower than 5 for ~10 % smaller output: not for a hot path. */
  brotli: { min: 0, max: 11, default: 5 },
  /** zstd's own default. */
  zstd: { min: 1, max: 19, default: 3 },
});

export interface Codec {
  readonly name: CodecName;
  readonly level: number | null;
  /** `Content-Encoding` token for HTTP (`null` for none: the header is left out). */
  readonly contentEncoding: string | null;
  /** Short label for tables: `gzip-6`, `none`. */
  readonly label: string;
  compress(data: Buffer): Promise<Buffer>;
  /** Inverse of `compress`; refuses to inflate past `maxOutputBytes` (default 256 MiB). */
  decompress(data: Buffer, maxOutputBytes?: number): Promise<Buffer>;
}

export interface MeasuredCompression {
  data: Buffer;
  /** CPU time of the process (user + system, all threads) during the call, in µs. */
  cpuUs: number;
  /** Wall time of the call, in µs. */
  wallUs: number;
}

/**
 * Compresses and measures. `process.cpuUsage()` counts every thread of the process, so the
 * work zstd does on the libuv pool is counted too; for the synchronous zlib codecs nothing
 * else can run during the call.
 */
export async function compressMeasured(codec: Codec, data: Buffer): Promise<MeasuredCompression> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const out = await codec.compress(data);
  const wallUs = (performance.now() - t0) * 1000;
  const c = process.cpuUsage(c0);
  return { data: out, cpuUs: c.user + c.system, wallUs };
}

const DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024;

interface ZstdBinding {
  compress(data: Buffer, level?: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
}

let zstdLoaded: { binding: ZstdBinding | null; reason: string | null } | undefined;

function loadZstd(): { binding: ZstdBinding | null; reason: string | null } {
  if (zstdLoaded) return zstdLoaded;
  try {
    const req = createRequire(import.meta.url);
    const binding = req('@mongodb-js/zstd') as ZstdBinding;
    zstdLoaded = { binding, reason: null };
  } catch (e) {
    zstdLoaded = { binding: null, reason: `@mongodb-js/zstd could not be loaded: ${(e as Error).message.split('\n')[0]}` };
  }
  return zstdLoaded;
}

/** Whether zstd can be used here, and why not when it cannot. */
export function zstdAvailability(): { available: boolean; reason: string | null } {
  const z = loadZstd();
  return { available: z.binding !== null, reason: z.reason };
}

/** The codecs usable on this machine (zstd only when its binding loads). */
export function availableCodecs(): CodecName[] {
  return CODEC_NAMES.filter((n) => n !== 'zstd' || zstdAvailability().available);
}

function checkLevel(name: CodecName, level: number | undefined): number | null {
  const range = CODEC_LEVELS[name];
  if (name === 'none') {
    if (level !== undefined && level !== 0) throw invalidOption('level', level, 'no level (or 0) for codec none');
    return null;
  }
  const l = level ?? range.default!;
  if (!Number.isInteger(l) || l < range.min || l > range.max)
    throw invalidOption('level', level, `an integer in [${range.min}, ${range.max}] for codec ${name}`);
  return l;
}

function tooLarge(codec: string, max: number, cause?: unknown): SluiceError {
  return new SluiceError(ErrorCode.DecompressedTooLarge, `${codec} output exceeds ${max} bytes`, { cause, details: { codec, maxOutputBytes: max } });
}

export function createCodec(spec: CodecSpec | CodecName): Codec {
  const s: CodecSpec = typeof spec === 'string' ? { codec: spec } : spec;
  if (!CODEC_NAMES.includes(s.codec)) throw invalidOption('codec', s.codec, `one of ${CODEC_NAMES.join(', ')}`);
  const level = checkLevel(s.codec, s.level);
  const label = level === null ? s.codec : `${s.codec}-${level}`;
  switch (s.codec) {
    case 'none':
      return {
        name: 'none',
        level,
        label,
        contentEncoding: null,
        compress: async (d) => d,
        decompress: async (d, max = DEFAULT_MAX_OUTPUT) => {
          if (d.length > max) throw tooLarge('none', max);
          return d;
        },
      };
    case 'gzip':
      return {
        name: 'gzip',
        level,
        label,
        contentEncoding: 'gzip',
        compress: async (d) => zlib.gzipSync(d, { level: level! }),
        decompress: async (d, max = DEFAULT_MAX_OUTPUT) => {
          try {
            return zlib.gunzipSync(d, { maxOutputLength: max });
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge('gzip', max, e);
            throw e;
          }
        },
      };
    case 'brotli':
      return {
        name: 'brotli',
        level,
        label,
        contentEncoding: 'br',
        compress: async (d) =>
          zlib.brotliCompressSync(d, {
            params: {
              [zlib.constants.BROTLI_PARAM_QUALITY]: level!,
              [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_TEXT,
              [zlib.constants.BROTLI_PARAM_SIZE_HINT]: d.length,
            },
          }),
        decompress: async (d, max = DEFAULT_MAX_OUTPUT) => {
          try {
            return zlib.brotliDecompressSync(d, { maxOutputLength: max });
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge('brotli', max, e);
            throw e;
          }
        },
      };
    case 'zstd': {
      const z = loadZstd();
      if (!z.binding)
        throw new SluiceError(ErrorCode.CodecUnavailable, `codec zstd is unavailable: ${z.reason}`, { details: { codec: 'zstd', reason: z.reason } });
      const b = z.binding;
      return {
        name: 'zstd',
        level,
        label,
        contentEncoding: 'zstd',
        compress: (d) => b.compress(d, level!),
        decompress: async (d, max = DEFAULT_MAX_OUTPUT) => {
          // The binding has no output cap; the frame header's content size is checked
          // after the fact only. Bounded streaming decode belongs to src/codec/bounded-decode.
          const out = await b.decompress(d);
          if (out.length > max) throw tooLarge('zstd', max);
          return out;
        },
      };
    }
  }
}

/** Codec for an HTTP `Content-Encoding` value (`identity` or absent → none). */
export function codecForContentEncoding(value: string | undefined): Codec | null {
  const v = (value ?? 'identity').trim().toLowerCase();
  if (v === '' || v === 'identity') return createCodec('none');
  if (v === 'gzip' || v === 'x-gzip') return createCodec('gzip');
  if (v === 'br') return createCodec('brotli');
  if (v === 'zstd' && zstdAvailability().available) return createCodec('zstd');
  return null;
}
