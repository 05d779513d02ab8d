#!/usr/bin/env node
/** `sluice-lab`: the lab's own command (`npm run lab` at the repository root). */
import { Command, CommanderError } from 'commander';
import { isSluiceError } from 'sluice';
import { registerLab } from './cli.js';

const program = new Command();
program.name('sluice-lab').description('The Sluice lab: experiments that prove what Sluice claims, and their report.').exitOverride();
registerLab(program);
try {
  await program.parseAsync(['lab', ...process.argv.slice(2)], { from: 'user' });
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  if (isSluiceError(e)) {
    process.stderr.write(`sluice-lab: ${e.message} [${e.code}]\n`);
    process.exit(2);
  }
  process.stderr.write(`sluice-lab: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}
