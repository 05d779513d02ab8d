/**
 * A running ingest: a source with offsets feeding a pipeline whose handler acknowledges
 * back to the source. Shared by `sluice run`, the `poison` experiment and the tests.
 *
 * Shutdown order (`stop()`): stop fetching → wait for the reader to let go → drain the
 * pipeline (everything accepted is committed, dead-lettered or counted) → make the acks
 * durable (committed-offset file written, NATS flushed) → ledger.
 */
import { Pipeline, type PipelineStats } from '../core/pipeline.js';
import type { LedgerSnapshot } from '../core/ledger.js';
import type { QueueOptions, WindowOptions } from '../core/options.js';
import type { BatchHandler, Envelope, PipelineObserver, Sink } from '../core/types.js';
import { PipelineMetrics } from '../metrics/metrics.js';
import type { OffsetSource, PutTarget } from '../sources/embedded-log.js';
import type { RecordIdRule } from '../codec/record-id.js';

export interface IngestSpec<T> {
  source: OffsetSource<T>;
  sink: Sink<T>;
  handler?: BatchHandler<T>;
  window?: Partial<WindowOptions>;
  queue?: Partial<QueueOptions>;
  name?: string;
  observers?: PipelineObserver<T>[];
  sloMs?: number;
  /**
   * The record id rule (docs/records.md): a configured field, else the source's message id
   * (what the source put in `env.id`), else a content hash. Without it, the source's ids stand.
   */
  idRule?: RecordIdRule;
}

/** Applies the id rule as records enter the pipeline; idempotent, so a re-offer keeps the id. */
function withIds<T>(target: PutTarget<T>, rule: RecordIdRule): PutTarget<T> {
  const assign = (env: Envelope<T>) => {
    env.id = rule.id(env.raw ?? Buffer.from(JSON.stringify(env.value) ?? 'null'), env.value, env.id);
    return env;
  };
  // noteRedelivered passes through: without it a source's absorbed redeliveries never reach
  // the ledger (test/unit/ingest.test.ts).
  return {
    offer: (env) => target.offer(assign(env)),
    put: (env) => target.put(assign(env)),
    noteRedelivered: (n) => target.noteRedelivered?.(n),
  };
}

export class Ingest<T = unknown> {
  readonly pipeline: Pipeline<T>;
  readonly metrics: PipelineMetrics<T>;
  readonly source: OffsetSource<T>;
  /** Rejects if the reader fails (corrupt log, lost connection). */
  readonly reading: Promise<void>;
  private readError: unknown = null;
  private stopped: Promise<LedgerSnapshot> | null = null;

  constructor(spec: IngestSpec<T>) {
    this.source = spec.source;
    this.metrics = new PipelineMetrics<T>(spec.sink, spec.sloMs ?? Infinity);
    this.pipeline = new Pipeline<T>({
      sink: spec.sink,
      handler: spec.handler,
      window: spec.window,
      queue: spec.queue,
      name: spec.name,
      // Acks after metrics: the source only hears of items the ledger already counts.
      observers: [this.metrics, ...(spec.observers ?? []), spec.source.observer()],
    });
    this.metrics.attach(this.pipeline);
    this.reading = spec.source.run(spec.idRule ? withIds(this.pipeline, spec.idRule) : this.pipeline).catch((e) => {
      this.readError = e;
      throw e;
    });
    this.reading.catch(() => {});
  }

  stats(): PipelineStats {
    return this.pipeline.stats();
  }

  /** The reader's failure, if it failed. */
  error(): unknown {
    return this.readError;
  }

  /**
   * Stops fetching, drains, makes acks durable and returns the final ledger. Idempotent.
   * `beforeDrain` runs once fetching was told to stop and before the drain (the experiment snapshots
   * a stalled pipeline there, then aborts its handler).
   */
  stop(beforeDrain?: () => void | Promise<void>): Promise<LedgerSnapshot> {
    if (!this.stopped)
      this.stopped = (async () => {
        this.source.stop();
        await beforeDrain?.();
        // close() also releases a reader blocked on a full queue (its record is refused,
        // never accepted nor acked: the log redelivers it).
        const closing = this.pipeline.close();
        await this.reading.catch(() => {});
        await closing;
        await this.source.flushAcks();
        return this.pipeline.stats().ledger;
      })();
    return this.stopped;
  }
}
