/**
 * Sluice's error classes. Every error carries a stable `code` that users match on
 * (never the message), a `retryable` flag, and the `cause` it wraps.
 * The CLI turns any SluiceError into one line and a non-zero exit.
 */

export const ErrorCode = {
  /** An option was out of range or of the wrong type. Fix the configuration. */
  InvalidOption: 'SLUICE_INVALID_OPTION',
  /** `block` policy: no space appeared within `blockTimeoutMs`. Retry later (HTTP 429/503). */
  QueueFull: 'SLUICE_QUEUE_FULL',
  /** The pipeline is closing or closed and accepts nothing more. */
  Closed: 'SLUICE_CLOSED',
  /** A single item is larger than the batch byte limit and could never be written. */
  ItemTooLarge: 'SLUICE_ITEM_TOO_LARGE',
  /** The sink failed in a way that retrying the same batch may fix (connection, timeout). */
  SinkTransient: 'SLUICE_SINK_TRANSIENT',
  /** The sink rejected the batch because of one or more records (data, constraint). */
  SinkItem: 'SLUICE_SINK_ITEM',
  /** A sink could not be reached or set up at all (bad URL, refused connection). */
  SinkUnavailable: 'SLUICE_SINK_UNAVAILABLE',
  /** Decompressed request body crossed its cap. */
  DecompressedTooLarge: 'SLUICE_DECOMPRESSED_TOO_LARGE',
  /** Compressed request body crossed its cap. */
  CompressedTooLarge: 'SLUICE_COMPRESSED_TOO_LARGE',
  /** One line/item crossed the per-item byte cap. */
  LineTooLarge: 'SLUICE_LINE_TOO_LARGE',
  /** Too many items in one request. */
  TooManyItems: 'SLUICE_TOO_MANY_ITEMS',
  /** Unknown or stacked Content-Encoding. */
  UnsupportedEncoding: 'SLUICE_UNSUPPORTED_ENCODING',
  /** Input could not be decoded/parsed/validated. */
  MalformedInput: 'SLUICE_MALFORMED_INPUT',
  /** A durable file (spill segment, log, DLQ) failed its integrity check. */
  Corrupt: 'SLUICE_CORRUPT',
  /** A codec (zstd) was asked for but its library cannot be loaded on this machine. */
  CodecUnavailable: 'SLUICE_CODEC_UNAVAILABLE',
  /** Transient sink failures outlasted the retry budget; the batch was dead-lettered or dropped (counted). */
  RetryExhausted: 'SLUICE_RETRY_EXHAUSTED',
  /** A source (embedded log, JetStream consumer) could not be opened or read. */
  SourceUnavailable: 'SLUICE_SOURCE_UNAVAILABLE',
  /** The dead-letter store could not make a letter durable; the record stays unacknowledged. */
  DeadLetterFailed: 'SLUICE_DLQ_WRITE_FAILED',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface SluiceErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /** Free-form machine-readable context (which cap, which option, which line). */
  details?: Record<string, unknown>;
}

export class SluiceError extends Error {
  readonly code: ErrorCodeValue;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCodeValue, message: string, opts: SluiceErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SluiceError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.details = opts.details ?? {};
  }
}

export function isSluiceError(e: unknown, code?: ErrorCodeValue): e is SluiceError {
  return e instanceof SluiceError && (code === undefined || e.code === code);
}

/**
 * How a sink failure should be handled (see docs/architecture.md, "Contracts").
 * - `transient`: retry the whole batch with backoff; never split.
 * - `item`: a record caused it; split the batch to isolate the record.
 */
export type FailureClass = 'transient' | 'item';

export class SinkError extends SluiceError {
  readonly failureClass: FailureClass;
  /** Driver-level code, e.g. a PostgreSQL SQLSTATE or an errno name. */
  readonly sinkCode: string | undefined;
  /** Transient errors that should page someone even though they are retried (ENOSPC). */
  readonly alerting: boolean;

  constructor(
    failureClass: FailureClass,
    message: string,
    opts: SluiceErrorOptions & { sinkCode?: string; alerting?: boolean } = {},
  ) {
    super(failureClass === 'transient' ? ErrorCode.SinkTransient : ErrorCode.SinkItem, message, {
      ...opts,
      retryable: failureClass === 'transient',
    });
    this.name = 'SinkError';
    this.failureClass = failureClass;
    this.sinkCode = opts.sinkCode;
    this.alerting = opts.alerting ?? false;
  }
}

export function invalidOption(name: string, value: unknown, expected: string): SluiceError {
  return new SluiceError(
    ErrorCode.InvalidOption,
    value === undefined ? `missing option ${name}: expected ${expected}` : `invalid option ${name}=${JSON.stringify(value)}: expected ${expected}`,
    { details: { option: name, value, expected } },
  );
}
