import { Command, Option } from 'commander';
/**
 * `sluice lab`: registered on the product's CLI when this package is installed (the product
 * loads it only for `sluice lab`), and runnable alone as `sluice-lab` (`npm run lab`).
 */
import { invalidOption } from 'sluice';
import { EXPERIMENTS, findExperiment } from './registry.js';
import { runExperiment } from './runner.js';
import { buildReport } from './report.js';
import { writeResultsDoc } from './results-doc.js';
import { createProgress } from './progress-tty.js';
import { failed as checkFailed } from './checks.js';
import type { SinkKind } from './types.js';

function parsePositive(flag: string, v: unknown): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n <= 0) throw invalidOption(flag, v, 'a number > 0');
  return n;
}

export function registerLab(program: Command): void {
  const cmd = program
    .command('lab')
    .description(`run lab experiments and write the report (experiments: ${EXPERIMENTS.map((e) => e.name).join(', ')}; default: all)`)
    .argument('[experiments...]', 'experiments to run, in order (default: all)')
    .option('--quick', 'shorter runs (same ladders and grids)', false)
    .option('--out <dir>', 'report directory', 'report')
    .addOption(new Option('--sink <kind>', 'sink for sink-bound experiments').choices(['file', 'postgres']).default('file'))
    .option('--slo-ms <n>', 'p99 end-to-end latency SLO (ms)', '20')
    .option('--database-url <url>', 'PostgreSQL URL (default: $DATABASE_URL)')
    .option('--nats-url <url>', 'NATS URL (default: $NATS_URL)')
    .option('--keep', 'keep each experiment\'s scratch directory', false)
    .option('--no-report', 'do not rebuild the report after the run')
    .option('--results-doc <file>', 'also write this Markdown summary of every result file (npm run lab: docs/results.md)');
  const seen = new Set<string>();
  for (const e of EXPERIMENTS)
    for (const o of e.cliOptions ?? []) {
      if (seen.has(o.flags)) continue;
      seen.add(o.flags);
      cmd.option(o.flags, `${o.description} (${e.name})`, o.defaultValue as string | boolean | undefined);
    }
  cmd.action(async (names: string[], opts: Record<string, unknown>) => {
    const selected = names.length === 0 ? EXPERIMENTS : names.map((n) => findExperiment(n) ?? fail(n));
    const sloMs = parsePositive('--slo-ms', opts.sloMs);
    const sink = opts.sink as SinkKind;
    const databaseUrl = (opts.databaseUrl as string | undefined) ?? process.env.DATABASE_URL;
    if (sink === 'postgres' && !databaseUrl) throw invalidOption('--database-url', undefined, 'a postgres:// URL (or DATABASE_URL) with --sink postgres');
    const progress = createProgress();
    const failed: string[] = [];
    const undecided: string[] = [];
    for (const exp of selected) {
      const r = await runExperiment(exp, {
        quick: Boolean(opts.quick),
        outDir: opts.out as string,
        sloMs,
        sink,
        databaseUrl,
        natsUrl: (opts.natsUrl as string | undefined) ?? process.env.NATS_URL,
        keep: Boolean(opts.keep),
        args: opts,
        progress,
        log: (l) => process.stdout.write(l + '\n'),
      });
      if (r.checks.some(checkFailed)) failed.push(exp.name);
      else if (r.checks.some((c) => c.verdict === 'undecidable')) undecided.push(exp.name);
    }
    if (opts.report !== false) {
      const files = await buildReport(opts.out as string);
      process.stdout.write(`report: ${files.join(', ')}\n`);
    }
    if (typeof opts.resultsDoc === 'string') process.stdout.write(`results: ${await writeResultsDoc(opts.out as string, opts.resultsDoc)}\n`);
    if (failed.length > 0) {
      process.stderr.write(`sluice: checks failed in ${failed.join(', ')} (see ${opts.out}/results/)\n`);
      process.exitCode = 1;
    } else if (undecided.length > 0) {
      // Distinct from a failure (docs/window.md, *Verdicts on a noisy machine*): no check failed,
      // but some comparisons were not decidable on this machine now; each says what it needs.
      process.stderr.write(`sluice: no check failed; not decidable here in ${undecided.join(', ')} (see ${opts.out}/results/)\n`);
      process.exitCode = 3;
    }
  });
}

function fail(name: string): never {
  throw invalidOption('experiment', name, `one of ${EXPERIMENTS.map((e) => e.name).join(', ')}`);
}
