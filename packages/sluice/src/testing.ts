/**
 * `sluice/testing`: load generators, trace replay and test doubles — for tests, benchmarks and
 * the lab, not for production pipelines (as undici marks its mock agent "for testing purposes
 * only"). Nothing here is needed to run Sluice.
 */
// Open-loop load: every item carries its intended arrival time (no coordinated omission).
export { constantArrivals, poissonArrivals, runOpenLoop, type ArrivalSchedule, type OfferTarget, type OpenLoopResult } from './sources/load.js';
export { burstyArrivals, type BurstyOptions } from './sources/bursty.js';
export { loadTrace, parseTrace, traceArrivals, peakSecond, speedupForPeak, type Trace, type TraceOptions, type ReplayOptions } from './sources/trace.js';

// Test doubles: sinks with known behaviour, and receivers for the wire sinks.
export { MemorySink, SlowSink, type SlowSinkOptions } from './sinks/memory.js';
export { PoisonedSink, FlakySink, IdempotentMemorySink, CallCountingSink } from './sinks/doubles.js';
export { TcpReceiver } from './sinks/tcp-receiver.js';
export { HttpReceiver } from './sinks/http-receiver.js';
