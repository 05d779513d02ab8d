/**
 * Sluice's public entry: what users may import. Everything else is internal.
 */
export { Pipeline, writeOnce, type OfferResult, type PipelineOptions, type PipelineStats, type PipelineState } from './core/pipeline.js';
export { WINDOW_DEFAULTS, QUEUE_DEFAULTS, OVERFLOW_POLICIES, type WindowOptions, type QueueOptions, type OverflowPolicy } from './core/options.js';
export { envelope, FLUSH_REASONS, type Envelope, type Sink, type BatchHandler, type BatchOutcome, type PipelineObserver, type FlushInfo, type FlushReason, type FixedCostKind } from './core/types.js';
export { SluiceError, SinkError, ErrorCode, isSluiceError, type FailureClass, type ErrorCodeValue } from './core/errors.js';
export { Ledger, formatLedger, type LedgerSnapshot } from './core/ledger.js';
export { systemClock, FakeClock, type Clock } from './core/clock.js';
export type { SpillStore } from './core/spill-store.js';
export { PipelineMetrics, type MetricsSnapshot } from './metrics/metrics.js';
export { LatencyHistogram, CountHistogram, type LatencySummary } from './metrics/histogram.js';
export { prometheusFor } from './metrics/prometheus.js';
export { FileSink, type FileSinkOptions } from './sinks/file.js';
export { MemorySink, SlowSink, type SlowSinkOptions } from './sinks/memory.js';
export { constantArrivals, poissonArrivals, runOpenLoop, type ArrivalSchedule, type OpenLoopResult } from './sources/load.js';
export { RecordFactory, type EventRecord } from './sources/records.js';
