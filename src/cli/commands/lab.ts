import { Command, Option } from 'commander';
import { invalidOption } from '../../core/errors.js';
import { EXPERIMENTS, findExperiment } from '../../lab/registry.js';
import { runExperiment } from '../../lab/runner.js';
import { buildReport } from '../../lab/report.js';
import { createProgress } from '../../lab/progress-tty.js';
import { failed as checkFailed } from '../../lab/checks.js';
import type { SinkKind } from '../../lab/types.js';
import { parsePositive } from '../parse.js';

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
    .option('--no-report', 'do not rebuild the report after the run');
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
