#!/usr/bin/env node
// The CLI runs from the compiled output (`npm ci` builds it through `prepare`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('sluice: not built yet: run `npm run build` (npm ci does it for you)\n');
  process.exit(1);
}
await import(entry.href);
