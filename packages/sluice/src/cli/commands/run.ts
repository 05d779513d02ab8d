import { Command, Option } from 'commander';
import { formatLedger } from '../../core/ledger.js';
import { resolveRunConfig } from '../../run/config.js';
import { startService } from '../../run/service.js';
import { exitWithError } from '../errors.js';
import { parseColumns } from '../parse.js';
import { parseNatsServers } from '../../sources/nats.js';

const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));

/** `sluice run`: the production entry point. Wiring only; the logic lives in src/run/. */
export function registerRun(program: Command): void {
  program
    .command('run')
    .description('consume a log (embedded log path or nats://host:port/<stream>/<consumer>) into a sink until SIGINT/SIGTERM, then drain, ack and print the ledger')
    .option('--config <file>', 'JSON config file (flags override it); see docs/run.md')
    .option('--source <log-or-url>', 'embedded log path, or nats://host:port/<stream>/<consumer>')
    .option('--sink <path-or-url>', 'file path (NDJSON, one synchronous write per batch) or postgres:// URL')
    .option('--table <name>', 'PostgreSQL sink table (default sluice_records): created as (id, received_at, doc jsonb) when missing, used as it is when it exists')
    .option('--columns <map>', 'PostgreSQL columns filled from record fields: column=field,… (e.g. level=level,ts=time)')
    .option('--id-field <path>', "record field holding the id (dotted path); else the message id (Sluice-Id / Nats-Msg-Id header, log record id), else a content hash (docs/records.md)")
    .option('--schema <file>', 'JSON Schema file every record must match; a record that does not is dead-lettered (off by default)')
    .addOption(new Option('--pg-mode <mode>', 'PostgreSQL write path (default copy: binary COPY, idempotent on the id; append is not idempotent, see docs/sinks.md)').choices(['copy', 'staged', 'insert', 'json', 'auto', 'append']))
    .option('--id-column <name>', 'PostgreSQL column holding the record id (default id; it must be unique)')
    .option('--doc-column <name>', "PostgreSQL jsonb column for the whole record (default doc when the table has it; 'none' for none)")
    .option('--dlq <path-or-url>', 'dead-letter store: JSON-lines path, postgres:// URL or nats://host:port/<stream> (default <sink>.dlq.jsonl, or table <table>_dlq)')
    .option('--dlq-table <name>', 'PostgreSQL dead-letter table (default <table>_dlq)')
    .addOption(new Option('--strategy <s>', 'on a failed batch').choices(['split-and-retry', 'abort-whole-batch']))
    .option('--max-items <n>', 'window: flush at this many items')
    .option('--max-bytes <n>', 'window: flush before this many bytes')
    .option('--max-wait-ms <n>', 'window: flush when the oldest item waited this long')
    .option('--max-in-flight <n>', 'window: batches written concurrently')
    .addOption(new Option('--overflow <policy>', 'queue overflow policy').choices(['block', 'drop-newest', 'drop-oldest']))
    .option('--queue-max-items <n>', 'queue bound (items)')
    .option('--retry-budget <n>', 'transient retries per batch (or "infinite")')
    .option('--retry-base-ms <n>', 'first backoff delay')
    .option('--retry-max-ms <n>', 'backoff cap')
    .option('--retry-jitter <f>', 'jittered share of each delay, 0..1')
    .option('--retry-write-timeout-ms <n>', 'a batch write still pending after this long is a transient failure (default 30000)')
    .option('--dead-letter-on-retry-exhausted', 'with a finite --retry-budget: dead-letter (and ack) a batch whose retries ran out, instead of failing loudly')
    .option('--stop-grace-ms <n>', 'on SIGINT/SIGTERM, wait this long for a sink that is down before giving up its batches (default 30000; a second signal gives up at once)')
    .option('--item-retries <n>', 'extra attempts for an isolated record before the DLQ')
    .option('--ack-wait-ms <n>', 'JetStream: redelivery delay of an unacknowledged message')
    .option('--nats <servers>', 'JetStream: more NATS servers, comma-separated nats://host:port (a cluster): tried at start-up and on every reconnect, with jitter (docs/scale.md)')
    .option('--replicas <n>', 'JetStream: replicas of the stream when run creates it (3 in a cluster); an existing stream is used as it is')
    .option('--workers <m>', 'JetStream: how many run workers share the consumer; sizes its MaxAckPending (docs/scale.md)')
    .option('--max-ack-pending <n>', 'JetStream: the consumer\'s MaxAckPending (default: workers × (queue + in-flight window + 256) with --workers, else the consumer\'s own)')
    .option('--metrics-port <port>', 'serve GET /metrics on 127.0.0.1:<port> (0 = any free port)')
    .option('--name <name>', 'pipeline name (metrics label, DLQ entries)')
    .option('--slo-p99-ms <n>', 'p99 end-to-end latency objective: the AIMD controller moves the window live from the configured one (docs/tune.md)')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const budget = o.retryBudget === 'infinite' ? 'infinite' : num(o.retryBudget as string | undefined);
      const cfg = resolveRunConfig(o.config as string | undefined, {
        source: o.source,
        sink: o.sink,
        table: o.table,
        pgMode: o.pgMode,
        dlq: o.dlq,
        dlqTable: o.dlqTable,
        strategy: o.strategy,
        columns: parseColumns('--columns', o.columns as string | undefined),
        idColumn: o.idColumn,
        docColumn: o.docColumn === 'none' ? null : o.docColumn,
        idField: o.idField,
        schema: o.schema,
        name: o.name,
        window: { maxItems: num(o.maxItems as string), maxBytes: num(o.maxBytes as string), maxWaitMs: num(o.maxWaitMs as string), maxInFlight: num(o.maxInFlight as string) },
        queue: { policy: o.overflow, maxItems: num(o.queueMaxItems as string) },
        retry: { budget, baseMs: num(o.retryBaseMs as string), maxMs: num(o.retryMaxMs as string), jitter: num(o.retryJitter as string), writeTimeoutMs: num(o.retryWriteTimeoutMs as string) },
        deadLetterOnRetryExhausted: o.deadLetterOnRetryExhausted === true ? true : undefined,
        stopGraceMs: num(o.stopGraceMs as string),
        itemRetries: num(o.itemRetries as string),
        ackWaitMs: num(o.ackWaitMs as string),
        nats: o.nats === undefined ? undefined : parseNatsServers(o.nats as string),
        replicas: num(o.replicas as string),
        workers: num(o.workers as string),
        maxAckPending: num(o.maxAckPending as string),
        metricsPort: num(o.metricsPort as string),
        sloP99Ms: num(o.sloP99Ms as string),
      });
      const svc = await startService(cfg);
      const d = svc.describe;
      process.stdout.write(`sluice run: ${d.source} → ${d.sink} (${d.strategy}, dlq ${d.dlq})${d.metricsUrl ? `, metrics ${d.metricsUrl}` : ''}${cfg.sloP99Ms !== undefined ? `, window live for p99 ≤ ${cfg.sloP99Ms} ms` : ''}; ready\n`);
      let failure: unknown = null;
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
        svc.ingest.reading.catch((e) => {
          failure = e;
          resolve();
        });
      });
      process.stdout.write('sluice run: stopping: no more fetching, draining (a second signal gives up batches still in retry)\n');
      const giveUp = () => svc.abandon();
      process.once('SIGINT', giveUp);
      process.once('SIGTERM', giveUp);
      const r = await svc.stop();
      process.stdout.write(`ledger: ${formatLedger(r.ledger)}\n`);
      process.stdout.write(`source: ${d.source} lag=${r.lag}${r.committedOffset !== null ? ` committed_offset=${r.committedOffset}` : ''}\n`);
      if (failure) exitWithError(failure);
      if (!r.ledger.balanced) process.exitCode = 1;
      // A batch that failed loudly (finite retry budget) or was given up at stop was not acked:
      // the log still holds it, and the exit code says so.
      const lost = r.ledger.droppedByReason ?? {};
      const failedLoudly = (lost['retry-exhausted'] ?? 0) + (lost['aborted'] ?? 0);
      if (failedLoudly > 0) {
        process.stderr.write(`sluice run: ${failedLoudly} records not written (${Object.entries(lost).map(([k, v]) => `${k}=${v}`).join(' ')}); not acked, the source keeps them\n`);
        process.exitCode = 1;
      }
    });
}
