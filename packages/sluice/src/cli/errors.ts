/** Turns any error into one line on stderr and an exit code: 2 for bad input, 1 otherwise. */
import { ErrorCode, SluiceError } from '../core/errors.js';

export function exitWithError(e: unknown): never {
  // By shape, not `instanceof`: the lab package may hold its own copy of sluice's classes.
  if (e instanceof SluiceError || (e instanceof Error && typeof (e as SluiceError).code === 'string' && (e as SluiceError).code.startsWith('SLUICE_'))) {
    const code = (e as SluiceError).code;
    process.stderr.write(`sluice: ${e.message} [${code}]\n`);
    process.exit(code === ErrorCode.InvalidOption ? 2 : 1);
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' && err.message) {
    process.stderr.write(`sluice: ${err.message} [${err.code}]\n`);
    process.exit(1);
  }
  process.stderr.write(`sluice: ${err?.stack ?? String(e)}\n`);
  process.exit(1);
}
