/** `sluice tune`: flags and wiring only; the measuring lives in src/tune/ (docs/tune.md). */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { invalidOption } from '../../core/errors.js';
import { productChooser } from '../../tune/chooser.js';
import { generatedRecords, isPg, openScratch, sampleRecords } from '../../tune/measure.js';
import { progressFor } from '../../tune/progress.js';
import { summaryLines, writeOutputs } from '../../tune/report.js';
import { tune } from '../../tune/tune.js';
import { parseColumns, parseIntAtLeast, parsePositive } from '../parse.js';

export function registerTune(program: Command): void {
  program
    .command('tune')
    .description('measure your sink with your records and recommend the window that holds a p99 SLO at your peak (writes only a scratch file or table it removes; see docs/tune.md)')
    .requiredOption('--sink <path-or-url>', 'file path (NDJSON, one synchronous write per batch) or postgres:// URL (with --table)')
    .requiredOption('--slo-p99-ms <n>', 'p99 end-to-end latency objective (ms)')
    .option('--table <name>', 'PostgreSQL: your table; tune writes to a scratch copy of its shape (LIKE it), then drops it', 'sluice_records')
    .option('--columns <map>', 'PostgreSQL columns filled from record fields, as for run: column=field,…')
    .addOption(new Option('--pg-mode <mode>', 'PostgreSQL write path, as for run (default copy)').choices(['copy', 'staged', 'insert', 'json', 'auto', 'append']))
    .option('--id-column <name>', 'PostgreSQL column holding the record id (default id)')
    .option('--doc-column <name>', "PostgreSQL jsonb column for the whole record ('none' for none)")
    .option('--peak-rate <n>', 'the peak load to hold (records/s); default: 80% of the measured capacity at the SLO')
    .option('--trace <file>', 'an arrivals trace (NDJSON with timestamps): its busiest second is the peak')
    .option('--record-sample <file>', 'NDJSON sample of your records (any JSON values); default: generated records of --record-bytes')
    .option('--record-bytes <n>', 'size of generated records without --record-sample', '256')
    .option('--quick', 'fewer sizes, windows and repetitions: under a minute')
    .option('--out <dir>', 'where tune.json, tune.md, tune.html and tune.config.json go', './sluice-tune')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const sloMs = parsePositive('--slo-p99-ms', o.sloP99Ms);
      if (o.peakRate !== undefined && o.trace !== undefined) throw invalidOption('--trace', o.trace, 'either --peak-rate or --trace, not both');
      const peakPerSec = o.peakRate !== undefined ? parsePositive('--peak-rate', o.peakRate) : undefined;
      const rec = o.recordSample !== undefined ? sampleRecords(o.recordSample as string) : generatedRecords(parseIntAtLeast('--record-bytes', o.recordBytes, 32));
      const sinkSpec = o.sink as string;
      const pg = isPg(sinkSpec);
      const columns = parseColumns('--columns', o.columns as string | undefined);
      if (!pg && (columns || o.pgMode !== undefined)) throw invalidOption('--columns', o.columns ?? o.pgMode, 'used with --sink postgres://…');
      const scratch = await openScratch({
        sink: pg ? sinkSpec : resolve(sinkSpec),
        table: o.table as string,
        columns,
        idColumn: o.idColumn as string | undefined,
        docColumn: o.docColumn === 'none' ? null : (o.docColumn as string | undefined),
        pgMode: o.pgMode as never,
      });
      // The scratch target goes whatever happens: a signal removes it before exiting.
      const onSignal = () => {
        process.stderr.write('\nsluice tune: interrupted: removing the scratch target\n');
        scratch.remove().finally(() => process.exit(130));
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      process.stdout.write(`sluice tune: SLO p99 ≤ ${sloMs} ms on ${scratch.where}, ${rec.describe}${o.quick ? ', quick' : ''}\n`);
      const bar = progressFor(process.stderr);
      let result;
      try {
        result = await tune(scratch.sink, rec, scratch.where, productChooser, { sloMs, peakPerSec, tracePath: o.trace as string | undefined, quick: o.quick === true, progress: (d, t, p) => bar.update(d, t, p) });
      } finally {
        bar.end();
        await scratch.remove();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      const files = await writeOutputs(resolve(o.out as string), result);
      for (const l of summaryLines(result)) process.stdout.write(`${l}\n`);
      process.stdout.write(`wrote ${files.join(', ')}\n`);
      if (result.verdict !== 'recommended') process.exitCode = 1;
    });
}
