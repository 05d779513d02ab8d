import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];
let n = 0;

/** A fresh temp file path for this process, removed by `cleanTmp()`. */
export function tmpFile(tag: string): string {
  const p = join(tmpdir(), `sluice-bench-${process.pid}-${tag}-${n++}.ndjson`);
  made.push(p);
  return p;
}

export async function cleanTmp(): Promise<void> {
  await Promise.all(made.splice(0).map((p) => rm(p, { force: true })));
}
