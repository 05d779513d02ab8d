/**
 * `sluice dlq list|redrive` and `sluice reconcile` as a user runs them (child processes from
 * source), plus the re-drive's failure routes, the file sink's id index and reconciliation.
 * The CLI children run concurrently to keep the file within seconds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envelope } from '../../packages/sluice/src/core/types.js';
import { FileSink } from '../../packages/sluice/src/sinks/file.js';
import { openConsumableDlq } from '../../packages/sluice/src/dlq/access.js';
import { redrive, loadTransform, openMainStream, jsonRevalidator } from '../../packages/sluice/src/dlq/redrive.js';
import { checkEventRecord, EVENT_RECORD_JSON_SCHEMA } from '../../packages/lab/src/records/event-schema.js';
import { formatReconcile, reconcileIds, sinkIds } from '../../packages/sluice/src/dlq/reconcile.js';
import { acquireRedriveLock } from '../../packages/sluice/src/dlq/redrive.js';
import type { DeadLetterEntry } from '../../packages/sluice/src/dlq/store.js';
import { EmbeddedLogWriter, readLog } from '../../packages/sluice/src/sources/embedded-log.js';
import { FIX_TRANSFORM_SOURCE } from '../../packages/lab/src/experiments/redrive.js';

function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })));
}

function record(id: string, amount: unknown): Buffer {
  return Buffer.from(JSON.stringify({ id, ts: 1_700_000_000_000, source: 'edge', kind: 'purchase', amount, note: '', payload: { a: 1 } }));
}

function entry(id: string, data: Buffer, source: string, over: Partial<DeadLetterEntry> = {}): DeadLetterEntry {
  return {
    v: 1, id, source, offset: 0, pipeline: 'p', sink: 'file', errorClass: 'item', code: 'SLUICE_SINK_ITEM', sinkCode: 'VALIDATION',
    message: 'amount: expected a number', attempts: 3, firstFailureAt: '2026-01-01T00:00:00.000Z', deadLetteredAt: '2026-01-01T00:00:01.000Z',
    data: data.toString('base64'), ...over,
  };
}

/** A DLQ of 3 entries from `log`: two amount strings (fixable by the transform), one negative amount (not). */
async function fixture(dir: string) {
  const log = join(dir, 'log.ndjson');
  const dlq = join(dir, 'dlq.jsonl');
  const fix = join(dir, 'fix.mjs');
  await writeFile(fix, FIX_TRANSFORM_SOURCE);
  const w = await EmbeddedLogWriter.open(log);
  const recs = [
    { id: 'a', data: record('a', 1) },
    { id: 'b', data: record('b', '€12.50') },
    { id: 'c', data: record('c', '€3.00') },
    { id: 'd', data: record('d', -4) },
  ];
  await w.append(recs, { sync: true });
  await w.close();
  await writeFile(dlq, recs.slice(1).map((r) => JSON.stringify(entry(r.id, r.data, `embedded:${log}`)) + '\n').join(''));
  return { log, dlq, fix };
}

