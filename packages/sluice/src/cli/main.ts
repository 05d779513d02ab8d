#!/usr/bin/env node
/**
 * The `sluice` command: argument parsing and wiring only. Each command lives in
 * ./commands/<name>.ts and is registered here.
 */
import { Command, CommanderError } from 'commander';
import { registerDlq } from './commands/dlq.js';
import { registerReconcile } from './commands/reconcile.js';
import { registerRun } from './commands/run.js';
import { registerServe } from './commands/serve.js';
import { registerTune } from './commands/tune.js';
import { registerToken } from './commands/token.js';
import { exitWithError } from './errors.js';

const program = new Command();
program
  .name('sluice')
  .description('A batching ingest pipeline, and the lab that proves what it claims.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

// The lab is a package of its own (@sluice/lab): loaded only for `sluice lab`, so `run` and
// `serve` never pay for its charts and experiments, and the product installs without it.
if (process.argv[2] === 'lab') {
  const spec = '@sluice/lab/cli';
  let lab: { registerLab(p: Command): void };
  try {
    lab = (await import(spec)) as typeof lab;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    process.stderr.write('sluice: `sluice lab` needs the lab package: npm i @sluice/lab (or run `npm run lab` in the Sluice repository)\n');
    process.exit(2);
  }
  lab.registerLab(program);
} else {
  program.command('lab').description('run the lab and write its report (needs the @sluice/lab package; see `sluice lab --help`)');
}
registerRun(program);
registerServe(program);
registerDlq(program);
registerReconcile(program);
registerTune(program);
registerToken(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // Commander already printed its one-line message (or the help / version text).
    process.exit(e.exitCode === 0 ? 0 : 2);
  }
  exitWithError(e);
}
