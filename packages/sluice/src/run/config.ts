/**
 * `sluice run` configuration: a JSON file (`--config FILE`) and/or flags, validated once with
 * zod; flags override the file. A bad value becomes one SLUICE_INVALID_OPTION line naming
 * the file, the field and what would be valid. See docs/run.md.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ErrorCode, SluiceError } from '../core/errors.js';

const posInt = z.number().int().min(1);
const nonNeg = z.number().min(0);

export const RunConfigSchema = z
  .object({
    /** Embedded log path, or `nats://host:port/<stream>/<consumer>`. */
    source: z.string().min(1),
    /** File path (NDJSON, one synchronous write per batch) or `postgres://…` URL. */
    sink: z.string().min(1),
    /** PostgreSQL sink table: created as (id, received_at, doc jsonb) when missing; an existing table is used as it is (docs/records.md). */
    table: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/).default('sluice_records'),
    /** PostgreSQL columns filled from record fields: `{ column: "field.path" }`. A value the column's type refuses dead-letters that record only. */
    columns: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/), z.string().min(1)).optional(),
    /** Record field holding the id (dotted path). Else the source's message id, else a content hash (docs/records.md). */
    idField: z.string().min(1).optional(),
    /** JSON Schema file every record must match; a record that does not is dead-lettered. Off by default. */
    schema: z.string().min(1).optional(),
    /** PostgreSQL write path (docs/sinks.md). Default: the sink's (`copy`, idempotent). `append` is not idempotent: a redelivery fails with 23505 and split-and-retry would dead-letter records already stored. */
    pgMode: z.enum(['copy', 'staged', 'insert', 'json', 'auto', 'append']).optional(),
    /** PostgreSQL column holding the record id (unique). @default 'id' */
    idColumn: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/).optional(),
    /** PostgreSQL jsonb column for the whole record; null: none. @default 'doc' when the table has it */
    docColumn: z.union([z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/), z.null()]).optional(),
    /** Dead-letter store: a JSON-lines path, `postgres://…` (table `dlqTable`), or `nats://host:port/<stream>`. Default: `<sink file>.dlq.jsonl`, or the table `<table>_dlq` for a postgres sink. */
    dlq: z.string().min(1).optional(),
    dlqTable: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/).optional(),
    strategy: z.enum(['split-and-retry', 'abort-whole-batch']).default('split-and-retry'),
    name: z.string().min(1).default('sluice'),
    window: z
      .object({ maxItems: posInt, maxBytes: posInt, maxWaitMs: nonNeg, maxInFlight: posInt })
      .partial()
      .strict()
      .default({}),
    queue: z
      .object({ maxItems: posInt, maxBytes: posInt, policy: z.enum(['block', 'drop-newest', 'drop-oldest']), blockTimeoutMs: nonNeg })
      .partial()
      .strict()
      .default({}),
    retry: z
      .object({
        budget: z.union([z.number().int().min(0), z.literal('infinite')]),
        baseMs: nonNeg,
        maxMs: nonNeg,
        jitter: z.number().min(0).max(1),
        writeTimeoutMs: z.number().positive(),
      })
      .partial()
      .strict()
      .default({}),
    itemRetries: z.number().int().min(0).default(0),
    /**
     * With a finite `retry.budget`: dead-letter a batch whose transient retries ran out, and
     * ack it. Off: such a batch fails loudly (the process exits non-zero, the log keeps the
     * records). Only for sinks that never come back by themselves; a down sink is not poison.
     */
    deadLetterOnRetryExhausted: z.boolean().default(false),
    /** On SIGINT/SIGTERM, how long the drain may wait for a sink that is down before giving up its batches (never acked: the log keeps them). A second signal gives up at once. */
    stopGraceMs: nonNeg.default(30_000),
    /** NATS consumer: redelivery delay of an unacknowledged message (ms). */
    ackWaitMs: posInt.default(30_000),
    // --- several processes on one stream (docs/scale.md) ---
    /** More NATS servers (`host:port`) besides the source URL's host: tried at start-up and on every reconnect. */
    nats: z.array(z.string().min(1)).optional(),
    /** Replicas of the stream when `run` creates it (JetStream cluster: 3). An existing stream is used as it is. @default 1 */
    replicas: z.number().int().min(1).max(5).default(1),
    /** How many `sluice run` workers share the durable consumer: sizes its MaxAckPending (see `maxAckPending`). */
    workers: posInt.optional(),
    /**
     * The consumer's MaxAckPending: messages delivered and not yet acked, over all its workers.
     * @default workers × (queue.maxItems + maxInFlight × maxItems + 256 pulled ahead) when
     * `workers` is given; else the consumer's own (50,000 when `run` creates it).
     */
    maxAckPending: posInt.optional(),
    metricsPort: z.number().int().min(0).max(65535).optional(),
    /** p99 end-to-end latency objective (ms): the AIMD controller moves the window live from `window` to hold it (docs/tune.md). Off by default. */
    sloP99Ms: z.number().positive().optional(),
  })
  .strict();

export type RunConfig = z.infer<typeof RunConfigSchema>;

function firstIssue(err: z.ZodError): string {
  const i = err.issues[0];
  const path = i.path.length ? i.path.join('.') : '(top level)';
  return `${path}: ${i.message}`;
}

/** Reads and validates a config file (without the flag overrides). */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SluiceError(ErrorCode.InvalidOption, `cannot read config ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new SluiceError(ErrorCode.InvalidOption, `invalid config ${path}: ${(e as Error).message}`);
  }
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const prev = out[k];
    out[k] = prev && typeof prev === 'object' && !Array.isArray(prev) && v && typeof v === 'object' && !Array.isArray(v) ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/** File (if any) overlaid with flag values (undefined = not given), validated. */
export function resolveRunConfig(file: string | undefined, overrides: Record<string, unknown>): RunConfig {
  const base = file ? readConfigFile(file) : {};
  const merged = deepMerge(base, overrides);
  const r = RunConfigSchema.safeParse(merged);
  if (!r.success) throw new SluiceError(ErrorCode.InvalidOption, `invalid ${file ? `config ${file}` : 'options'}: ${firstIssue(r.error)}`, { details: { issues: r.error.issues } });
  return r.data;
}

/**
 * `sluice serve --config FILE`: the same JSON shape as `run`'s (a `sluice tune` snippet is
 * accepted by both as is), every field optional and validated the same way. Keys that have no
 * meaning for serve (source, strategy, retry, …) are returned in `ignored` for one note.
 */
export const SERVE_APPLICABLE = ['sink', 'table', 'columns', 'idField', 'schema', 'pgMode', 'idColumn', 'docColumn', 'dlq', 'dlqTable', 'window', 'queue', 'stopGraceMs', 'sloP99Ms'] as const;

export function readServeConfig(file: string): { cfg: Partial<RunConfig>; ignored: string[] } {
  const raw = readConfigFile(file);
  const r = RunConfigSchema.partial().safeParse(raw);
  if (!r.success) throw new SluiceError(ErrorCode.InvalidOption, `invalid config ${file}: ${firstIssue(r.error)}`, { details: { issues: r.error.issues } });
  const cfg: Partial<RunConfig> = {};
  const ignored: string[] = [];
  for (const k of Object.keys(raw)) {
    if ((SERVE_APPLICABLE as readonly string[]).includes(k)) (cfg as Record<string, unknown>)[k] = (r.data as Record<string, unknown>)[k];
    else ignored.push(k);
  }
  return { cfg, ignored };
}