test('dlq list: absent, empty, corrupt, populated; reconcile exit codes; redrive dry run and quarantine (CLI)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-dlq-cli-'));
  try {
    await writeFile(join(dir, 'empty.jsonl'), '');
    const good = JSON.stringify(entry('x', record('x', 'bad'), 'embedded:/l'));
    const corrupt = `${good}\n{"id": "y", trunc\n${good}\n`;
    await writeFile(join(dir, 'corrupt.jsonl'), corrupt);
    const dry = await fixture(await mkdtemp(join(dir, 'dry-')));
    const dryBefore = { log: await readFile(dry.log), dlq: await readFile(dry.dlq) };
    const q = await fixture(await mkdtemp(join(dir, 'q-')));
    const qStore = join(dir, 'quarantine.jsonl');
    // Revalidation against the lab's record shape, passed as a JSON Schema file like any user's.
    const schema = join(dir, 'event-record.schema.json');
    await writeFile(schema, JSON.stringify(EVENT_RECORD_JSON_SCHEMA));
    // reconcile: sink holds a twice, b once; c and d nowhere → missing 2 (c is in no DLQ given), duplicated 1
    const rc = await fixture(await mkdtemp(join(dir, 'rc-')));
    const rcSink = join(dir, 'rc-sink.ndjson');
    await writeFile(rcSink, [record('a', 1), record('a', 1), record('b', 1)].join('\n') + '\n');
    const rcEmptyDlq = join(dir, 'rc-none.jsonl');
    await writeFile(`${rc.log}.committed`, JSON.stringify({ offset: 3, position: 0 })); // d (offset 3) not yet consumed

    const corrupt2 = join(await mkdtemp(join(dir, 'c2-')), 'dlq.jsonl');
    await writeFile(corrupt2, corrupt);
    const nl = await fixture(await mkdtemp(join(dir, 'nl-')));
    const nlBefore = await readFile(nl.dlq);
    const [absent, empty, bad, listed, dryRun, quarantined, recon, badRedrive, shown, noLog] = await Promise.all([
      cli(['dlq', 'list', '--dlq', join(dir, 'absent.jsonl')]),
      cli(['dlq', 'list', '--dlq', join(dir, 'empty.jsonl')]),
      cli(['dlq', 'list', '--dlq', join(dir, 'corrupt.jsonl')]),
      cli(['dlq', 'list', '--dlq', dry.dlq]),
      cli(['dlq', 'redrive', '--dlq', dry.dlq, '--transform', dry.fix, '--schema', schema, '--dry-run']),
      cli(['dlq', 'redrive', '--dlq', q.dlq, '--transform', q.fix, '--schema', schema, '--on-fail', 'quarantine', '--quarantine', qStore]),
      cli(['reconcile', '--source', rc.log, '--sink', rcSink, '--dlq', rcEmptyDlq]),
      cli(['dlq', 'redrive', '--dlq', corrupt2, '--to', join(dir, 'never.log')]),
      cli(['dlq', 'show', '--dlq', rc.dlq, '--code', 'VALIDATION', '--id', 'c']),
      cli(['dlq', 'redrive', '--dlq', nl.dlq, '--to', join(nl.dlq, '..', 'missing.log')]),
    ]);

    assert.equal(badRedrive.code, 1);
    assert.match(badRedrive.err, /^sluice: .*dlq\.jsonl:2: not valid JSON \[SLUICE_CORRUPT\]\n$/);
    // The lock's generation file stays, marked released (never deleted: generations are not reused, see acquireRedriveLock).
    assert.deepEqual((await readdir(join(corrupt2, '..'))).filter((f) => !/\.lock\.\d+$/.test(f)), ['dlq.jsonl'], 're-drive of a corrupt DLQ: no cursor, no log left behind');
    await (await acquireRedriveLock(`${corrupt2}.redrive.json.lock`))(); // and no lock held

    assert.equal(noLog.code, 1);
    assert.match(noLog.err, /^sluice: main stream .*missing\.log does not exist \(ENOENT\): name the pipeline's log with --to \[SLUICE_SOURCE_UNAVAILABLE\]\n$/);
    assert.deepEqual(await readFile(nl.dlq), nlBefore, 'nothing resolved');
    assert.deepEqual((await readdir(join(nl.dlq, '..'))).filter((f) => !/\.lock\.\d+$/.test(f)).sort(), ['dlq.jsonl', 'fix.mjs', 'log.ndjson'], 'no log created, no cursor left (a released lock generation may stay)');
    assert.equal(await readFile(corrupt2, 'utf8'), corrupt);

    assert.equal(shown.code, 0, shown.err);
    assert.match(shown.out, /^c  SLUICE_SINK_ITEM\/VALIDATION  attempts=3  at=2026-01-01T00:00:01\.000Z  from=embedded:.*log\.ndjson@0  amount: expected a number\n    \{"id":"c",.*"amount":"€3\.00"/);
    assert.match(shown.out, /\n1 of 1 matching entries shown\n$/);

    assert.equal(absent.code, 0, absent.err);
    assert.match(absent.out, /^dlq file:.*absent\.jsonl: absent \(nothing was dead-lettered there\)\n$/);
    assert.equal(empty.code, 0, empty.err);
    assert.match(empty.out, /^dlq file:.*: empty\n$/);

    assert.equal(bad.code, 1);
    assert.equal(bad.out, '');
    assert.match(bad.err, /^sluice: .*corrupt\.jsonl:2: not valid JSON \[SLUICE_CORRUPT\]\n$/, 'one line naming the bad line');
    assert.equal(await readFile(join(dir, 'corrupt.jsonl'), 'utf8'), corrupt, 'the corrupt DLQ is untouched');
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('absent') || f.startsWith('corrupt.jsonl.')), [], 'nothing created beside them');

    assert.equal(listed.code, 0, listed.err);
    assert.match(listed.out, /^dlq file:.*: 3 entries, oldest \S+ \(2026-01-01T00:00:01\.000Z\)\n  SLUICE_SINK_ITEM VALIDATION\s+3  oldest /);

    assert.equal(dryRun.code, 0, dryRun.err);
    assert.match(dryRun.out, /dry run, nothing written.*pending=3 pass=2 fail=1\n/);
    assert.match(dryRun.out, /would fail: d \(attempts 3\): \/amount: must be >= 0/);
    assert.deepEqual(await readFile(dry.log), dryBefore.log, 'dry run: log unchanged');
    assert.deepEqual(await readFile(dry.dlq), dryBefore.dlq, 'dry run: DLQ unchanged');
    assert.deepEqual((await readdir(join(dry.dlq, '..'))).sort(), ['dlq.jsonl', 'fix.mjs', 'log.ndjson'], 'dry run: no cursor, no resolved file');

    assert.equal(quarantined.code, 0, quarantined.err);
    assert.match(quarantined.out, /pass=2 fail=1 published=2 already_published=0 returned_to_dlq=0 quarantined=1 resolved=3/);
    const qDlq = await openConsumableDlq({ dlq: q.dlq });
    assert.deepEqual(await qDlq.pending(), [], 'quarantine mode: the DLQ is empty');
    const qq = await openConsumableDlq({ dlq: qStore });
    const inQ = await qq.pending();
    assert.deepEqual(inQ.map((e) => [e.id, e.attempts]), [['d', 4]], 'the record that failed again is quarantined with attempts + 1');
    assert.match(inQ[0].message, /still failing: .*amount/);
    const appended = (await readLog(q.log)).slice(4);
    assert.deepEqual(appended.map((r) => r.id), ['b', 'c'], 'published back with the original ids');
    assert.equal(JSON.parse(appended[0].data.toString()).amount, 12.5, 'transformed');

    assert.equal(recon.code, 1, 'missing or duplicated → exit 1');
    assert.match(recon.out, /produced=4 committed=2 dead_lettered=0 quarantined=0 unconsumed=1 missing=1 duplicated=1 .*NOT OK/);
    assert.match(recon.out, /missing: c\n/, 'c was acknowledged and is nowhere: lost; d is beyond the committed offset: in flight');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('redrive back to the DLQ: failures return with attempts + 1, the rest is published once, a second run publishes nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-dlq-back-'));
  try {
    const fx = await fixture(dir);
    const dlq = await openConsumableDlq({ dlq: fx.dlq });
    const transform = await loadTransform(fx.fix);
    const o = { dlq, openTarget: (e: readonly DeadLetterEntry[]) => openMainStream(undefined, e), revalidator: jsonRevalidator(checkEventRecord), transform };
    const r1 = await redrive(o);
    assert.deepEqual([r1.published, r1.returnedToDlq, r1.resolved, r1.target], [2, 1, 3, `embedded:${fx.log}`], 'target defaults to the entries source');
    const p = await dlq.pending();
    assert.deepEqual(p.map((e) => [e.id, e.attempts]), [['d', 4]]);
    const r2 = await redrive(o);
    assert.deepEqual([r2.published, r2.returnedToDlq, r2.pass], [0, 1, 0]);
    assert.deepEqual((await dlq.pending()).map((e) => [e.id, e.attempts]), [['d', 5]]);
    assert.equal((await readLog(fx.log)).length, 6, 'the log gained exactly b and c');
    // The DLQ file is append-only: resolved entries are named in the sidecar, never rewritten away.
    assert.equal((await readFile(fx.dlq, 'utf8')).trim().split('\n').length, 5);
    await assert.rejects(redrive({ ...o, onFail: 'quarantine' }), /SLUICE_INVALID_OPTION|quarantine/);
    await dlq.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('file sink dedupeById: one line per id across batches, within a batch and across reopen', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-dedupe-'));
  try {
    const path = join(dir, 'sink.ndjson');
    const env = (id: string) => envelope({ id }, { bytes: 10, intendedAtMs: 0, id, raw: Buffer.from(JSON.stringify({ id })) });
    const s1 = await new FileSink({ path, dedupeById: true }).open();
    await s1.write([env('a'), env('b')]);
    await s1.write([env('a'), env('c'), env('c')]);
    const ops = s1.fixedCostOps();
    await s1.write([env('b')]);
    assert.equal(s1.fixedCostOps(), ops, 'a batch of duplicates costs no fdatasync');
    assert.equal(s1.duplicatesSkipped(), 3);
    await s1.close();
    const s2 = await new FileSink({ path, dedupeById: true }).open();
    await s2.write([env('a'), env('d')]);
    await s2.close();
    assert.deepEqual(await sinkIds(path), ['a', 'b', 'c', 'd']);
    // Without the index the file sink writes what it is given (the default).
    const s3 = await new FileSink({ path }).open();
    await s3.write([env('a')]);
    await s3.close();
    assert.equal(reconcileIds(['a', 'b', 'c', 'd'], await sinkIds(path), []).duplicated, 1, 'reconcile sees it');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('reconcileIds: committed, dead-lettered, quarantined, unconsumed, missing, duplicated, unexpected', () => {
  const r = reconcileIds(['a', 'b', 'c', 'd', 'e', 'f', 'a'], ['a', 'b', 'b', 'z'], ['c', 'b'], ['d'], ['f', 'a']);
  assert.deepEqual(
    [r.produced, r.committed, r.deadLettered, r.quarantined, r.unconsumed, r.missing, r.duplicated, r.unexpected, r.inSinkAndDlq, r.ok],
    [6, 2, 1, 1, 1, 1, 1, 1, 1, false],
  );
  assert.deepEqual(r.missingIds, ['e']);
  assert.ok(reconcileIds(['a'], ['a'], []).ok);
});

test('reconcileIds: a good record dead-lettered with a transient error is a finding (ok false), an item one is not', () => {
  const entries = [
    { id: 'p', errorClass: 'item', code: 'SLUICE_SINK_ITEM' },
    { id: 'g', errorClass: 'transient', code: 'SLUICE_RETRY_EXHAUSTED' },
  ];
  const r = reconcileIds(['a', 'p', 'g'], ['a'], entries);
  assert.equal(r.deadLettered, 2);
  assert.equal(r.transientInDlq, 1);
  assert.deepEqual(r.transientInDlqIds, ['g']);
  assert.equal(r.ok, false);
  assert.match(formatReconcile(r), /transient_in_dlq=1 NOT OK/);
  assert.match(formatReconcile(r), /1 good record\(s\) dead-lettered with a transient error/);
  assert.ok(reconcileIds(['a', 'p'], ['a'], [entries[0]]).ok, 'poison in the DLQ is fine');
  assert.ok(reconcileIds(['a', 'g'], ['a', 'g'], [entries[1]]).ok, 're-driven since: committed, no longer a finding');
});
