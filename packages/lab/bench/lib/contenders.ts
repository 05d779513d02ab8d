/**
 * The five contenders, each wired the way its own documentation suggests, all with the
 * same window (512 items or 5 ms) and one batch written at a time (`maxInFlight` 1):
 *
 * - sluice:     Pipeline (bounded `block` queue of 10,000 items, ledger) + PipelineMetrics
 *               observer (HDR latency per item at commit, batch histograms).
 * - hand:       the 20-line batcher people write: an array, a timer, a promise chain.
 * - rxjs:       Subject → bufferTime(5, null, 512) → filter(non-empty) → concatMap(write).
 * - otel:       BatchSpanProcessor(maxExportBatchSize 512, scheduledDelayMillis 5) into a
 *               SpanExporter whose export() is the sink's write.
 * - bottleneck: Bottleneck.Batcher({maxSize 512, maxTime 5}); 'batch' events chained
 *               one at a time into the sink.
 *
 * Only Sluice pushes back; the peers take everything (OTel drops past `maxQueueSize`).
 *
 * `hand-bare` is the hand-written batcher with no latency histogram behind it (case 1
 * only): what such a batcher costs when nobody measures anything. `none` keeps nothing:
 * each item is made and dropped at once (case 4's runtime baseline: what the process's
 * RSS does under the same allocation rate with no backlog anywhere).
 */
import { Subject, bufferTime, concatMap, filter } from 'rxjs';
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import Bottleneck from 'bottleneck';
import { Pipeline } from 'sluice';
import type { Envelope, PipelineObserver } from 'sluice';
import { PipelineMetrics } from 'sluice';
import type { AckSink, Contender } from './harness.js';
import { stampEnqueued } from './item.js';

export const MAX_ITEMS = 512;
export const MAX_WAIT_MS = 5;
export const SLUICE_QUEUE_ITEMS = 10_000;
export const CONTENDERS = ['sluice', 'hand', 'rxjs', 'otel', 'bottleneck'] as const;
export type ContenderName = (typeof CONTENDERS)[number];

export interface ContenderOptions {
  /**
   * Every contender stamps `enqueuedAtMs` when it takes an item (`stampEnqueued`), for the
   * enqueue-to-ack latency of case 4. Off in throughput cases: it costs a clock read per item.
   */
  stampEnqueue?: boolean;
  /** OTel's maxQueueSize. @default the library's (2048) */
  otelMaxQueueSize?: number;
  /** Sluice's maxInFlight (case 3's append variant; the peers always write one batch at a time). @default 1 */
  sluiceMaxInFlight?: number;
  /** Sluice's maxItems (case 3's append variant). @default MAX_ITEMS */
  sluiceMaxItems?: number;
  /** Sluice's queue bound in items (case 3's append variant). @default SLUICE_QUEUE_ITEMS */
  sluiceQueueItems?: number;
}

export function makeContender<I extends Envelope<unknown>>(name: string, sink: AckSink, o: ContenderOptions = {}): Contender<I> {
  switch (name) {
    case 'sluice':
      return sluice(sink, o);
    case 'hand':
    case 'hand-bare':
      return { ...hand(sink, o), name };
    case 'rxjs':
      return rxjs(sink, o);
    case 'otel':
      return otel(sink, o);
    case 'bottleneck':
      return bottleneck(sink, o);
    case 'none':
      return none();
    default:
      throw new Error(`unknown contender ${JSON.stringify(name)}: one of ${CONTENDERS.join(', ')}`);
  }
}

const noop = (): void => {};

function none<I>(): Contender<I> {
  let offered = 0;
  return {
    name: 'none',
    offer: () => (offered++, true),
    wait: () => Promise.resolve(),
    close: () => Promise.resolve(),
    latency: () => null,
    extra: () => ({ discarded: offered }),
  };
}

function sluice<I extends Envelope<unknown>>(sink: AckSink, o: ContenderOptions): Contender<I> {
  const metrics = new PipelineMetrics<unknown>(sink);
  // Stamped when admitted, which for an item that had to wait (`put`) is after the wait.
  const stamping: PipelineObserver<unknown>[] = o.stampEnqueue === true ? [{ onAccepted: stampEnqueued }] : [];
  const p = new Pipeline<unknown>({
    name: 'sluice',
    sink,
    window: { maxItems: o.sluiceMaxItems ?? MAX_ITEMS, maxWaitMs: MAX_WAIT_MS, maxInFlight: o.sluiceMaxInFlight ?? 1 },
    queue: { policy: 'block', maxItems: o.sluiceQueueItems ?? SLUICE_QUEUE_ITEMS },
    observers: [metrics, ...stamping],
  });
  metrics.attach(p);
  return {
    name: 'sluice',
    offer: (item) => p.offer(item) !== 'full',
    wait: (item) => p.put(item).then(noop),
    close: () => p.close(),
    latency: () => metrics.latency,
    extra: () => {
      const s = p.stats();
      return { ledger: s.ledger, batches: s.batches, flushReasons: s.flushReasons, batchSizeMean: metrics.batchSize.summary().mean };
    },
  };
}

