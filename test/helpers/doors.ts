/**
 * For the front-door tests (test/integration/doors-*.test.ts): a server on a FileSink
 * (idempotent by id), a sink double that keeps each record's `_index` (recordIndex), and the
 * reconciliation of the records in the file against the keys the client sent.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';
import { startServer, type RunningServer, type ServeOptions } from '../../packages/sluice/src/sources/http.js';
import { recordIndex } from '../../packages/sluice/src/sources/doors/stage.js';
import type { Envelope, FixedCostKind, Sink } from '../../packages/sluice/src/core/types.js';
import type { LedgerSnapshot } from '../../packages/sluice/src/core/ledger.js';

/**
 * Delegates to a FileSink; keeps the `_index` of each id written (the column a PostgreSQL sink
 * would fill, docs/serve.md) and exposes the file sink's `storedIds`. `holdFirstWriteMs` holds
 * the first batch that long: the queue behind it fills, and items get refused (per-item 429).
 */
export class DoorTestSink implements Sink<unknown> {
  readonly name = 'door-test';
  readonly fixedCostKind: FixedCostKind = 'fsync';
  readonly indexOf = new Map<string, string | undefined>();
  /** Each id's intendedAtMs as the door stamped it (the request's arrival: latency starts there). */
  readonly intendedAt = new Map<string, number>();
  private held = false;
  constructor(
    readonly file: FileSink<unknown>,
    private readonly holdFirstWriteMs = 0,
  ) {}
  async write(batch: readonly Envelope<unknown>[]): Promise<void> {
    if (!this.held && this.holdFirstWriteMs > 0) {
      this.held = true;
      await new Promise((r) => setTimeout(r, this.holdFirstWriteMs));
    }
    await this.file.write(batch);
    for (const e of batch) {
      if (!this.indexOf.has(e.id!)) this.indexOf.set(e.id!, recordIndex(e));
      if (!this.intendedAt.has(e.id!)) this.intendedAt.set(e.id!, e.intendedAtMs);
    }
  }
  storedIds(ids: readonly string[]): Promise<ReadonlySet<string>> {
    return this.file.storedIds(ids);
  }
  fixedCostOps(): number {
    return this.file.fixedCostOps();
  }
  close(): Promise<void> {
    return this.file.close();
  }
}

export interface DoorServer {
  srv: RunningServer;
  sink: DoorTestSink;
  path: string;
  dir: string;
  /** Closes the server (drains) and removes the scratch directory after reading the records. */
  finish(): Promise<{ ledger: LedgerSnapshot; records: unknown[] }>;
}

export async function doorServer(opts: Partial<ServeOptions> = {}, holdFirstWriteMs = 0): Promise<DoorServer> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-doors-'));
  const path = join(dir, 'records.ndjson');
  const sink = new DoorTestSink(await new FileSink<unknown>({ path, dedupeById: true }).open(), holdFirstWriteMs);
  const srv = await startServer({ sink, ...opts });
  let finished: Promise<{ ledger: LedgerSnapshot; records: unknown[] }> | null = null;
  return {
    srv,
    sink,
    path,
    dir,
    finish() {
      finished ??= (async () => {
        const ledger = await srv.close();
        const text = await readFile(path, 'utf8').catch(() => '');
        await rm(dir, { recursive: true, force: true });
        return { ledger, records: text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as unknown) };
      })();
      return finished;
    },
  };
}

/**
 * Every key sent is in the sink exactly once, nothing else is there, and the ledger balances
 * with nothing dropped or dead-lettered: `accepted = committed + dropped + dead_lettered + in_flight`.
 */
export function reconcile(records: readonly unknown[], keyOf: (r: unknown) => string | undefined, sent: readonly string[], ledger: LedgerSnapshot): void {
  const count = new Map<string, number>();
  const unknown: unknown[] = [];
  for (const r of records) {
    const k = keyOf(r);
    if (k === undefined) unknown.push(r);
    else count.set(k, (count.get(k) ?? 0) + 1);
  }
  const missing = sent.filter((k) => !count.has(k));
  const duplicated = [...count].filter(([, n]) => n > 1).map(([k]) => k);
  const extra = [...count.keys()].filter((k) => !sent.includes(k));
  assert.deepEqual(
    { missing: missing.length, duplicated: duplicated.length, extra: extra.length, unkeyed: unknown.length },
    { missing: 0, duplicated: 0, extra: 0, unkeyed: 0 },
    `missing ${missing.slice(0, 5)} duplicated ${duplicated.slice(0, 5)} extra ${extra.slice(0, 5)} unkeyed ${JSON.stringify(unknown.slice(0, 2))}`,
  );
  assert.equal(records.length, sent.length);
  assert.ok(ledger.balanced, `ledger ${JSON.stringify(ledger)}`);
  assert.equal(ledger.inFlight, 0);
  assert.equal(ledger.dropped, 0);
  assert.equal(ledger.deadLettered, 0);
  assert.ok(ledger.committed >= sent.length, `committed ${ledger.committed} < ${sent.length}`);
}

/** A counter's value from the server's Prometheus text. */
export async function metricValue(srv: RunningServer, name: string, labels: string): Promise<number> {
  const text = await srv.exposition.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}
