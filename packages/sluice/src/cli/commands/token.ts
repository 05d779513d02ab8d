/** `sluice token new|hash`: tokens for `sluice serve --tokens` (docs/serve.md, "Running it on a network"). */
import type { Command } from 'commander';
import { invalidOption } from '../../core/errors.js';
import { hashToken, newToken, parseTokensFile } from '../../sources/auth.js';

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export function registerToken(program: Command): void {
  const token = program.command('token').description('make tokens for `sluice serve --tokens` (the file stores only their hashes)');
  token
    .command('new')
    .description('print a new random token (256 bits) on stdout and its tokens-file entry on stderr')
    .option('--name <tenant>', 'tenant name for the entry', 'tenant')
    .option('--routes <list>', 'routes the token may use, comma-separated (ingest, bulk, otlp, loki, metrics, healthz)', 'ingest')
    .option('--table <name>', "the tenant's own PostgreSQL table (serve --sink postgres://…)")
    .option('--stream <name>', "the tenant's own JetStream stream (serve --sink nats://…)")
    .action((o: { name: string; routes: string; table?: string; stream?: string }) => {
      const t = newToken();
      const entry = { name: o.name, hash: hashToken(t), routes: o.routes.split(',').map((s) => s.trim()), ...(o.table !== undefined ? { table: o.table } : {}), ...(o.stream !== undefined ? { stream: o.stream } : {}) };
      // Checked as serve will read it, before a token is printed for an entry serve would refuse.
      parseTokensFile(JSON.stringify({ tokens: [entry] }), 'sluice token new');
      process.stdout.write(t + '\n');
      process.stderr.write(JSON.stringify(entry) + '\n');
    });
  token
    .command('hash')
    .description('read a token on stdin (not argv: it would show in ps and shell history) and print its hash line, sha256:<hex>')
    .action(async () => {
      const t = (await readStdin()).replace(/\r?\n$/, '');
      if (t.length === 0) throw invalidOption('token', '', 'a token on stdin');
      // The hash is fast on purpose (src/sources/auth.ts): it protects high-entropy tokens only.
      if (t.length < 20) process.stderr.write('sluice token hash: warning: a token this short can be guessed from its hash; use `sluice token new`\n');
      process.stdout.write(hashToken(t) + '\n');
    });
}
