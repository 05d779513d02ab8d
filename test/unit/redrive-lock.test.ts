// Issue 19: the re-drive lock cannot be taken twice, even by takers racing over a stale lock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireRedriveLock } from '../../packages/sluice/src/dlq/redrive.js';

/** A pid no process has (the kernel's pid_max is at most 2^22). */
const DEAD_PID = 4_194_304 + 17;

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-lock-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('re-drive lock: concurrent takers over a stale lock (kill -9 left it): exactly one holds it', async () => {
  await withDir(async (dir) => {
    const base = join(dir, 'cursor.json.lock');
    for (let round = 0; round < 5; round++) {
      // a lock left by a dead process, in both the old single-file and the generation layout
      await writeFile(`${base}.${round * 10 + 1}`, JSON.stringify({ pid: DEAD_PID, start: '1', nonce: 'x' }));
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => acquireRedriveLock(base)));
      const held = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<() => Promise<void>>[];
      assert.equal(held.length, 1, `round ${round}: ${held.length} takers hold the lock`);
      for (const r of results) if (r.status === 'rejected') assert.match(String(r.reason.message), /another re-drive|cannot take/);
      // while held, nobody else gets it; once released, the next taker does
      await assert.rejects(acquireRedriveLock(base), /another re-drive/);
      await held[0].value();
      const again = await acquireRedriveLock(base);
      await again();
    }
  });
});

test('re-drive lock: separate processes racing over a stale lock: exactly one holds it', async () => {
  await withDir(async (dir) => {
    const base = join(dir, 'cursor.json.lock');
    await writeFile(`${base}.1`, JSON.stringify({ pid: DEAD_PID, start: '1', nonce: 'x' }));
    await writeFile(base, String(DEAD_PID)); // the previous single-file layout's stale lock
    const go = join(dir, 'go');
    // A barrier: every child is loaded and waiting before any of them tries (start-up times vary).
    const script = `
      import { acquireRedriveLock } from ${JSON.stringify(new URL('../../packages/sluice/src/dlq/redrive.ts', import.meta.url).href)};
      import { existsSync } from 'node:fs';
      process.send?.('ready');
      while (!existsSync(${JSON.stringify(go)})) await new Promise((r) => setTimeout(r, 5));
      try { const u = await acquireRedriveLock(${JSON.stringify(base)}); process.stdout.write('got'); await new Promise((r) => setTimeout(r, 1500)); await u(); }
      catch (e) { process.stdout.write('busy:' + e.message); }`;
    let ready = 0;
    const outs = Promise.all(
      Array.from({ length: 4 }, () =>
        new Promise<string>((resolve, reject) => {
          const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
          let out = '';
          c.on('message', () => {
            if (++ready === 4) void writeFile(go, '');
          });
          c.stdout.on('data', (d) => (out += d));
          c.on('error', reject);
          c.on('exit', () => resolve(out));
        }),
      ),
    ).then((o) => o);
    const results = await outs;
    assert.equal(results.filter((o) => o === 'got').length, 1, results.join(' | '));
    assert.ok(results.every((o) => o === 'got' || o.startsWith('busy:')), results.join(' | '));
  });
});
