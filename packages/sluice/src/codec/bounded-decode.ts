/**
 * Streamed, capped decompression of request bodies (identity, gzip, deflate, br).
 *
 * The caps are applied where the bytes are: the compressed cap on what enters the
 * decoder, the decompressed cap on what *leaves* it, chunk by chunk. The moment a cap is
 * crossed the chain is destroyed (decoder included) and the iteration throws a coded
 * error: nothing is buffered past the cap whatever the compression ratio. The bytes read
 * out of the decoder are at most `cap + one decoder chunk` (the chunk that crossed it),
 * and `stats.decompressedBytesRead` counts them, so the claim can be checked from outside.
 *
 * zstd: Node 20's zlib has none, and no zstd package is a dependency (the well-kept ones
 * are native add-ons); `zstd` is therefore an unknown coding here and refused (HTTP 415).
 *
 * The same approach as undici's permessage-deflate: count inflated bytes, abort with a
 * stable code (SLUICE_DECOMPRESSED_TOO_LARGE).
 */
import { Transform, pipeline, type Readable, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';

export type Coding = 'identity' | 'gzip' | 'deflate' | 'br';
export const KNOWN_CODINGS: readonly Coding[] = ['identity', 'gzip', 'deflate', 'br'];

export interface DecodeLimits {
  /** Bytes of the body as sent (before decoding), at most. @default 16 MiB */
  maxCompressedBytes: number;
  /** Bytes out of the decoder per request, at most. @default 16 MiB */
  maxDecompressedBytes: number;
  /** Output chunk of the decoder (zlib `chunkSize`): the overshoot bound of the cap. @default 64 KiB (measured: 16 KiB chunks decode 16 MiB 2–3× slower on a loaded 2-core host, one thread-pool hop per chunk) */
  decoderChunkBytes: number;
}

export const DECODE_DEFAULTS: Readonly<DecodeLimits> = Object.freeze({
  maxCompressedBytes: 16 * 2 ** 20,
  maxDecompressedBytes: 16 * 2 ** 20,
  decoderChunkBytes: 64 * 1024,
});

export function resolveDecodeLimits(partial: Partial<DecodeLimits> = {}): DecodeLimits {
  const o = { ...DECODE_DEFAULTS };
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (o as Record<string, number>)[k] = v as number;
  for (const k of ['maxCompressedBytes', 'maxDecompressedBytes'] as const)
    if (!Number.isInteger(o[k]) || o[k] < 1) throw invalidOption(k, o[k], 'an integer ≥ 1 (bytes)');
  // zlib refuses chunk sizes below 64 bytes.
  if (!Number.isInteger(o.decoderChunkBytes) || o.decoderChunkBytes < 64)
    throw invalidOption('decoderChunkBytes', o.decoderChunkBytes, 'an integer ≥ 64 (bytes)');
  return o;
}

/**
 * Parses a Content-Encoding header into the one coding to undo. Refuses stacked codings
 * (`gzip, gzip`: a bomb inside a bomb; at most one coding is allowed) and codings not in
 * `allowed`, with SLUICE_UNSUPPORTED_ENCODING (HTTP 415). `identity` layers are ignored.
 */
export function parseContentEncoding(header: string | string[] | undefined, allowed: readonly Coding[] = KNOWN_CODINGS): Coding {
  const raw = Array.isArray(header) ? header.join(',') : (header ?? '');
  const layers = raw
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '' && s !== 'identity');
  if (layers.length > 1)
    throw new SluiceError(ErrorCode.UnsupportedEncoding, `stacked content codings are refused: "${raw}" (at most one of ${allowed.join(', ')})`, {
      details: { reason: 'stacked', contentEncoding: raw, allowed },
    });
  const c = (layers[0] ?? 'identity') === 'x-gzip' ? 'gzip' : (layers[0] ?? 'identity');
  if (!(allowed as readonly string[]).includes(c))
    throw new SluiceError(ErrorCode.UnsupportedEncoding, `content coding "${c}" is not supported (one of ${allowed.join(', ')})`, {
      details: { reason: 'unknown', contentEncoding: raw, allowed },
    });
  return c as Coding;
}

export interface DecodeStats {
  /** Bytes that entered the decoder. */
  compressedBytes: number;
  /** Bytes read out of the decoder, including a chunk that crossed the cap. */
  decompressedBytesRead: number;
  /** Bytes passed on to the consumer (≤ the cap). */
  decompressedBytesPassed: number;
}

let openDecoders = 0;
/** zlib/brotli decoders created and not yet closed (process-wide): a leak detector for tests. */
export function openDecoderCount(): number {
  return openDecoders;
}

function createDecoder(coding: Coding, chunkSize: number): Transform | null {
  switch (coding) {
    case 'identity':
      return null;
    case 'gzip':
      return zlib.createGunzip({ chunkSize });
    case 'deflate':
      // RFC 9110: "deflate" is the zlib format (RFC 1950). Raw deflate fails its header check (400).
      return zlib.createInflate({ chunkSize });
    case 'br':
      return zlib.createBrotliDecompress({ chunkSize });
  }
}

class Counter extends Transform {
  constructor(
    private readonly onChunk: (n: number) => SluiceError | null,
    private readonly onPassed: (n: number) => void = () => {},
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const err = this.onChunk(chunk.length);
    if (err) return cb(err);
    this.onPassed(chunk.length);
    cb(null, chunk);
  }
}

