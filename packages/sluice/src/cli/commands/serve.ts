/** `sluice serve`: flags and wiring only; the server is src/sources/http.ts. */
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { invalidOption } from '../../core/errors.js';
import { formatLedger } from '../../core/ledger.js';
import type { Sink } from '../../core/types.js';
import { FileSink } from '../../sinks/file.js';
import { KNOWN_CODINGS, type Coding } from '../../codec/bounded-decode.js';
import { ACK_MODES, FLUSH_MODES, INGEST_MODES, SERVE_LIMIT_DEFAULTS, startServer, type AckMode, type FlushMode, type IngestMode } from '../../sources/http.js';
import { loadJsonSchema } from '../../codec/json-schema.js';
import type { TlsFiles } from '../../sources/tls.js';
import { splitAndRetry } from '../../core/reliability.js';
import { isNatsUrl, isPgUrl, openDeadLetterStore } from '../../dlq/access.js';
import { deadLetterWriter } from '../../dlq/store.js';
import { readServeConfig } from '../../run/config.js';
import { resolveQueue, resolveWindow, stripUndefined } from '../../core/options.js';
import { LiveSlo } from '../../tune/live.js';
import { parseColumns, parseIntAtLeast, parseNonNegative, parsePositive } from '../parse.js';
import { openStreamSink } from '../../sinks/jetstream-publish.js';
import { parseNatsServers, parseNatsUrl } from '../../sources/nats.js';
import { loadTokensFile } from '../../sources/auth.js';
import { TargetRoutingSink } from '../../sinks/routing.js';

function tlsFiles(o: Record<string, string>): TlsFiles | undefined {
  if (o.tlsCert === undefined && o.tlsKey === undefined && o.tlsClientCa === undefined) return undefined;
  if (o.tlsCert === undefined) throw invalidOption('--tls-cert', undefined, 'a PEM certificate file (with --tls-key)');
  if (o.tlsKey === undefined) throw invalidOption('--tls-key', undefined, 'a PEM private key file (with --tls-cert)');
  return { cert: o.tlsCert, key: o.tlsKey, clientCa: o.tlsClientCa };
}

