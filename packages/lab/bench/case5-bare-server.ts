/**
 * Case 5's limit: the least a hand-written front door does. A bare `node:http` server that
 * reads each POST body whole, gunzips it when it says gzip, splits it into lines and appends
 * them to the SAME sink Sluice's `serve` uses (FileSink, or PostgresSink in its default mode),
 * with the same batching as `sluice serve`'s defaults: one batch in flight; a request's lines
 * go to the sink at once when it is idle, else with every request that arrived meanwhile
 * (group commit), at most `--max-items` (512) per batch; the answer (200) after the commit.
 * No caps, no JSON parsing or validation, no queue bound, no ledger, no metrics.
 * PostgreSQL needs a primary-key value per row: the line's content hash, the id `sluice serve`
 * gives a record without `--id-field` (`contentHashId`, docs/records.md). The same ids keep the
 * file sink's id index with `--dedupe true`, as `sluice serve` writes it (case5-front-door.ts
 * passes it unless `--bare-dedupe false`): without it the limit was another sink, and the
 * index's cost was counted against Sluice alone (docs/bench.md, case 5).
 *
 *   node dist/bench/case5-bare-server.js --sink file --path /tmp/x.ndjson [--dedupe true]
 *   node dist/bench/case5-bare-server.js --sink postgres --url postgres://… --table t
 * Prints `listening on http://127.0.0.1:PORT`; on SIGTERM drains, closes the sink and prints
 * one JSON line `{"committed":N,"requests":M}`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { FileSink, PostgresSink, contentHashId, envelope, type Envelope, type Sink } from 'sluice';
import { parseArgs, num } from './lib/harness.js';

const a = parseArgs();
const maxItems = num(a, 'max-items', 512);
const pg = a.sink === 'postgres';
/** `--dedupe true`: the file sink keeps its id index, as `sluice serve` writes it (the ids are content hashes). */
const dedupe = a.dedupe === 'true';
const withIds = pg || dedupe;
const sink: Sink<unknown> = pg
  ? await new PostgresSink({ connectionString: a.url, table: a.table }).open()
  : await new FileSink<unknown>({ path: a.path, dedupeById: dedupe }).open();

interface Pending {
  items: Envelope<unknown>[];
  done: () => void;
  fail: (e: unknown) => void;
  left: number;
}
const queue: { env: Envelope<unknown>; req: Pending }[] = [];
let writing = false;
let committed = 0;
let requests = 0;

async function pump(): Promise<void> {
  if (writing) return;
  writing = true;
  try {
    while (queue.length > 0) {
      const cut = queue.splice(0, maxItems);
      const batch = cut.map((q) => q.env);
      try {
        await sink.write(batch);
        committed += batch.length;
        for (const q of cut) if (--q.req.left === 0) q.req.done();
      } catch (e) {
        for (const q of cut) q.req.fail(e);
      }
    }
  } finally {
    writing = false;
  }
}

const server = http.createServer((req, res) => {
  const parts: Buffer[] = [];
  req.on('data', (c: Buffer) => parts.push(c));
  req.on('end', () => {
    let body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
    const items: Envelope<unknown>[] = [];
    let from = 0;
    for (;;) {
      const nl = body.indexOf(10, from);
      const end = nl < 0 ? body.length : nl;
      if (end > from) {
        const raw = body.subarray(from, end);
        items.push(envelope(null, { bytes: raw.length, raw, id: withIds ? contentHashId(raw) : undefined }));
      }
      if (nl < 0) break;
      from = nl + 1;
    }
    requests++;
    const p: Pending = {
      items,
      left: items.length,
      done: () => res.end(`{"committed":${items.length}}\n`),
      fail: (e) => {
        if (res.headersSent) return;
        res.statusCode = 503;
        res.end(JSON.stringify({ error: String((e as Error)?.message ?? e) }) + '\n');
      },
    };
    if (items.length === 0) return void res.end('{"committed":0}\n');
    for (const env of items) queue.push({ env, req: p });
    void pump();
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.once('SIGTERM', () => {
  server.close();
  server.closeIdleConnections();
  const finish = async () => {
    while (writing || queue.length > 0) await new Promise((r) => setTimeout(r, 5));
    await sink.close();
    process.stdout.write(JSON.stringify({ committed, requests }) + '\n');
    process.exit(0);
  };
  void finish();
});
