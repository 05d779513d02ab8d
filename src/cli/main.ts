#!/usr/bin/env node
/**
 * The `sluice` command: argument parsing and wiring only. Each command lives in
 * ./commands/<name>.ts and is registered here.
 */
import { Command, CommanderError } from 'commander';
import { registerLab } from './commands/lab.js';
import { registerDlq } from './commands/dlq.js';
import { registerReconcile } from './commands/reconcile.js';
import { registerRun } from './commands/run.js';
import { registerServe } from './commands/serve.js';
import { exitWithError } from './errors.js';

const program = new Command();
program
  .name('sluice')
  .description('A batching ingest pipeline, and the lab that proves what it claims.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

registerLab(program);
registerRun(program);
registerServe(program);
registerDlq(program);
registerReconcile(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // Commander already printed its one-line message (or the help / version text).
    process.exit(e.exitCode === 0 ? 0 : 2);
  }
  exitWithError(e);
}
