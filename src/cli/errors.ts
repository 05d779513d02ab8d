/** Turns any error into one line on stderr and an exit code: 2 for bad input, 1 otherwise. */
import { ErrorCode, SluiceError } from '../core/errors.js';

export function exitWithError(e: unknown): never {
  if (e instanceof SluiceError) {
    process.stderr.write(`sluice: ${e.message} [${e.code}]\n`);
    process.exit(e.code === ErrorCode.InvalidOption ? 2 : 1);
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' && err.message) {
    process.stderr.write(`sluice: ${err.message} [${err.code}]\n`);
    process.exit(1);
  }
  process.stderr.write(`sluice: ${err?.stack ?? String(e)}\n`);
  process.exit(1);
}
