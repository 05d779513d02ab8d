#!/usr/bin/env node
// `sluice-lab [experiments…]`: the lab alone (same as `sluice lab`), from the compiled output.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('sluice-lab: not built yet: run `npm run build` at the repository root (npm ci does it for you)\n');
  process.exit(1);
}
await import(entry.href);
