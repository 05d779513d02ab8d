import { Command } from 'commander';
import { RecordIdRule } from '../../codec/record-id.js';
import { invalidOption } from '../../core/errors.js';
import { openConsumableDlq } from '../../dlq/access.js';
import { formatReconcile, readSource, reconcileIds, sinkIds } from '../../dlq/reconcile.js';
import { dlqSpecFrom } from './dlq.js';

type Opts = Record<string, string | boolean | undefined>;

/** `sluice reconcile`: source ids against sink, DLQ (and quarantine) ids. Exit 1 when anything is missing or duplicated. */
export function registerReconcile(program: Command): void {
  program
    .command('reconcile')
    .description('compare the ids produced at the source with the sink and the DLQ: produced, committed, dead-lettered, missing, duplicated (exit 1 if any missing or duplicated)')
    .option('--source <log-or-url>', 'embedded log path or nats://host:port/<stream>[/<consumer>] (the consumer: records beyond its ack floor count as unconsumed, not missing)')
    .option('--sink <path-or-url>', 'file sink path (NDJSON) or postgres:// URL')
    .option('--table <name>', 'PostgreSQL sink table', 'sluice_records')
    .option('--id-column <name>', 'PostgreSQL column holding the record id', 'id')
    .option('--id-field <path>', 'the record field the pipeline took ids from (as given to run/serve); else message ids, else content hashes (docs/records.md)')
    .option('--dlq <path-or-url>', 'dead-letter store (default: the one `sluice run` uses for --sink)')
    .option('--dlq-table <name>', 'PostgreSQL dead-letter table (default <table>_dlq)')
    .option('--quarantine <path-or-url>', 'quarantine store of the re-drive, if one was used')
    .option('--quarantine-table <name>', 'PostgreSQL quarantine table', 'sluice_quarantine')
    .option('--json', 'print the report as JSON', false)
    .action(async (o: Opts) => {
      if (!o.source) throw invalidOption('--source', undefined, 'an embedded log path or nats://host:port/<stream>');
      if (!o.sink) throw invalidOption('--sink', undefined, 'a file path or postgres:// URL');
      const d = await openConsumableDlq(dlqSpecFrom(o));
      const q = o.quarantine ? await openConsumableDlq({ dlq: o.quarantine as string, table: o.quarantineTable as string }) : null;
      try {
        const [produced, sink, dlq, quarantine] = await Promise.all([
          readSource(o.source as string, undefined, new RecordIdRule({ idField: o.idField as string | undefined })),
          sinkIds(o.sink as string, o.table as string, o.idColumn as string),
          d.pending(),
          q ? q.pending() : Promise.resolve([]),
        ]);
        const r = reconcileIds(produced.ids, sink, dlq, quarantine.map((e) => e.id), produced.unacked);
        process.stdout.write((o.json ? JSON.stringify(r) : `reconcile: ${formatReconcile(r)}`) + '\n');
        if (!r.ok) process.exitCode = 1;
      } finally {
        await q?.close().catch(() => {});
        await d.close();
      }
    });
}