/** The hand-written baseline: 20 lines, no bound, no accounting. */
class HandBatcher<T> {
  private buf: T[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private chain: Promise<void> = Promise.resolve();
  constructor(private readonly write: (batch: T[]) => Promise<void>) {}
  add(item: T): void {
    this.buf.push(item);
    if (this.buf.length >= MAX_ITEMS) this.flush();
    else if (this.timer === null) this.timer = setTimeout(() => this.flush(), MAX_WAIT_MS);
  }
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.buf.length === 0) return;
    const batch = this.buf;
    this.buf = [];
    this.chain = this.chain.then(() => this.write(batch));
  }
  async close(): Promise<void> {
    this.flush();
    await this.chain;
  }
}

function hand<I extends Envelope<unknown>>(sink: AckSink, o: ContenderOptions): Contender<I> {
  const b = new HandBatcher<I>((batch) => sink.write(batch));
  const stamp = o.stampEnqueue === true;
  return {
    name: 'hand',
    offer: (item) => {
      if (stamp) stampEnqueued(item);
      b.add(item);
      return true;
    },
    wait: () => Promise.resolve(),
    close: () => b.close(),
    latency: () => null,
    extra: () => ({}),
  };
}

function rxjs<I extends Envelope<unknown>>(sink: AckSink, o: ContenderOptions): Contender<I> {
  const subject = new Subject<I>();
  let done!: () => void;
  let failed!: (e: unknown) => void;
  const completed = new Promise<void>((res, rej) => {
    done = res;
    failed = rej;
  });
  let emptyBatches = 0;
  subject
    .pipe(
      bufferTime<I>(MAX_WAIT_MS, null, MAX_ITEMS),
      // bufferTime emits an empty array every period while idle; a user filters them out.
      filter((b) => (b.length > 0 ? true : (emptyBatches++, false))),
      concatMap((b) => sink.write(b)),
    )
    .subscribe({ complete: () => done(), error: (e) => failed(e) });
  const stamp = o.stampEnqueue === true;
  return {
    name: 'rxjs',
    offer: (item) => {
      if (stamp) stampEnqueued(item);
      subject.next(item);
      return true;
    },
    wait: () => Promise.resolve(),
    close: () => {
      subject.complete();
      return completed;
    },
    latency: () => null,
    extra: () => ({ emptyBatches }),
  };
}

function otel<I extends Envelope<unknown>>(sink: AckSink, o: ContenderOptions): Contender<I> {
  let pending: Promise<void> = Promise.resolve();
  const exporter: SpanExporter = {
    export(spans, resultCallback) {
      pending = sink.write(spans as unknown as I[]).then(
        () => resultCallback({ code: 0 }),
        (error: Error) => resultCallback({ code: 1, error }),
      );
    },
    shutdown: () => pending,
    forceFlush: () => pending,
  };
  const bsp = new BatchSpanProcessor(exporter, {
    maxExportBatchSize: MAX_ITEMS,
    scheduledDelayMillis: MAX_WAIT_MS,
    maxQueueSize: o.otelMaxQueueSize,
  });
  const stamp = o.stampEnqueue === true;
  return {
    name: 'otel',
    offer: (item) => {
      if (stamp) stampEnqueued(item);
      bsp.onEnd(item as unknown as ReadableSpan);
      return true;
    },
    wait: () => Promise.resolve(),
    // shutdown flushes what is queued, then awaits the exporter's last export.
    close: () => bsp.shutdown(),
    latency: () => null,
    extra: () => ({ maxQueueSize: o.otelMaxQueueSize ?? 2048 }),
  };
}

function bottleneck<I extends Envelope<unknown>>(sink: AckSink, o: ContenderOptions): Contender<I> {
  const batcher = new Bottleneck.Batcher({ maxSize: MAX_ITEMS, maxTime: MAX_WAIT_MS });
  let chain: Promise<void> = Promise.resolve();
  let offered = 0;
  batcher.on('batch', (items: I[]) => {
    chain = chain.then(() => sink.write(items));
  });
  const stamp = o.stampEnqueue === true;
  return {
    name: 'bottleneck',
    offer: (item) => {
      if (stamp) stampEnqueued(item);
      offered++;
      // add() returns the batch's shared promise (resolved when the batch is emitted); we
      // count acks in the sink instead, like for every contender.
      void batcher.add(item);
      return true;
    },
    wait: () => Promise.resolve(),
    // The Batcher has no flush(): its maxTime timer emits the remainder; wait for the acks.
    close: async () => {
      await sink.waitAcked(offered);
      await chain;
    },
    latency: () => null,
    extra: () => ({}),
  };
}