export interface BoundedBody {
  /** The decoded bytes, in chunks of at most `decoderChunkBytes` (identity: as received). */
  chunks: AsyncIterable<Buffer>;
  stats: DecodeStats;
  /** Destroys the chain (decoder included). Idempotent; the source stream is left alone. */
  destroy(): void;
  /** Resolves once every stream of the chain is closed (the decoder released). */
  closed: Promise<void>;
}

/**
 * Decodes `source` with `coding` under `limits`. The source is piped in, never destroyed
 * (an HTTP request must stay alive to carry the 413 response); on a cap, a corrupt or a
 * truncated stream, iteration throws a SluiceError:
 * - SLUICE_COMPRESSED_TOO_LARGE / SLUICE_DECOMPRESSED_TOO_LARGE (details: cap, limit, read)
 * - SLUICE_MALFORMED_INPUT for corrupt or truncated compressed data (details: reason)
 */
export function boundedDecode(source: Readable, coding: Coding, limits: Partial<DecodeLimits> = {}): BoundedBody {
  const lim = resolveDecodeLimits(limits);
  const stats: DecodeStats = { compressedBytes: 0, decompressedBytesRead: 0, decompressedBytesPassed: 0 };
  const head = new Counter((n) => {
    stats.compressedBytes += n;
    if (stats.compressedBytes > lim.maxCompressedBytes)
      return new SluiceError(ErrorCode.CompressedTooLarge, `request body exceeds ${lim.maxCompressedBytes} bytes (compressed)`, {
        details: { cap: 'compressed-bytes', limit: lim.maxCompressedBytes, read: stats.compressedBytes },
      });
    return null;
  });
  const tail = new Counter(
    (n) => {
      stats.decompressedBytesRead += n;
      if (stats.decompressedBytesRead > lim.maxDecompressedBytes)
        return new SluiceError(ErrorCode.DecompressedTooLarge, `request body exceeds ${lim.maxDecompressedBytes} bytes once decompressed`, {
          details: { cap: 'decompressed-bytes', limit: lim.maxDecompressedBytes, read: stats.decompressedBytesRead },
        });
      return null;
    },
    (n) => (stats.decompressedBytesPassed += n),
  );
  const decoder = createDecoder(coding, lim.decoderChunkBytes);
  const streams: (Transform)[] = decoder ? [head, decoder, tail] : [head, tail];
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  if (decoder) {
    openDecoders++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      openDecoders--;
    };
    decoder.once('close', release);
  }
  let pending = streams.length;
  for (const s of streams) s.once('close', () => --pending === 0 && closedResolve());

  let failure: unknown = null;
  pipeline(streams, (err) => {
    if (err && failure === null) failure = classify(err, coding);
  });
  // The source feeds the chain but is not owned by it: a failure unpipes it and leaves it
  // to the caller (who answers the request, then discards what is still arriving).
  source.pipe(head);
  const onSourceError = (e: unknown) => head.destroy(e as Error);
  source.once('error', onSourceError);
  const onSourceAborted = () => {
    if (!source.readableEnded) head.destroy(new SluiceError(ErrorCode.MalformedInput, 'request body aborted by the client', { details: { reason: 'aborted' } }));
  };
  source.once('close', onSourceAborted);

  const destroy = () => {
    source.unpipe(head);
    source.off('error', onSourceError);
    source.off('close', onSourceAborted);
    for (const s of streams) s.destroy();
  };

  async function* iterate(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of tail) yield chunk as Buffer;
    } catch (e) {
      throw failure ?? classify(e, coding);
    } finally {
      destroy();
    }
    if (failure) throw failure;
  }

  return { chunks: iterate(), stats, destroy, closed };
}

/**
 * Decodes a small body whose compressed bytes are all in hand, at once, on the calling thread:
 * no stream, no thread-pool round trip (a streamed gzip body costs two: one per write, one for
 * the end). The work is bounded by `maxOutputBytes`: past it, zlib stops and this returns null,
 * and the caller decodes the body with `boundedDecode` instead (which applies the real caps).
 * `br` always returns null: a brotli stream can make its decoder fill a 16 MiB window before
 * it emits its first byte, which must not happen on the event loop. `identity` returns `body`.
 * Corrupt or truncated data throws SLUICE_MALFORMED_INPUT, as `boundedDecode` does.
 */
export function decodeSmallSync(body: Buffer, coding: Coding, maxOutputBytes: number): Buffer | null {
  if (coding === 'identity') return body.length <= maxOutputBytes ? body : null;
  if (coding === 'br') return null;
  try {
    const opts = { maxOutputLength: Math.max(1, maxOutputBytes) };
    return coding === 'gzip' ? zlib.gunzipSync(body, opts) : zlib.inflateSync(body, opts);
  } catch (e) {
    if ((e as NodeJS.ErrnoException)?.code === 'ERR_BUFFER_TOO_LARGE') return null;
    throw classify(e, coding);
  }
}

/** zlib errors become coded MalformedInput; our own cap errors pass through unchanged. */
function classify(err: unknown, coding: Coding): unknown {
  if (err instanceof SluiceError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ERR_STREAM_PREMATURE_CLOSE') return err;
  const truncated = e?.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(e?.message ?? '');
  return new SluiceError(
    ErrorCode.MalformedInput,
    truncated ? `truncated ${coding} stream` : `corrupt ${coding} stream: ${e?.message ?? String(err)}`,
    { cause: err, details: { reason: truncated ? 'truncated' : 'corrupt', coding, zlibCode: e?.code } },
  );
}