export function registerServe(program: Command): void {
  const d = SERVE_LIMIT_DEFAULTS;
  program
    .command('serve')
    .description('HTTP ingest: POST /ingest (NDJSON), /_bulk (Elasticsearch), /v1/logs (OTLP), /loki/api/v1/push (Loki); identity, gzip, deflate or br; GET / (live page), /metrics, /healthz (see docs/serve.md)')
    .option('--config <file>', "JSON config, the same shape as `run --config` (a `sluice tune` snippet as is): window, queue, sloP99Ms and the sink's options; flags given override it")
    .option('--slo-p99-ms <n>', 'p99 end-to-end latency objective: the AIMD controller moves the window live from the configured one; implies --flush window unless --flush is given (docs/tune.md)')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--port <n>', 'port (0 = any free port)', '8080')
    .option('--data-dir <dir>', 'embedded file sink directory (records go to <dir>/ingest.ndjson)', './sluice-data')
    .option('--sink <url>', 'postgres://… URL, or nats://host:port/<stream> (a JetStream stream, docs/scale.md), instead of the embedded file sink')
    .option('--nats <servers>', 'with --sink nats://…: more NATS servers, comma-separated nats://host:port (a cluster), tried at start-up and on every reconnect, with jitter')
    .option('--replicas <n>', 'with --sink nats://…: replicas of the stream when serve creates it (3 in a cluster); an existing stream is used as it is', '1')
    .option('--publish-timeout-ms <ms>', 'with --sink nats://…: PubAck deadline per record', '2000')
    .option('--publish-retries <n>', 'with --sink nats://…: retries of a failed publish batch before its requests get 503 + Retry-After', '2')
    .option('--table <name>', 'PostgreSQL table (with --sink postgres://…): created as (id, received_at, doc jsonb) when missing, used as it is when it exists', 'sluice_records')
    .option('--columns <map>', 'PostgreSQL columns filled from record fields: column=field,… (e.g. level=level,ts=time)')
    .addOption(new Option('--pg-mode <mode>', 'PostgreSQL write path (default copy: binary COPY, idempotent on the id; docs/sinks.md)').choices(['copy', 'staged', 'insert', 'json', 'auto', 'append']))
    .option('--id-column <name>', 'PostgreSQL column holding the record id (default id; it must be unique)')
    .option('--doc-column <name>', "PostgreSQL jsonb column for the whole record (default doc when the table has it; 'none' for none)")
    .option('--id-field <path>', "record field holding the id (dotted path); without it a record's id is a content hash of its line (docs/records.md)")
    .option('--schema <file>', 'JSON Schema file every record must match (off by default: any JSON value is a record)')
    .option('--dlq <path-or-url>', 'dead-letter store for records the sink refuses: JSON-lines path, postgres:// URL or nats://host:port/<stream> (default <data-dir>/dlq.jsonl, or table <table>_dlq)')
    .option('--dlq-table <name>', 'PostgreSQL dead-letter table (default <table>_dlq)')
    .addOption(new Option('--mode <mode>', 'per-line: good lines kept, bad ones reported; all-or-nothing: any bad line refuses the request').choices([...INGEST_MODES]).default('per-line'))
    .addOption(new Option('--ack <when>', 'answer after the items are committed, or once accepted').choices([...ACK_MODES]).default('commit'))
    .addOption(
      new Option('--flush <when>', "request: a request's items are cut into a batch once all are enqueued (group commit while the sink is busy); window: when --max-items or --max-wait-ms says")
        .choices([...FLUSH_MODES])
        .default('request'),
    )
    .addOption(new Option('--policy <policy>', 'overflow policy of the queue').choices(['block', 'drop-newest', 'drop-oldest']).default('block'))
    .option('--block-timeout-ms <ms>', 'block policy: wait for queue space this long, then 429 + Retry-After', '1000')
    .option('--max-items <n>', 'window: items per batch', '512')
    .option('--max-in-flight <n>', 'window: batches written (published) at once', '1')
    .option('--max-wait-ms <ms>', 'window: oldest item waits at most this long (with --flush request, a request is cut once enqueued anyway)', '5')
    .option('--queue-items <n>', 'queue bound (items)', '10000')
    .option('--queue-bytes <n>', 'queue bound (bytes)', String(16 * 2 ** 20))
    .option('--max-compressed-bytes <n>', 'body bytes as sent, per request', String(d.maxCompressedBytes))
    .option('--max-decompressed-bytes <n>', 'bytes after decompression, per request', String(d.maxDecompressedBytes))
    .option('--max-line-bytes <n>', 'bytes per NDJSON line (item)', String(d.maxLineBytes))
    .option('--max-items-per-request <n>', 'items per request', String(d.maxItemsPerRequest))
    .option('--max-depth <n>', 'JSON nesting depth per item', String(d.maxDepth))
    .option('--max-concurrent-requests <n>', 'requests decoded at once (more get 503)', String(d.maxConcurrentRequests))
    .option('--codings <list>', `accepted content codings, comma-separated (of ${KNOWN_CODINGS.join(', ')})`, d.codings.join(','))
    .option('--retry-after <s>', 'Retry-After seconds on 429/503', '1')
    .option('--stop-grace-ms <ms>', 'on SIGINT/SIGTERM, wait this long for a sink that is down before giving up its batches (their requests get 503)', '30000')
    .option('--min-body-bytes-per-sec <n>', 'a body slower than this (after --body-rate-grace-ms) is answered 408 and its connection closed; 0 = no minimum', String(d.minBodyBytesPerSec))
    .option('--body-rate-grace-ms <ms>', 'how long a body may arrive at any rate', String(d.bodyRateGraceMs))
    .option('--headers-timeout-ms <ms>', 'request headers must arrive within this', String(d.headersTimeoutMs))
    .option('--request-timeout-ms <ms>', 'the whole request must arrive within this', String(d.requestTimeoutMs))
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (chain); re-read on SIGHUP')
    .option('--tls-key <file>', 'PEM private key of --tls-cert; re-read on SIGHUP')
    .option('--tls-client-ca <file>', 'mutual TLS: require client certificates signed by this PEM CA; re-read on SIGHUP')
    .option('--tokens <file>', 'tokens file (JSON: tenant, token hash, routes, rate, and optionally the table or stream the tenant writes to; `sluice token new`): every route then needs a token; re-read on SIGHUP (a new table or stream needs a restart)')
    .action(async (o: Record<string, string>, cmd: Command) => {
      // --config: the file's values where no flag was given (a flag's default does not count).
      let fileColumns: Record<string, string> | undefined;
      let fileSinkPath: string | undefined;
      let fileWindow: { maxBytes?: number } = {};
      if (o.config !== undefined) {
        const { cfg: f, ignored } = readServeConfig(o.config);
        if (ignored.length > 0) process.stderr.write(`sluice serve: config ${o.config}: ignoring ${ignored.join(', ')} (no meaning for serve)\n`);
        const take = (flag: string, v: unknown) => {
          if (v !== undefined && (o[flag] === undefined || cmd.getOptionValueSource(flag) === 'default')) o[flag] = v === null ? 'none' : String(v);
        };
        if (f.sink !== undefined && /^postgres(ql)?:\/\//.test(f.sink)) take('sink', f.sink);
        else if (f.sink !== undefined && o.sink === undefined) fileSinkPath = resolve(f.sink);
        for (const k of ['table', 'idField', 'schema', 'pgMode', 'idColumn', 'docColumn', 'dlq', 'dlqTable', 'stopGraceMs', 'sloP99Ms'] as const) take(k, f[k]);
        take('maxItems', f.window?.maxItems);
        take('maxWaitMs', f.window?.maxWaitMs);
        take('queueItems', f.queue?.maxItems);
        take('queueBytes', f.queue?.maxBytes);
        take('policy', f.queue?.policy);
        take('blockTimeoutMs', f.queue?.blockTimeoutMs);
        if (o.columns === undefined) fileColumns = f.columns;
        take('maxInFlight', f.window?.maxInFlight);
        fileWindow = { maxBytes: f.window?.maxBytes };
      }
      const sloMs = o.sloP99Ms !== undefined ? parsePositive('--slo-p99-ms', o.sloP99Ms) : undefined;
      // The controller moves the window; with --flush request a request is cut as soon as it is
      // enqueued and the window would bound only requests larger than maxItems.
      if (sloMs !== undefined && cmd.getOptionValueSource('flush') === 'default') o.flush = 'window';
      const codings = o.codings.split(',').map((s) => s.trim()) as Coding[];
      for (const c of codings) if (!KNOWN_CODINGS.includes(c)) throw invalidOption('--codings', o.codings, `a comma-separated list of ${KNOWN_CODINGS.join(', ')}`);
      const check = o.schema !== undefined ? loadJsonSchema(o.schema) : undefined;
      const columns = parseColumns('--columns', o.columns) ?? fileColumns;
      if (columns && o.sink === undefined) throw invalidOption('--columns', o.columns, 'used with --sink postgres://…');
      let sink: Sink<unknown>;
      let where: string;
      // --- serve → JetStream (issue 24, docs/scale.md) ---
      const toStream = o.sink?.startsWith('nats://') ?? false;
      const stream = toStream
        ? await openStreamSink({
            url: o.sink,
            servers: o.nats === undefined ? [] : parseNatsServers(o.nats),
            replicas: parseIntAtLeast('--replicas', o.replicas, 1),
            publishTimeoutMs: parseIntAtLeast('--publish-timeout-ms', o.publishTimeoutMs, 1),
          })
        : null;
      // --- end serve → JetStream ---
      const pg = o.sink !== undefined && !stream;
      /** The PostgreSQL sink into one table (the server's, or a tenant's), made when missing. */
      const openPg = async (table: string): Promise<Sink<unknown>> => {
        const mod = (await import('../../sinks/postgres.js')) as typeof import('../../sinks/postgres.js');
        return (await new mod.PostgresSink({
          connectionString: o.sink,
          table,
          columns,
          idColumn: o.idColumn,
          docColumn: o.docColumn === 'none' ? null : o.docColumn,
          mode: o.pgMode as never,
        }).open()) as unknown as Sink<unknown>;
      };
      if (stream) {
        sink = stream.sink;
        where = stream.describe;
      } else if (pg) {
        if (!/^postgres(ql)?:\/\//.test(o.sink)) throw invalidOption('--sink', o.sink, 'a postgres:// URL');
        sink = await openPg(o.table);
        where = `postgres table ${o.table}`;
      } else {
        const path = fileSinkPath ?? join(resolve(o.dataDir), 'ingest.ndjson');
        // Idempotent by record id (the id rule: --id-field, else a content hash), so a client's retry stores nothing twice.
        sink = await new FileSink<unknown>({ path, dedupeById: true }).open();
        where = path;
      }
      // Per-tenant tables or streams named in the tokens file (issue 26, docs/serve.md "Tokens
      // and tenants"): opened now, like the default one, so a table serve cannot create or
      // write is one error at start; records are routed by their tenant.
      const tokens = o.tokens !== undefined ? loadTokensFile(o.tokens) : [];
      const tableTargets = [...new Set(tokens.flatMap((t) => (t.table !== undefined ? [t.table] : [])))];
      const streamTargets = [...new Set(tokens.flatMap((t) => (t.stream !== undefined ? [t.stream] : [])))];
      if (tableTargets.length > 0 && !pg) throw invalidOption(`${o.tokens}: table`, tableTargets[0], 'used with --sink postgres://… (a token of a file or stream sink names no table)');
      if (streamTargets.length > 0 && !stream) throw invalidOption(`${o.tokens}: stream`, streamTargets[0], 'used with --sink nats://… (a token of a file or PostgreSQL sink names no stream)');
      if (tableTargets.length > 0 && o.pgMode === 'append')
        throw invalidOption('--pg-mode', o.pgMode, 'an idempotent mode with per-tenant tables (a batch that spans tenants is rewritten whole on a retry)');
      const dlqSpec = (o.dlq as string | undefined) ?? (stream ? `${o.sink.replace(/\/[^/]*$/, '')}/${stream.stream}_DLQ` : pg ? o.sink : join(resolve(o.dataDir), 'dlq.jsonl'));
      const dlqTable = o.dlqTable ?? `${o.table}_dlq`;
      // A tenant's table or stream must not be where the dead letters go (its rows would not be dead-letter entries).
      const [dlqKind, dlqName, sameKind] = isNatsUrl(dlqSpec)
        ? ['stream', parseNatsUrl(dlqSpec).stream ?? 'SLUICE_DLQ', streamTargets]
        : isPgUrl(dlqSpec)
          ? ['table', dlqTable, tableTargets]
          : ['file', undefined, []];
      const clash = sameKind.find((x) => x === dlqName);
      if (clash !== undefined) throw invalidOption(`${o.tokens}: ${dlqKind}`, clash, `another name than the dead-letter ${dlqKind} (${dlqName})`);
      if (tableTargets.length + streamTargets.length > 0) {
        const targets = new Map<string, Sink<unknown>>();
        for (const table of tableTargets) targets.set(table, await openPg(table));
        for (const name of streamTargets) targets.set(name, await stream!.another(name));
        sink = new TargetRoutingSink(sink, targets);
        where += `; per tenant: ${[...tableTargets.map((x) => `table ${x}`), ...streamTargets.map((x) => `stream ${x}`)].join(', ')}`;
      }
      const dlq = await openDeadLetterStore(dlqSpec, { table: dlqTable, nc: stream && dlqSpec.startsWith('nats://') ? stream.nc : undefined });
      // Split-and-retry: a record the sink refuses (a constraint, a column's type) is
      // dead-lettered alone and its line answered `dead-lettered`; the rest commits.
      // A sink that is down is retried until it is back (requests wait, then get 503 once the
      // queue is full); at shutdown the drain waits --stop-grace-ms for it, then gives up.
      const abort = new AbortController();
      // Into a stream, a publish that keeps failing (no leader, timeouts) is not waited out:
      // after --publish-retries its requests are answered 503 + Retry-After and the clients
      // resend (the ids make that safe), so the front door holds nothing.
      const retry = stream ? { budget: parseIntAtLeast('--publish-retries', o.publishRetries, 0), baseMs: 100, maxMs: 1_000 } : undefined;
      const handler = splitAndRetry(sink, { dlq: deadLetterWriter(dlq, { pipeline: 'serve', sink: sink.name, source: 'http' }), retry }, { signal: abort.signal });
      const stopGraceMs = parseNonNegative('--stop-grace-ms', o.stopGraceMs);
      const window = { maxItems: parseIntAtLeast('--max-items', o.maxItems, 1), maxWaitMs: parseNonNegative('--max-wait-ms', o.maxWaitMs), maxInFlight: parseIntAtLeast('--max-in-flight', o.maxInFlight, 1), ...stripUndefined(fileWindow) };
      const queue = {
        policy: o.policy as 'block',
        blockTimeoutMs: parseNonNegative('--block-timeout-ms', o.blockTimeoutMs),
        maxItems: parseIntAtLeast('--queue-items', o.queueItems, 1),
        maxBytes: parseIntAtLeast('--queue-bytes', o.queueBytes, 1),
      };
      const log = (l: string) => process.stderr.write(l + '\n');
      let slo: LiveSlo | null = null;
      if (sloMs !== undefined) {
        const win = resolveWindow(window);
        slo = new LiveSlo({ sloMs, queue: resolveQueue(queue, win), start: win, log: (l) => log(`sluice serve: ${l}`) });
      }
      const srv = await startServer({
        sink,
        handler,
        host: o.host,
        port: parseIntAtLeast('--port', o.port, 0),
        mode: o.mode as IngestMode,
        ack: o.ack as AckMode,
        flush: o.flush as FlushMode,
        check,
        idField: o.idField,
        window,
        queue,
        observers: slo ? [slo.observer] : [],
        limits: {
          maxCompressedBytes: parseIntAtLeast('--max-compressed-bytes', o.maxCompressedBytes, 1),
          maxDecompressedBytes: parseIntAtLeast('--max-decompressed-bytes', o.maxDecompressedBytes, 1),
          maxLineBytes: parseIntAtLeast('--max-line-bytes', o.maxLineBytes, 1),
          maxItemsPerRequest: parseIntAtLeast('--max-items-per-request', o.maxItemsPerRequest, 1),
          maxDepth: parseIntAtLeast('--max-depth', o.maxDepth, 1),
          maxConcurrentRequests: parseIntAtLeast('--max-concurrent-requests', o.maxConcurrentRequests, 1),
          minBodyBytesPerSec: parseNonNegative('--min-body-bytes-per-sec', o.minBodyBytesPerSec),
          bodyRateGraceMs: parseIntAtLeast('--body-rate-grace-ms', o.bodyRateGraceMs, 1),
          headersTimeoutMs: parseIntAtLeast('--headers-timeout-ms', o.headersTimeoutMs, 1),
          requestTimeoutMs: parseIntAtLeast('--request-timeout-ms', o.requestTimeoutMs, 1),
          codings,
        },
        retryAfterSeconds: parseIntAtLeast('--retry-after', o.retryAfter, 0),
        log,
        tls: tlsFiles(o),
        auth: o.tokens !== undefined ? { tokensFile: o.tokens } : undefined,
      });
      // SIGHUP: a renewed certificate or a changed tokens file, without a restart (docs/serve.md).
      process.on('SIGHUP', () => {
        try {
          srv.reload();
        } catch (e) {
          process.stderr.write(`sluice serve: reload refused, keeping the previous files: ${(e as Error).message}\n`);
        }
      });
      if (slo) {
        slo.attach(srv.pipeline);
        slo.registerMetrics(srv.exposition.registry);
      }
      process.stdout.write(`sluice serve: listening on ${srv.url} (POST /ingest, GET /metrics, GET /healthz) → ${where}, dead letters → ${dlq.describe}${slo ? `; window live for p99 ≤ ${sloMs} ms from ${window.maxItems} items / ${window.maxWaitMs} ms` : ''}\n`);
      await new Promise<void>((done) => {
        const stop = (sig: string) => {
          process.stdout.write(`sluice serve: ${sig}: no new requests, draining (a second signal gives up batches still in retry)…\n`);
          const grace = setTimeout(() => abort.abort(), stopGraceMs);
          grace.unref();
          process.once('SIGINT', () => abort.abort());
          process.once('SIGTERM', () => abort.abort());
          srv.close().then(
            (ledger) => {
              process.stdout.write(`sluice serve: ledger ${formatLedger(ledger)}\n`);
              dlq
                .close()
                .then(() => stream?.close())
                .then(done, done);
            },
            (e) => {
              process.stderr.write(`sluice serve: drain failed: ${(e as Error).message}\n`);
              process.exitCode = 1;
              done();
            },
          );
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
    });
}
