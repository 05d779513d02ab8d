import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSink, classifyFsError } from '../../packages/sluice/src/sinks/file.js';
import { SinkError } from '../../packages/sluice/src/core/errors.js';
import { Pipeline } from '../../packages/sluice/src/core/pipeline.js';
import { RecordFactory, type EventRecord } from '../../packages/lab/src/records/records.js';
import { envelope } from '../../packages/sluice/src/core/types.js';

const factory = new RecordFactory({ seed: 5 });

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-file-sink-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Counts the fdatasync calls really made on any FileHandle while `fn` runs, by wrapping
 * FileHandle.prototype.datasync (restored afterwards): the sink's own counter is checked
 * against the calls, not against itself.
 */
async function countingDatasync(dir: string, fn: () => Promise<void>): Promise<number> {
  const probe = await open(join(dir, '.probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
  await probe.close();
  const original = proto.datasync;
  let calls = 0;
  proto.datasync = function (this: unknown) {
    calls++;
    return original.call(this);
  };
  try {
    await fn();
  } finally {
    proto.datasync = original;
  }
  return calls;
}

test('file sink: after write() resolves, the batch is in the file as NDJSON, one fdatasync per batch', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'nested', 'log.ndjson');
    const sink = await new FileSink<EventRecord>({ path }).open();
    const batches = [0, 1, 2, 3].map((b) => Array.from({ length: 1 + b * 7 }, (_, i) => factory.make(b * 100 + i, 0)));
    const written: EventRecord[] = [];
    const syncs = await countingDatasync(dir, async () => {
      for (const batch of batches) {
        await sink.write(batch);
        written.push(...batch.map((e) => e.value));
        // A fresh handle, after the write resolved: what is there is what a reader would see.
        const lines = (await readFile(path, 'utf8')).split('\n');
        assert.equal(lines.pop(), '', 'every line ends with a newline');
        assert.deepEqual(lines.map((l) => JSON.parse(l)), written);
      }
    });
    assert.equal(sink.fixedCostOps(), batches.length);
    assert.equal(syncs, batches.length, 'fdatasync really called once per batch');
    assert.equal(sink.bytesWritten(), (await readFile(path)).length);
    await sink.close();
    await sink.close(); // idempotent
  });
});

test('file sink: values without raw bytes are written as JSON; the file is appended to, not truncated', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    await writeFile(path, '{"old":true}\n');
    const sink = await new FileSink<unknown>({ path }).open();
    await sink.write([envelope({ a: 1, s: 'x\ny' }, { bytes: 10, intendedAtMs: 0 }), envelope('plain text', { bytes: 10, intendedAtMs: 0 })]);
    await sink.close();
    assert.equal(await readFile(path, 'utf8'), '{"old":true}\n{"a":1,"s":"x\\ny"}\nplain text\n');
  });
});

test('file sink behind a pipeline: committed equals lines on disk, fixed-cost ops equal batches', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    const sink = await new FileSink<EventRecord>({ path }).open();
    const p = new Pipeline<EventRecord>({ sink, window: { maxItems: 50, maxWaitMs: 1 } });
    for (let i = 0; i < 400; i++) await p.put(factory.make(i, 0));
    await p.close();
    const st = p.stats();
    const lines = (await readFile(path, 'utf8')).trimEnd().split('\n');
    assert.equal(st.ledger.balanced, true);
    assert.equal(st.ledger.committed, 400);
    assert.equal(lines.length, 400);
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as EventRecord).id), Array.from({ length: 400 }, (_, i) => `e${i}`));
    assert.equal(sink.fixedCostOps(), st.batches);
    await sink.close();
  });
});

test('file sink: an unusable path fails at open(), classified transient and alerting', async () => {
  await withDir(async (dir) => {
    const sink = new FileSink({ path: dir }); // a directory
    await assert.rejects(sink.open(), (e: unknown) => (e as NodeJS.ErrnoException).code === 'EISDIR');
    await assert.rejects(sink.write([envelope(1, { bytes: 1, intendedAtMs: 0 })]), (e: unknown) => {
      assert.ok(e instanceof SinkError);
      assert.equal(e.failureClass, 'transient');
      assert.equal(e.sinkCode, 'EISDIR');
      assert.equal(e.alerting, true);
      return true;
    });
    assert.equal(sink.fixedCostOps(), 0);
    const enospc = classifyFsError(Object.assign(new Error('no space'), { code: 'ENOSPC' }));
    assert.equal(enospc.failureClass, 'transient');
    assert.equal(enospc.alerting, true);
  });
});

test('file sink: a validator that throws makes an item-level error naming the record, and nothing is written', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'log.ndjson');
    const sink = await new FileSink<EventRecord>({
      path,
      validate: (e) => {
        if ((e.value as EventRecord).amount < 0) throw new Error('negative amount');
      },
    }).open();
    const bad = factory.make(1, 0);
    bad.value = { ...bad.value, amount: -1 };
    await assert.rejects(sink.write([factory.make(0, 0), bad]), (e: unknown) => {
      assert.ok(e instanceof SinkError);
      assert.equal(e.failureClass, 'item');
      assert.equal(e.details.index, 1);
      return true;
    });
    assert.equal(await readFile(path, 'utf8'), '');
    await sink.close();
  });
});
