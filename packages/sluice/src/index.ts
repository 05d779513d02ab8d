/**
 * Sluice's public entry: what users may import. Everything else is internal.
 */
// Core: the pipeline, its options, contracts, errors, ledger and clock.
export { Pipeline, writeOnce, type OfferResult, type PipelineOptions, type PipelineStats, type PipelineState } from './core/pipeline.js';
export { WINDOW_DEFAULTS, QUEUE_DEFAULTS, OVERFLOW_POLICIES, type WindowOptions, type QueueOptions, type OverflowPolicy } from './core/options.js';
export { envelope, FLUSH_REASONS, type Envelope, type EnvelopeInit, type Sink, type BatchHandler, type BatchOutcome, type PipelineObserver, type FlushInfo, type FlushReason, type FixedCostKind } from './core/types.js';
export { SluiceError, SinkError, ErrorCode, isSluiceError, invalidOption, type FailureClass, type ErrorCodeValue } from './core/errors.js';
export { Ledger, formatLedger, type LedgerSnapshot } from './core/ledger.js';
export { systemClock, FakeClock, epochMsOf, monotonicOf, type Clock } from './core/clock.js';
export { seededRng, type Rng } from './core/random.js';

// Overflow to disk.
export type { SpillStore } from './core/spill-store.js';
export { DiskSpillStore, SPILL_DEFAULTS, defaultSpillCodec, jsonSpillCodec, rawLineSpillCodec, type DiskSpillOptions, type DiskSpillStats, type SpillCodec } from './core/spill.js';

// Reliability decorators: retry with backoff, split-and-retry, the abort-whole-batch baseline.
export {
  retrying,
  splitAndRetry,
  abortWholeBatch,
  isolationBound,
  RetryExhaustedError,
  BACKOFF_DEFAULTS,
  MemoryDeadLetters,
  type BackoffOptions,
  type DeadLetter,
  type DeadLetterWriter,
  type Isolation,
  type SplitAndRetryOptions,
} from './core/reliability.js';

// Window controllers: static and AIMD on observed p99.
export { StaticController, AimdController, createWindowController, type WindowController, type WindowControllerOptions, type AimdOptions, type WindowDecision } from './core/controller.js';

// Choosing a window from measurements: the cost model and the derived window (`sluice tune`
// and the lab's `window` experiment use the same functions), and the grid chooser.
export {
  costModel,
  writeCostMs,
  deriveWindow,
  chooseWindow,
  refinementCorners,
  headroomCorner,
  snappedMaxItems,
  sizePreferenceTie,
  fillWaitMs,
  medianOf,
  worstP99,
  DERIVE_SAFETY_MS,
  HEADROOM_SAFETY_MS,
  SIZE_PREFERENCE_NOISE,
  type CostModel,
  type DeriveInput,
  type DerivedWindow,
  type Candidate,
  type Choice,
  type ChooseOptions,
} from './core/window-chooser.js';

// Metrics.
export { PipelineMetrics, type MetricsSnapshot } from './metrics/metrics.js';
export { LatencyHistogram, CountHistogram, type LatencySummary, type CountSummary } from './metrics/histogram.js';
export { prometheusFor } from './metrics/prometheus.js';

// Codecs: bounded decompression, NDJSON framing, per-item validation, batch compression.
export { boundedDecode, parseContentEncoding, KNOWN_CODINGS, DECODE_DEFAULTS, type Coding, type DecodeLimits } from './codec/bounded-decode.js';
export { NdjsonFramer, FRAMING_DEFAULTS, type FramingLimits } from './codec/ndjson.js';
export { ItemValidator, OBJECT_SCHEMA, ANY_JSON_SCHEMA, type ItemRejectReason, type ValidatorOptions } from './codec/validate.js';
export { compileJsonSchema, loadJsonSchema, type RecordCheck } from './codec/json-schema.js';
export { RecordIdRule, contentHashId, type RecordIdOptions, type IdRule } from './codec/record-id.js';
export { createCodec, compressMeasured, availableCodecs, zstdAvailability, CODEC_NAMES, CODEC_LEVELS, type Codec, type CodecSpec, type CodecName } from './codec/compress.js';

// Sinks.
export { FileSink, classifyFsError, type FileSinkOptions } from './sinks/file.js';
export { PostgresSink, copyText, copyBinary, classifyPgError, POSTGRES_DEFAULTS, POSTGRES_WRITE_MODES, type PostgresSinkOptions, type PostgresWriteMode } from './sinks/postgres.js';
export { HttpSink, classifyHttpStatus, type HttpSinkOptions, type HttpSinkStats } from './sinks/http.js';
export { TcpSink, type TcpSinkOptions } from './sinks/tcp.js';
export { TCP_ACK_BYTES, TCP_HEADER_BYTES } from './sinks/tcp-protocol.js';
export { JetStreamPublishSink, openStreamSink, STREAM_SINK_DEFAULTS, type JetStreamPublishSinkOptions, type JetStreamPublishMode } from './sinks/jetstream-publish.js';
export { SocketByteCounter } from './sinks/wire-counter.js';

// Sources.
export { EmbeddedLogWriter, EmbeddedLogSource, type OffsetSource, type LogRecord } from './sources/embedded-log.js';
export { connectNats, DEFAULT_NATS_URL, ensureStream, parseNatsServers, type StreamSpec } from './sources/nats.js';
export { Ingest, type IngestSpec } from './run/ingest.js';
export { JetStreamSource, JetStreamProducer, ensureJetStream } from './sources/jetstream.js';
export { startServer, SERVE_LIMIT_DEFAULTS, type ServeOptions, type ServeLimits, type RunningServer, type IngestMode, type AckMode } from './sources/http.js';
export { hashToken, newToken, parseTokensFile, loadTokensFile, ROUTES, type TokenEntry, type TenantRate, type Route } from './sources/auth.js';
export type { TlsFiles } from './sources/tls.js';

// Dead letters: stores, re-drive, reconciliation.
export { FileDeadLetterStore } from './dlq/file.js';
export { PostgresDeadLetterStore } from './dlq/postgres.js';
export { JetStreamDeadLetterStore } from './dlq/jetstream.js';
export { deadLetterWriter, type DeadLetterEntry, type DeadLetterStore } from './dlq/store.js';
export { redrive, loadTransform, openMainStream, jsonRevalidator, PostgresRevalidator, type Revalidator, type RedriveOptions, type RedriveReport } from './dlq/redrive.js';
export { openConsumableDlq, type ConsumableDlq } from './dlq/access.js';
export { reconcileIds, formatReconcile, sinkIds, sourceIds, type ReconcileReport } from './dlq/reconcile.js';
