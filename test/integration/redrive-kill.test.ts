/**
 * A re-drive killed with SIGKILL at a random point, then run again, loses nothing and
 * duplicates nothing (docs/dlq.md, "Crash safety").
 *
 * Real child processes run `sluice dlq redrive` on the embedded log (chunks of 5 records, each
 * made durable before the next, so there are many points to die at). The test kills the child
 * a random moment after a randomly chosen progress event (planned, published k/n, returned,
 * resolved), twice, then lets a third run finish, consumes the log into the idempotent file
 * sink, and reconciles: every id produced is committed or (the truly invalid ones) still in
 * the DLQ, none is missing, none is in the sink twice, and no re-driven record was even
 * appended to the log twice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';
import { EVENT_RECORD_JSON_SCHEMA, validateEventEnvelope } from '../../packages/lab/src/records/event-schema.js';
import { FileDeadLetterStore } from '../../packages/sluice/src/dlq/file.js';
import { deadLetterWriter } from '../../packages/sluice/src/dlq/store.js';
import { openConsumableDlq } from '../../packages/sluice/src/dlq/access.js';
import { reconcileIds, sinkIds } from '../../packages/sluice/src/dlq/reconcile.js';
import { EmbeddedLogSource, EmbeddedLogWriter, readLog } from '../../packages/sluice/src/sources/embedded-log.js';
import { RecordFactory } from '../../packages/lab/src/records/records.js';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
import { FIX_TRANSFORM_SOURCE } from '../../packages/lab/src/experiments/redrive.js';

async function consume(log: string, sinkPath: string, dlqPath: string): Promise<void> {
  const source = await EmbeddedLogSource.open<unknown>({ path: log, pollMs: 2 });
  const sink = await new FileSink<unknown>({ path: sinkPath, validate: validateEventEnvelope, dedupeById: true }).open();
  const store = await new FileDeadLetterStore(dlqPath).open();
  const ingest = new Ingest<unknown>({
    source,
    sink,
    handler: splitAndRetry(sink, { dlq: deadLetterWriter(store, { pipeline: 'kill-test', sink: 'file', source: source.name }), retry: { budget: 2, baseMs: 1, maxMs: 5 } }),
    window: { maxItems: 64, maxWaitMs: 2 },
  });
  const deadline = performance.now() + 30_000;
  while ((await source.lag()) > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const ledger = await ingest.stop();
  assert.ok(ledger.balanced, 'ledger balanced');
  await source.close();
  await sink.close();
  await store.close();
}

/** Runs the re-drive; kills it `delayMs` after progress event number `killAt` (undefined: let it finish). */
function runRedrive(args: string[], killAt?: number, delayMs = 0): Promise<{ code: number | null; signal: string | null; events: string[]; err: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', 'dlq', 'redrive', '--progress', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: string[] = [];
  let buf = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.startsWith('redrive progress: ')) continue;
      events.push(line.slice('redrive progress: '.length));
      if (killAt !== undefined && events.length === killAt) setTimeout(() => child.kill('SIGKILL'), delayMs);
    }
  });
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, events, err })));
}

test('re-drive killed with SIGKILL at random points, then rerun: zero missing, zero duplicated', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-redrive-kill-'));
  try {
    const log = join(dir, 'log.ndjson');
    const sinkPath = join(dir, 'sink.ndjson');
    const dlqPath = join(dir, 'dlq.jsonl');
    const fix = join(dir, 'fix.mjs');
    await writeFile(fix, FIX_TRANSFORM_SOURCE);
    // Revalidation against the record shape, passed in as a JSON Schema like any user would.
    const schema = join(dir, 'event-record.schema.json');
    await writeFile(schema, JSON.stringify(EVENT_RECORD_JSON_SCHEMA));

    // 600 records: every 4th has the amount bug (fixable), every 97th a negative amount (not).
    const f = new RecordFactory({ seed: 9, idPrefix: 'k' });
    const w = await EmbeddedLogWriter.open(log);
    const records = Array.from({ length: 600 }, (_, i) => {
      const e = f.make(i, 0);
      const v = { ...e.value } as Record<string, unknown>;
      if (i % 4 === 1) v.amount = `€${Number(v.amount).toFixed(2)}`;
      else if (i % 97 === 0) v.amount = -1;
      else return { id: e.id!, data: e.raw! };
      return { id: e.id!, data: Buffer.from(JSON.stringify(v)) };
    });
    await w.append(records, { sync: true });
    await w.close();
    const unfixable = records.filter((_, i) => i % 4 !== 1 && i % 97 === 0).length;
    const fixable = records.filter((_, i) => i % 4 === 1).length;

    await consume(log, sinkPath, dlqPath);
    const dlq = await openConsumableDlq({ dlq: dlqPath });
    assert.equal((await dlq.pending()).length, fixable + unfixable);
    const logSizeBefore = (await readLog(log)).length;

    const args = ['--dlq', dlqPath, '--to', log, '--transform', fix, '--chunk', '5', '--schema', schema];
    // Events of a full run: planned, published 5/150 … 150/150 (30), returned, resolved, done.
    const total = 1 + Math.ceil(fixable / 5) + 3;
    const kills: string[] = [];
    for (let round = 0; round < 2; round++) {
      // Round 0 dies anywhere in a full run; round 1 early in the resumed run (resume, first chunks).
      const killAt = round === 0 ? 1 + Math.floor(Math.random() * (total - 1)) : 1 + Math.floor(Math.random() * 3);
      const delay = Math.floor(Math.random() * 4);
      const r = await runRedrive(args, killAt, delay);
      kills.push(`after event ${killAt} (+${delay} ms): last seen "${r.events.at(-1) ?? '(none)'}", ${r.signal ?? `exit ${r.code}`}`);
      if (r.signal !== 'SIGKILL') assert.equal(r.code, 0, r.err); // it may finish before the kill lands
    }
    const last = await runRedrive(args);
    assert.equal(last.code, 0, last.err);
    process.stdout.write(`# kills: ${kills.join('; ')}; final run: ${last.events.join(', ')}\n`);
    await assert.rejects(access(`${dlqPath}.redrive.json`), 'the cursor is gone once the re-drive finished');

    // No re-driven record appended twice to the log, and every fixable one appended once.
    const appended = (await readLog(log)).slice(logSizeBefore).map((r) => r.id);
    assert.equal(new Set(appended).size, appended.length, 'a record was published twice');
    assert.equal(appended.length, fixable);

    await consume(log, sinkPath, dlqPath);
    const pending = await dlq.pending();
    const rec = reconcileIds(
      (await readLog(log)).map((r) => r.id),
      await sinkIds(sinkPath),
      pending.map((e) => e.id),
    );
    assert.equal(rec.missing, 0, JSON.stringify(rec));
    assert.equal(rec.duplicated, 0, JSON.stringify(rec));
    assert.equal(rec.committed, 600 - unfixable);
    assert.equal(pending.length, unfixable, 'only the truly invalid records stay dead');
    assert.ok(pending.every((e) => /still failing: .*amount/.test(e.message)), 'each says why');
    await dlq.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
