import { readFile } from 'node:fs/promises';
import { loadJsonSchema } from '../../codec/json-schema.js';
import { Command, Option } from 'commander';
import { invalidOption } from '../../core/errors.js';
import { isPgUrl, openConsumableDlq, type DlqSpec } from '../../dlq/access.js';
import { versionLabel, loadTransform, openMainStream, PostgresRevalidator, redrive, jsonRevalidator, noRevalidator, type Revalidator } from '../../dlq/redrive.js';
import type { DeadLetterEntry } from '../../dlq/store.js';
import { parseColumns, parseIntAtLeast } from '../parse.js';

type Opts = Record<string, string | boolean | undefined>;

/** `--dlq`, or the default `sluice run` uses for `--sink` (`<sink>.dlq.jsonl`, table `<table>_dlq`). */
export function dlqSpecFrom(o: Opts): DlqSpec {
  const sink = o.sink as string | undefined;
  const table = (o.table as string | undefined) ?? 'sluice_records';
  const dlq = (o.dlq as string | undefined) ?? (sink ? (isPgUrl(sink) ? sink : `${sink}.dlq.jsonl`) : undefined);
  if (!dlq) throw invalidOption('--dlq', undefined, 'a JSON-lines path, postgres:// URL or nats://host:port/<stream> (or --sink for its default DLQ)');
  return { dlq, table: (o.dlqTable as string | undefined) ?? (isPgUrl(dlq) ? `${table}_dlq` : undefined) };
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

/** `count, oldest age, grouped by error code` — the body of `sluice dlq list`. */
export function summarize(describe: string, entries: readonly DeadLetterEntry[], nowMs = Date.now()): string {
  if (entries.length === 0) return `dlq ${describe}: empty`;
  const oldest = Math.min(...entries.map((e) => Date.parse(e.deadLetteredAt)));
  const groups = new Map<string, { n: number; oldest: number }>();
  for (const e of entries) {
    const k = `${e.code} ${e.sinkCode ?? '-'}`;
    const g = groups.get(k) ?? { n: 0, oldest: Infinity };
    g.n++;
    g.oldest = Math.min(g.oldest, Date.parse(e.deadLetteredAt));
    groups.set(k, g);
  }
  const rows = [...groups].sort((a, b) => b[1].n - a[1].n).map(([k, g]) => `  ${k.padEnd(32)} ${String(g.n).padStart(8)}  oldest ${formatAge(nowMs - g.oldest)}`);
  return [`dlq ${describe}: ${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}, oldest ${formatAge(nowMs - oldest)} (${new Date(oldest).toISOString()})`, ...rows].join('\n');
}

function preview(data: string): string {
  const b = Buffer.from(data, 'base64');
  const s = b.toString('utf8').replace(/[\x00-\x1f\x7f]/g, '.');
  return s.length > 120 ? `${s.slice(0, 120)}…` : s;
}

const dlqOptions = (c: Command) =>
  c
    .option('--dlq <path-or-url>', 'dead-letter store: JSON-lines path, postgres:// URL or nats://host:port/<stream>')
    .option('--dlq-table <name>', 'PostgreSQL dead-letter table (default <table>_dlq)')
    .option('--sink <path-or-url>', 'the sink: its default DLQ when --dlq is absent; with redrive, what to revalidate against')
    .option('--table <name>', 'PostgreSQL sink table (default sluice_records)');

/** `sluice dlq list|show|redrive`. Wiring only; the logic lives in src/dlq/. */
export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('inspect and re-drive the dead-letter queue (see docs/dlq.md)');

  dlqOptions(dlq.command('list').description('count, oldest age, and entries grouped by error code; an empty or absent DLQ is one line and exit 0')).action(async (o: Opts) => {
    const d = await openConsumableDlq(dlqSpecFrom(o));
    try {
      if (!(await d.exists())) {
        process.stdout.write(`dlq ${d.describe}: absent (nothing was dead-lettered there)\n`);
        return;
      }
      process.stdout.write(summarize(d.describe, await d.pending()) + '\n');
    } finally {
      await d.close();
    }
  });

  dlqOptions(dlq.command('show').description('print the pending entries (filters: --id, --code)'))
    .option('--id <id>', 'only this record id')
    .option('--code <code>', 'only entries whose code or driver code (SQLSTATE, VALIDATION) is this')
    .option('--limit <n>', 'at most this many entries', '50')
    .option('--json', 'one JSON entry per line (with the record bytes, base64)', false)
    .action(async (o: Opts) => {
      const limit = parseIntAtLeast('--limit', o.limit, 1);
      const d = await openConsumableDlq(dlqSpecFrom(o));
      try {
        if (!(await d.exists())) {
          process.stdout.write(`dlq ${d.describe}: absent (nothing was dead-lettered there)\n`);
          return;
        }
        const all = (await d.pending()).filter((e) => (!o.id || e.id === o.id) && (!o.code || e.code === o.code || e.sinkCode === o.code));
        for (const e of all.slice(0, limit)) {
          if (o.json) process.stdout.write(JSON.stringify(e) + '\n');
          else
            process.stdout.write(
              `${e.id}  ${e.code}/${e.sinkCode ?? '-'}  attempts=${e.attempts}  at=${e.deadLetteredAt}  from=${e.source}@${e.offset ?? '-'}  ${e.message}\n    ${preview(e.data)}\n`,
            );
        }
        if (!o.json) process.stdout.write(`${Math.min(limit, all.length)} of ${all.length} matching entries shown\n`);
      } finally {
        await d.close();
      }
    });

  dlqOptions(dlq.command('redrive').description('fix, revalidate and publish dead letters back into the main stream with their original ids; crash-safe (docs/dlq.md)'))
    .option('--to <log-or-url>', 'main stream: embedded log path or nats://host:port/<stream> (default: the source the entries came from)')
    .option('--nats-url <url>', 'NATS server for a JetStream source named by the entries (default $NATS_URL or nats://127.0.0.1:4222)')
    .option('--transform <module>', 'ES module exporting `version` and `transform(record)`: applied to each record before revalidation')
    .option('--migrate <sql-file>', 'SQL run on the PostgreSQL sink (--sink postgres://…) before revalidation; with --dry-run inside a rolled-back transaction')
    .option('--no-validate', 'publish without revalidating')
    .option('--schema <file>', 'file sink: revalidate records against this JSON Schema (else: each must be UTF-8 JSON)')
    .option('--columns <map>', 'PostgreSQL sink: the column mapping the pipeline uses (column=field,…), for revalidation')
    .option('--id-column <name>', 'PostgreSQL sink: the id column (default id)')
    .option('--doc-column <name>', "PostgreSQL sink: the jsonb column for the whole record (default doc when the table has it; 'none')")
    .option('--dry-run', 'revalidate and report what would pass and fail again; writes nothing', false)
    .addOption(new Option('--on-fail <where>', 'records that fail again go back to the DLQ (attempts + 1) or to the quarantine').choices(['dlq', 'quarantine']).default('dlq'))
    .option('--quarantine <path-or-url>', 'quarantine store (JSON-lines path, postgres:// URL, nats://host:port/<stream>)')
    .option('--quarantine-table <name>', 'PostgreSQL quarantine table (default sluice_quarantine)')
    .option('--cursor <file>', 're-drive cursor (default: <dlq file>.redrive.json, or ./.sluice-redrive-<dlq>.json)')
    .option('--chunk <n>', 'records per durable publish', '500')
    .option('--progress', 'print each step (planned, published k/n, returned, resolved)', false)
    .action(async (o: Opts) => {
      const chunk = parseIntAtLeast('--chunk', o.chunk, 1);
      const d = await openConsumableDlq(dlqSpecFrom(o));
      const quarantine = o.quarantine ? await openConsumableDlq({ dlq: o.quarantine as string, table: (o.quarantineTable as string | undefined) ?? 'sluice_quarantine' }) : null;
      const sink = o.sink as string | undefined;
      let rv: Revalidator = noRevalidator;
      if (o.validate !== false) rv = sink && isPgUrl(sink) ? new PostgresRevalidator(sink, (o.table as string | undefined) ?? 'sluice_records', {
              columns: parseColumns('--columns', o.columns as string | undefined),
              idColumn: o.idColumn as string | undefined,
              docColumn: o.docColumn === 'none' ? null : (o.docColumn as string | undefined),
            }) : o.schema ? jsonRevalidator(schemaCheck(o.schema as string)) : jsonRevalidator();
      if (o.migrate && !(rv instanceof PostgresRevalidator)) throw invalidOption('--migrate', o.migrate, 'used with --sink postgres://… (and validation on)');
      try {
        const migrationSql = o.migrate ? await readFile(o.migrate as string, 'utf8').catch((e: NodeJS.ErrnoException) => {
          throw invalidOption('--migrate', o.migrate, `a readable SQL file (${e.code ?? e.message})`);
        }) : null;
        const transform = o.transform ? await loadTransform(o.transform as string) : null;
        const r = await redrive({
          dlq: d,
          openTarget: (entries) => openMainStream(o.to as string | undefined, entries, { natsUrl: o.natsUrl as string | undefined }),
          revalidator: rv,
          transform,
          migrationSql,
          dryRun: Boolean(o.dryRun),
          onFail: o.onFail as 'dlq' | 'quarantine',
          quarantine,
          cursorPath: o.cursor as string | undefined,
          chunk,
          onProgress: o.progress ? (ev) => process.stdout.write(`redrive progress: ${ev}\n`) : undefined,
        });
        const head = r.dryRun ? 'redrive (dry run, nothing written)' : 'redrive';
        process.stdout.write(
          `${head}: ${r.dlq}${r.target ? ` → ${r.target}` : ''}${r.transform ? ` transform ${versionLabel(r.transform.version)}` : ''}${r.migrated ? ' migrated' : ''}${r.resumed ? ' (resumed an interrupted run)' : ''}: ` +
            `pending=${r.pending} pass=${r.pass} fail=${r.fail}` +
            (r.dryRun ? '' : ` published=${r.published} already_published=${r.alreadyPublished} returned_to_dlq=${r.returnedToDlq} quarantined=${r.quarantined} resolved=${r.resolved}`) +
            '\n',
        );
        for (const f of r.failures.slice(0, 20)) process.stdout.write(`  ${r.dryRun ? 'would fail' : 'fails again'}: ${f.id} (attempts ${f.attempts}): ${f.reason}\n`);
        if (r.failures.length > 20) process.stdout.write(`  … and ${r.failures.length - 20} more\n`);
      } finally {
        await rv.close().catch(() => {});
        await quarantine?.close().catch(() => {});
        await d.close();
      }
    });
}

/** A JSON Schema file as a throwing check (the revalidator's contract). */
function schemaCheck(path: string): (v: unknown) => void {
  const check = loadJsonSchema(path);
  return (v) => {
    const problem = check(v);
    if (problem !== null) throw new Error(problem);
  };
}
