import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as fsConstants } from 'node:fs';
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
 * Counts the calls really made to FileHandle.prototype[method] on any FileHandle while `fn`
 * runs (restored afterwards), with the fd each was made on: the sink's own counter is
 * checked against the calls, not against itself.
 */
async function countingCalls(dir: string, method: 'write' | 'datasync', fn: () => Promise<void>): Promise<number[]> {
  const probe = await open(join(dir, '.probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as Record<string, (...a: unknown[]) => Promise<unknown>>;
  await probe.close();
  const original = proto[method];
  const fds: number[] = [];
  proto[method] = function (this: { fd: number }, ...args: unknown[]) {
    fds.push(this.fd);
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    proto[method] = original;
  }
  return fds;
}

/** The open flags of this process's fd, from /proc/self/fdinfo (octal). */
async function fdFlags(fd: number): Promise<number> {
  const m = /^flags:\s+([0-7]+)$/m.exec(await readFile(`/proc/self/fdinfo/${fd}`, 'utf8'));
  assert.ok(m, 'fdinfo has a flags line');
  return parseInt(m[1], 8);
}

/** The fd of the one file handle that a set of calls was made on. */
function onlyFd(fds: number[]): number {
  assert.equal(new Set(fds).size, 1, `calls on one fd, got ${[...new Set(fds)].join(', ')}`);
  return fds[0];
}

for (const mode of ['dsync', 'fdatasync'] as const) {
  test(`file sink (sync '${mode}'): after write() resolves, the batch is in the file as NDJSON, one sync per batch`, async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'nested', 'log.ndjson');
      const sink = await new FileSink<EventRecord>({ path, sync: mode === 'dsync' ? undefined : mode }).open();
      assert.equal(sink.syncMode, mode, mode === 'dsync' ? 'O_DSYNC is the default' : 'as asked');
      const batches = [0, 1, 2, 3].map((b) => Array.from({ length: 1 + b * 7 }, (_, i) => factory.make(b * 100 + i, 0)));
      const written: EventRecord[] = [];
      let syncFds: number[] = [];
      const writeFds = await countingCalls(dir, 'write', async () => {
        syncFds = await countingCalls(dir, 'datasync', async () => {
          for (const batch of batches) {
            await sink.write(batch);
            written.push(...batch.map((e) => e.value));
            // A fresh handle, after the write resolved: what is there is what a reader would see.
            const lines = (await readFile(path, 'utf8')).split('\n');
            assert.equal(lines.pop(), '', 'every line ends with a newline');
            assert.deepEqual(lines.map((l) => JSON.parse(l)), written);
          }
        });
      });
      assert.equal(sink.fixedCostOps(), batches.length);
      assert.equal(writeFds.length, batches.length, 'one write call per batch');
      const dataFd = onlyFd(writeFds);
      const dsyncFlag = (await fdFlags(dataFd)) & fsConstants.O_DSYNC;
      if (mode === 'dsync') {
        assert.notEqual(dsyncFlag, 0, 'the data fd really has O_DSYNC: each write is durable when it returns');
        assert.equal(syncFds.length, 0, 'no fdatasync on top');
      } else {
        assert.equal(dsyncFlag, 0);
        assert.equal(syncFds.length, batches.length, 'fdatasync really called once per batch');
        assert.equal(onlyFd(syncFds), dataFd);
      }
      assert.equal(sink.bytesWritten(), (await readFile(path)).length);
      await sink.close();
      await sink.close(); // idempotent
    });
  });
}

test('file sink: with no write in progress the write is issued in the call itself; a second one waits for the first to land', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'out.ndjson');
    const sink = await new FileSink({ path }).open();
    let calls = 0;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await patchingFileHandle(
      dir,
      'write',
      async (orig, self, args) => {
        calls++;
        if (calls === 1) await held; // the first write stays in progress until released
        return orig.apply(self, args);
      },
      async () => {
        const first = sink.write([rawEnv(0)]);
        assert.equal(calls, 1, 'issued before write() returned: no microtask between the pipeline and the disk');
        const second = sink.write([rawEnv(1)]);
        await new Promise((r) => setImmediate(r));
        assert.equal(calls, 1, 'the second batch waits: one write at a time, each at the durable end');
        release();
        await Promise.all([first, second]);
        assert.equal(calls, 2);
      },
    );
    assert.deepEqual((await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l).n), [0, 1]);
    await sink.close();
  });
});

test('file sink: an unknown sync mode is refused at construction, in one line', () => {
  assert.throws(() => new FileSink({ path: '/tmp/x', sync: 'fsync' as never }), (e: Error) => /sync/.test(e.message) && !e.message.includes('\n'));
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

// ------------------------------------------------------------------ issue 19: faults

/** Patches FileHandle.prototype[method] while `fn` runs; `impl` gets the original. */
async function patchingFileHandle(dir: string, method: 'write' | 'datasync', impl: (orig: (...a: any[]) => Promise<any>, self: any, args: any[]) => Promise<any>, fn: () => Promise<void>): Promise<void> {
  const probe = await open(join(dir, '.probe2'), 'w');
  const proto = Object.getPrototypeOf(probe) as Record<string, (...a: any[]) => Promise<any>>;
  await probe.close();
  const orig = proto[method];
  proto[method] = function (this: unknown, ...args: any[]) {
    return impl(orig, this, args);
  };
  try {
    await fn();
  } finally {
    proto[method] = orig;
  }
}

const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
const eio = () => Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
const rawEnv = (i: number) => envelope({ msg: `m${i}` }, { bytes: 10, intendedAtMs: 0, id: `k${i}`, raw: Buffer.from(JSON.stringify({ msg: `m${i}`, n: i })) });

test('file sink: a write that fails half-way leaves no torn line, and the retry does not append the batch twice', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'out.ndjson');
    const sink = await new FileSink({ path }).open();
    await sink.write([rawEnv(0)]);
    let fail = true;
    await patchingFileHandle(
      dir,
      'write',
      async (orig, self, args) => {
        const [buf, off, len, pos] = args as [Buffer, number, number, number];
        if (fail && len > 10 && (self as { fd: number }).fd >= 0 && buf.includes(Buffer.from('"m1"'))) {
          fail = false;
          await orig.call(self, buf, off, Math.floor(len / 2), pos); // half of it lands, then the disk is full
          throw enospc();
        }
        return orig.apply(self, args);
      },
      async () => {
        const batch = [rawEnv(1), rawEnv(2)];
        await assert.rejects(sink.write(batch), (e: unknown) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'ENOSPC' && e.alerting);
        const after = await readFile(path, 'utf8');
        assert.ok(after.endsWith('\n'), 'no torn line');
        assert.equal(after.trim().split('\n').length, 1);
        await sink.write(batch); // the retry
      },
    );
    const lines = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.n), [0, 1, 2], 'each record once, exactly as received');
    assert.ok(sink.faults().truncatedBytes > 0);
    await sink.close();
  });
});

