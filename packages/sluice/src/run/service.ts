/**
 * `sluice run` as a library: builds source, sink, dead-letter store and handler from a
 * validated RunConfig, runs the ingest, serves `GET /metrics`, and stops cleanly
 * (stop fetching → drain → acknowledge what committed → ledger).
 */
import http from 'node:http';
import client from 'prom-client';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type ConsumerInfo } from '@nats-io/jetstream';
import { abortWholeBatch, splitAndRetry } from '../core/reliability.js';
import type { LedgerSnapshot } from '../core/ledger.js';
import type { BatchHandler, Sink } from '../core/types.js';
import { FileSink } from '../sinks/file.js';
import { PostgresSink } from '../sinks/postgres.js';
import { loadJsonSchema } from '../codec/json-schema.js';
import { RecordIdRule } from '../codec/record-id.js';
import { ValidatingSink } from '../sinks/validating.js';
import { FileDeadLetterStore } from '../dlq/file.js';
import { PostgresDeadLetterStore } from '../dlq/postgres.js';
import { JetStreamDeadLetterStore } from '../dlq/jetstream.js';
import { deadLetterWriter, type DeadLetterStore } from '../dlq/store.js';
import { EmbeddedLogSource, type OffsetSource } from '../sources/embedded-log.js';
import { JetStreamSource } from '../sources/jetstream.js';
import { connectNats, parseNatsUrl } from '../sources/nats.js';
import { prometheusFor } from '../metrics/prometheus.js';
import { liveView } from '../metrics/live.js';
import { ErrorCode, SluiceError } from '../core/errors.js';
import { resolveQueue, resolveWindow } from '../core/options.js';
import { LiveSlo } from '../tune/live.js';
import { Ingest } from './ingest.js';
import type { RunConfig } from './config.js';

export interface RunningService {
  readonly ingest: Ingest<unknown>;
  /** Gives up the batches being retried now (dropped `aborted`, never acked): the second signal, or the stop grace running out. */
  abandon(): void;
  readonly describe: { source: string; sink: string; dlq: string; strategy: string; metricsUrl: string | null };
  /** Stops fetching, drains, acks, closes everything; resolves with the final ledger and lag. */
  stop(): Promise<{ ledger: LedgerSnapshot; lag: number; committedOffset: number | null }>;
}

const isPg = (s: string) => /^postgres(ql)?:\/\//.test(s);
const isNats = (s: string) => s.startsWith('nats://');

