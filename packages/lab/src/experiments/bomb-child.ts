/**
 * Child-process entry of the `bomb` experiment: one HTTP ingest server per process, so each
 * can be put under its own memory limit and killed by the kernel without taking the lab down.
 *
 *   node --import tsx src/lab/experiments/bomb-child.ts '<json BombChildSpec>'   (or the compiled .js)
 *
 * - `capped`: `startServer` (src/sources/http.ts) with its caps, file sink in `dataDir`.
 * - `naive`: what a hand-rolled server does: buffer the whole body, undo every listed coding
 *   with zlib's *Sync functions (no cap), split lines, JSON.parse each. The contrast.
 *
 * Prints `{"ready":true,"url":…,"pid":…}` on stdout once listening. SIGTERM: the capped
 * server drains and prints `{"ledger":…}` before exiting.
 */
import http from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { FileSink } from 'sluice';
import { startServer, type ServeLimits, type ServeOptions } from 'sluice';

export interface BombChildSpec {
  variant: 'capped' | 'naive';
  dataDir: string;
  limits?: Partial<ServeLimits>;
  /** Server settings besides the limits (default: the server's defaults). */
  serve?: Pick<ServeOptions, 'flush' | 'window' | 'auth'>;
}

function naiveServer(): Promise<string> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end('{"status":"ok"}\n');
    }
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      try {
        let body: Buffer = Buffer.concat(parts);
        const codings = String(req.headers['content-encoding'] ?? '')
          .split(',')
          .map((s) => s.trim().toLowerCase())
          .filter((s) => s && s !== 'identity');
        // Undo the codings in reverse order of application, as RFC 9110 says; no cap.
        for (const c of codings.reverse()) {
          if (c === 'gzip') body = zlib.gunzipSync(body);
          else if (c === 'deflate') body = zlib.inflateSync(body);
          else if (c === 'br') body = zlib.brotliDecompressSync(body);
          else throw new Error(`unknown coding ${c}`);
        }
        const decompressedBytes = body.length;
        let accepted = 0;
        let rejected = 0;
        for (const line of body.toString('utf8').split('\n')) {
          if (!line) continue;
          try {
            JSON.parse(line);
            accepted++;
          } catch {
            rejected++;
          }
        }
        res.writeHead(rejected > 0 && accepted === 0 ? 400 : 200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ accepted, rejected, decompressedBytes }) + '\n');
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: String((e as Error).message) }) + '\n');
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)),
  );
}

async function main(spec: BombChildSpec): Promise<void> {
  if (spec.variant === 'naive') {
    const url = await naiveServer();
    process.stdout.write(JSON.stringify({ ready: true, url, pid: process.pid }) + '\n');
    process.once('SIGTERM', () => process.exit(0));
    return;
  }
  const sink = await new FileSink<unknown>({ path: join(spec.dataDir, 'ingest.ndjson') }).open();
  const srv = await startServer({ sink, limits: spec.limits, ...spec.serve, log: (l) => process.stderr.write(l + '\n') });
  process.stdout.write(JSON.stringify({ ready: true, url: srv.url, pid: process.pid }) + '\n');
  process.once('SIGTERM', () => {
    srv.close().then((ledger) => {
      process.stdout.write(JSON.stringify({ ledger }) + '\n');
      process.exit(0);
    });
  });
}

/** How to start this file as a child process, from source (tsx) or compiled. */
export function bombChildCommand(spec: BombChildSpec): { command: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  const args = self.endsWith('.ts') ? ['--import', 'tsx', self] : [self];
  return { command: process.execPath, args: [...args, JSON.stringify(spec)] };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(JSON.parse(process.argv[2] ?? '{}') as BombChildSpec).catch((e) => {
    process.stderr.write(`bomb-child: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  });
}