test("file sink (sync 'fdatasync'): a failed fdatasync is fatal for the fd: reopened, tail cut back, the retry writes and syncs the batch once", async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'out.ndjson');
    const sink = await new FileSink({ path, sync: 'fdatasync' }).open();
    await sink.write([rawEnv(0)]);
    let fail = true;
    await patchingFileHandle(
      dir,
      'datasync',
      async (orig, self) => {
        if (fail) {
          fail = false;
          throw eio();
        }
        return orig.call(self);
      },
      async () => {
        await assert.rejects(sink.write([rawEnv(1)]), (e: unknown) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'EIO');
        assert.equal(sink.faults().reopens, 1);
        assert.equal(sink.faults().failedSyncs, 1);
        await sink.write([rawEnv(1)]);
      },
    );
    const lines = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l).n);
    assert.deepEqual(lines, [0, 1]);
    await sink.close();
  });
});

test("file sink (sync 'dsync'): a failed write may carry a writeback error, so the fd is reopened (O_DSYNC again), the tail cut back, and the retry lands once", async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'out.ndjson');
    const sink = await new FileSink({ path }).open();
    await sink.write([rawEnv(0)]);
    let fail = true;
    let retryFd = -1;
    await patchingFileHandle(
      dir,
      'write',
      async (orig, self, args) => {
        const [buf, off, len, pos] = args as [Buffer, number, number, number];
        if (buf.includes(Buffer.from('"m1"'))) {
          if (fail) {
            fail = false;
            await orig.call(self, buf, off, len, pos); // the bytes reached the page cache; the flush failed
            throw eio();
          }
          retryFd = (self as { fd: number }).fd;
        }
        return orig.apply(self, args);
      },
      async () => {
        await assert.rejects(sink.write([rawEnv(1)]), (e: unknown) => e instanceof SinkError && e.failureClass === 'transient' && e.sinkCode === 'EIO');
        assert.equal(sink.faults().reopens, 1);
        assert.equal(sink.faults().failedWrites, 1);
        assert.equal((await readFile(path, 'utf8')).trim().split('\n').length, 1, 'the unsynced batch cut back');
        await sink.write([rawEnv(1)]);
      },
    );
    assert.notEqual((await fdFlags(retryFd)) & fsConstants.O_DSYNC, 0, 'the reopened fd is O_DSYNC too');
    const lines = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l).n);
    assert.deepEqual(lines, [0, 1]);
    await sink.close();
  });
});

test('file sink: open() cuts a torn last line left by a crash', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'out.ndjson');
    await writeFile(path, '{"a":1}\n{"a":2');
    const sink = await new FileSink({ path }).open();
    await sink.write([rawEnv(3)]);
    await sink.close();
    assert.equal(await readFile(path, 'utf8'), '{"a":1}\n{"msg":"m3","n":3}\n');
  });
});

test('file sink dedupeById: ids come from env.id (records without an id field), survive a restart through the index, bounded by dedupeWindow', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'out.ndjson');
    const s1 = await new FileSink({ path, dedupeById: true, dedupeWindow: 10 }).open();
    for (let b = 0; b < 3; b++) await s1.write(Array.from({ length: 10 }, (_, i) => rawEnv(b * 10 + i)));
    assert.equal(s1.idsHeld(), 10, 'memory bounded by the window');
    await s1.close();
    // restart: only the index's tail is read; the last 10 ids are known again
    const s2 = await new FileSink({ path, dedupeById: true, dedupeWindow: 10 }).open();
    assert.equal(s2.idsHeld(), 10);
    await s2.write([rawEnv(25), rawEnv(29), rawEnv(30)]); // 25, 29 redelivered; 30 new
    assert.equal(s2.duplicatesSkipped(), 2);
    await s2.close();
    const ns = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l).n);
    assert.equal(ns.length, 31);
    assert.deepEqual(ns.slice(-1), [30]);
    // an index entry whose batch never reached the data file (a crash between the two) is dropped at open
    const { appendFile } = await import('node:fs/promises');
    await appendFile(`${path}.ids`, JSON.stringify({ end: 10 ** 9, ids: ['k99'] }) + '\n');
    const s3 = await new FileSink({ path, dedupeById: true, dedupeWindow: 10 }).open();
    await s3.write([rawEnv(99)]);
    assert.equal(s3.duplicatesSkipped(), 0, 'k99 never landed: written, not skipped');
    await s3.close();
  });
});