export async function startService(cfg: RunConfig): Promise<RunningService> {
  // Bad input fails before anything is opened: one line, nothing to clean up.
  const check = cfg.schema !== undefined ? loadJsonSchema(cfg.schema) : null;
  const idRule = new RecordIdRule({ idField: cfg.idField });
  const closers: (() => Promise<unknown>)[] = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) await c().catch(() => {});
    closers.length = 0;
  };
  try {
    const natsConns = new Map<string, NatsConnection>();
    const nats = async (url: string) => {
      const key = parseNatsUrl(url).servers;
      let nc = natsConns.get(key);
      if (!nc) {
        nc = await connectNats(url, undefined, undefined, cfg.nats ?? []);
        natsConns.set(key, nc);
        const c = nc;
        closers.push(() => c.drain());
      }
      return nc;
    };

    // Sink
    let sink: Sink<unknown>;
    if (isPg(cfg.sink)) {
      const pg = await new PostgresSink({
        connectionString: cfg.sink,
        table: cfg.table,
        columns: cfg.columns,
        idColumn: cfg.idColumn,
        docColumn: cfg.docColumn,
        mode: cfg.pgMode,
        maxConnections: Math.max(1, cfg.window.maxInFlight ?? 1),
      }).open();
      sink = pg as unknown as Sink<unknown>;
    } else {
      // Idempotent by id: a redelivery after a crash between commit and ack, or a re-drive,
      // leaves one line per id (docs/dlq.md).
      sink = await new FileSink<unknown>({ path: cfg.sink, dedupeById: true }).open();
    }
    closers.push(() => sink.close());
    if (check) sink = new ValidatingSink(sink, check);

    // Dead-letter store
    const dlqSpec = cfg.dlq ?? (isPg(cfg.sink) ? cfg.sink : `${cfg.sink}.dlq.jsonl`);
    let dlq: DeadLetterStore;
    if (isPg(dlqSpec)) {
      const s = new PostgresDeadLetterStore(dlqSpec, cfg.dlqTable ?? `${cfg.table}_dlq`);
      await s.open();
      dlq = s;
    } else if (isNats(dlqSpec)) {
      const { stream } = parseNatsUrl(dlqSpec);
      dlq = await new JetStreamDeadLetterStore(await nats(dlqSpec), stream ?? 'SLUICE_DLQ').open();
    } else {
      dlq = await new FileDeadLetterStore(dlqSpec).open();
    }
    closers.push(() => dlq.close());

    // Source
    let source: OffsetSource<unknown>;
    let consumerInfo: (() => Promise<ConsumerInfo>) | null = null;
    if (isNats(cfg.source)) {
      const { stream, consumer } = parseNatsUrl(cfg.source);
      if (!stream || !consumer)
        throw new SluiceError(ErrorCode.InvalidOption, `invalid --source ${cfg.source}: expected nats://host:port/<stream>/<consumer>`);
      const jsm = await jetstreamManager(await nats(cfg.source));
      consumerInfo = () => jsm.consumers.info(stream, consumer);
      // A message whose body is not JSON is dead-lettered with its reason, then acked.
      source = await JetStreamSource.open<unknown>({
        nc: await nats(cfg.source),
        stream,
        consumer,
        ackWaitMs: cfg.ackWaitMs,
        replicas: cfg.replicas,
        maxAckPending: maxAckPendingFor(cfg),
        // Pulls of 5 s: after the stream's leader is killed, workers resume within ~5–10 s instead of
        // the client's 30 s (the `scaleout` lab's kill of the leader; docs/scale.md).
        pullExpiresMs: 5_000,
        deadLetters: deadLetterWriter(dlq, { pipeline: cfg.name, sink: sink.name, source: `jetstream:${stream}/${consumer}` }),
      });
    } else {
      source = await EmbeddedLogSource.open<unknown>({ path: cfg.source });
    }
    closers.push(() => source.close());

    // Handler
    const retry = { ...cfg.retry, budget: cfg.retry.budget === 'infinite' ? Infinity : cfg.retry.budget };
    const abort = new AbortController();
    const handler: BatchHandler<unknown> =
      cfg.strategy === 'abort-whole-batch'
        ? abortWholeBatch(sink, { ...retry, budget: retry.budget ?? Infinity }, { signal: abort.signal })
        : splitAndRetry(
            sink,
            { dlq: deadLetterWriter(dlq, { pipeline: cfg.name, sink: sink.name, source: source.name }), retry, itemRetries: cfg.itemRetries, deadLetterOnRetryExhausted: cfg.deadLetterOnRetryExhausted },
            { signal: abort.signal },
          );

    // --slo-p99-ms: the AIMD controller moves the window live, from the configured one (docs/tune.md).
    let slo: LiveSlo | null = null;
    if (cfg.sloP99Ms !== undefined) {
      const win = resolveWindow(cfg.window);
      slo = new LiveSlo({ sloMs: cfg.sloP99Ms, queue: resolveQueue(cfg.queue, win), start: win, log: (l) => process.stderr.write(`sluice run: ${l}\n`) });
    }
    const ingest = new Ingest<unknown>({ source, sink, handler, idRule, name: cfg.name, window: cfg.window, queue: cfg.queue, sloMs: cfg.sloP99Ms, observers: slo ? [slo.observer] : [] });
    slo?.attach(ingest.pipeline);
    // One line when the sink goes down and one when it is back: the log keeps the records
    // meanwhile (fetching pauses once the queue is full; held messages are claimed in progress).
    const health = ingest.pipeline.sinkHealth();
    health?.onDown((_e, i) => process.stderr.write(`sluice run: sink down: ${sink.name} ${i.sinkCode ?? ''} ${i.message}; retrying until it is back\n`));
    health?.onUp((ms, i) => process.stderr.write(`sluice run: sink back: ${sink.name} after ${(ms / 1000).toFixed(1)} s (${i.retries} retries)\n`));

    // Metrics
    let server: http.Server | null = null;
    let metricsUrl: string | null = null;
    if (cfg.metricsPort !== undefined) {
      const expo = prometheusFor(ingest.pipeline, ingest.metrics);
      slo?.registerMetrics(expo.registry);
      new client.Gauge({
        name: 'sluice_source_lag',
        help: 'Records in the source not yet acknowledged (log: records − committed offset; JetStream: num_pending + num_ack_pending).',
        registers: [expo.registry],
        async collect() {
          this.set(await source.lag());
        },
      });
      const live = liveView({ pipeline: ingest.pipeline, metrics: ingest.metrics, kind: 'run', sourceLag: () => source.lag() });
      if (source instanceof JetStreamSource && consumerInfo) registerWorkerMetrics(expo.registry, source, cfg.name, consumerInfo);
      server = http.createServer((req, res) => {
        if (live.route(req, res)) return; // GET / (the live page) and GET /live/events
        if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
          expo.text().then(
            (t) => res.writeHead(200, { 'content-type': expo.contentType }).end(t),
            (e) => res.writeHead(500).end(String(e)),
          );
        } else res.writeHead(404).end('not found\n');
      });
      await new Promise<void>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(cfg.metricsPort, '127.0.0.1', () => resolve());
      });
      const addr = server.address();
      metricsUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : cfg.metricsPort}/metrics`;
      const s = server;
      closers.push(() => new Promise((r) => s.close(() => r(undefined))));
      closers.push(async () => live.close()); // runs before the server's close, which waits for open streams
    }

    let stopping: ReturnType<RunningService['stop']> | null = null;
    return {
      ingest,
      abandon: () => abort.abort(),
      describe: { source: source.name, sink: isPg(cfg.sink) ? `postgres:${cfg.table}` : `file:${cfg.sink}`, dlq: dlq.describe, strategy: cfg.strategy, metricsUrl },
      stop() {
        if (!stopping)
          stopping = (async () => {
            // abort-whole-batch stalls on poison by design: a stop gives up its held batch (not acked).
            // Split-and-retry waits for a sink that is down for up to stopGraceMs, then gives up
            // its batches the same way: the log redelivers them to the next run.
            let grace: NodeJS.Timeout | null = null;
            const ledger = await ingest.stop(() => {
              if (cfg.strategy === 'abort-whole-batch') abort.abort();
              else {
                grace = setTimeout(() => {
                  if (health && !health.isUp()) process.stderr.write(`sluice run: sink still down after ${cfg.stopGraceMs} ms: giving up the batches in retry (not acked; the log keeps them)\n`);
                  abort.abort();
                }, cfg.stopGraceMs);
                grace.unref();
              }
            });
            if (grace) clearTimeout(grace);
            const lag = await source.lag().catch(() => -1);
            const committedOffset = source instanceof EmbeddedLogSource ? source.committed() : null;
            await closeAll();
            return { ledger, lag, committedOffset };
          })();
        return stopping;
      },
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}


/** Messages pulled ahead of the pipeline by one worker (JetStreamSource's pull batch). */
const PULLED_AHEAD = 256;

/**
 * The consumer's MaxAckPending (docs/scale.md): given, or sized for `workers` workers each
 * holding a full queue, its batches in flight and one pull ahead; else left to the consumer.
 */
export function maxAckPendingFor(cfg: RunConfig): number | undefined {
  if (cfg.maxAckPending !== undefined) return cfg.maxAckPending;
  if (cfg.workers === undefined) return undefined;
  // resolveWindow/resolveQueue drop the keys the CLI leaves undefined: spread over the
  // defaults, `maxInFlight: undefined` made this NaN, JSON sent null, and the server's default of
  // 1000 applied; one worker then held all 1000 and the others got nothing
  // (test/unit/run-consumer-sizing.test.ts).
  const w = resolveWindow(cfg.window);
  const q = resolveQueue(cfg.queue, w);
  return cfg.workers * (q.maxItems + w.maxInFlight * w.maxItems + PULLED_AHEAD);
}

/**
 * Per worker and per consumer, for M workers on one durable consumer (docs/scale.md):
 * - `sluice_worker_lag_records{worker}`: records delivered to this worker and not yet
 *   acknowledged (queued, in flight, or awaiting their ack);
 * - `sluice_consumer_pending`: the consumer's messages not yet delivered to any worker;
 * - `sluice_consumer_ack_pending`: delivered to some worker, not yet acknowledged;
 * - `sluice_consumer_redelivered`: the consumer's redelivered messages not yet acknowledged.
 * The consumer figures come from one consumer-info request per scrape.
 */
function registerWorkerMetrics(registry: client.Registry, source: JetStreamSource<unknown>, worker: string, consumer: () => Promise<ConsumerInfo>): void {
  new client.Gauge({
    name: 'sluice_worker_lag_records',
    help: 'Records delivered to this worker and not yet acknowledged.',
    labelNames: ['worker'],
    registers: [registry],
    collect() {
      this.set({ worker }, source.stats().held ?? 0);
    },
  });
  let last: Promise<ConsumerInfo | null> | null = null;
  // One consumer-info request per scrape, shared by the three gauges.
  const info = () => (last ??= consumer().catch(() => null).finally(() => setTimeout(() => (last = null), 0)));
  for (const [name, help, pick] of [
    ['sluice_consumer_pending', 'Messages of the durable consumer not yet delivered to any worker.', (i: ConsumerInfo) => i.num_pending],
    ['sluice_consumer_ack_pending', 'Messages delivered to some worker of the consumer and not yet acknowledged.', (i: ConsumerInfo) => i.num_ack_pending],
    ['sluice_consumer_redelivered', 'Messages of the consumer redelivered and not yet acknowledged.', (i: ConsumerInfo) => i.num_redelivered],
  ] as const)
    new client.Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const i = await info();
        if (i) this.set(pick(i));
      },
    });
}
