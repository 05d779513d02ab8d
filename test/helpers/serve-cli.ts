/** `sluice serve` from source in a child process: ready once it prints its URL, with its output kept. */
import { spawn } from 'node:child_process';

export function startServe(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  const ready = (async () => {
    for (const t0 = Date.now(); !/listening on (https?:\/\/\S+)/.test(out); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() - t0 > 30_000) throw new Error(`serve did not start: ${err}`);
      if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${err}`);
    }
    return /listening on (https?:\/\/\S+)/.exec(out)![1];
  })();
  return { child, exited, ready, out: () => out, err: () => err };
}
