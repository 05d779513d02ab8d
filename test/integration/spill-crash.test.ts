/**
 * A real crash during spill: a child process spills records, the test kills it with SIGKILL
 * at a random moment, then reopens the store.
 *
 * Guarantee under test (docs/overflow.md, "Durability"): after a crash of the process,
 * - no torn or corrupted record is ever read back (length prefix + CRC-32; a torn tail is cut);
 * - every record acknowledged as written (`flush()` returned — handed to the kernel) and not
 *   released is recovered, in order, byte for byte; nothing released before the last
 *   reported release comes back (the read pointer), i.e. at-least-once from that pointer.
 * Power loss is not covered by this test: only `sync()` (fdatasync) protects against it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DiskSpillStore } from '../../packages/sluice/src/core/spill.js';
import { STEP_APPEND, STEP_RELEASE, crashRecord, type CrashRec } from './fixtures/spill-crash-child.js';

const child = fileURLToPath(new URL('./fixtures/spill-crash-child.ts', import.meta.url));

async function crashOnce(dir: string, killAfterAcked: number): Promise<{ acked: number; released: number; signal: string | null }> {
  const p = spawn(process.execPath, ['--import', 'tsx', child, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  let acked = 0;
  let released = 0;
  let buf = '';
  let killing = false;
  // Every report the child made before it died is read (the pipe keeps them), so `acked`
  // and `released` are the last promises the child made.
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const [what, n] = buf.slice(0, i).split(' ');
      buf = buf.slice(i + 1);
      if (what === 'acked') acked = Number(n);
      if (what === 'released') released = Number(n);
    }
    if (!killing && acked >= killAfterAcked) {
      killing = true;
      // At a random moment of a later iteration, not right after a report.
      setTimeout(() => p.kill('SIGKILL'), Math.random() * 30);
    }
  });
  const signal = await new Promise<string | null>((resolve) => p.on('close', (_code, sig) => resolve(sig)));
  if (!killing) throw new Error(`child exited before the kill (acked ${acked})`);
  return { acked, released, signal };
}

test('spill survives kill -9: acknowledged records recovered in order, nothing torn, released ones gone', { timeout: 120_000 }, async () => {
  for (const killAfterAcked of [3_000, 20_000]) {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-spill-crash-'));
    try {
      const { acked, released, signal } = await crashOnce(dir, killAfterAcked);
      assert.equal(signal, 'SIGKILL');
      const store = DiskSpillStore.open<CrashRec>({ dir, segmentBytes: 256 * 1024, spillMaxBytes: 512 * 2 ** 20 });
      const seqs: number[] = [];
      for (let e = store.shift(); e; e = store.shift()) {
        const want = crashRecord(e.seq);
        assert.deepEqual(e.value, want.value, `record ${e.seq} content`);
        assert.deepEqual(e.raw, want.raw);
        assert.equal(e.bytes, want.bytes);
        seqs.push(e.seq);
      }
      assert.ok(seqs.length > 0);
      for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, 'recovered records are contiguous and in order');
      const first = seqs[0];
      const last = seqs[seqs.length - 1];
      // Released (pointer written, then reported) never comes back; at most the one step the
      // child released without living to report it is missing beyond that.
      assert.ok(first >= released + 1, `first recovered ${first}: a record reported released (${released}) came back`);
      assert.ok(first <= released + STEP_RELEASE + 1, `first recovered ${first} skips unreleased records after ${released}`);
      assert.ok(last >= acked, `last recovered ${last} must cover the last acknowledged ${acked}`);
      assert.ok(last <= acked + STEP_APPEND, `last recovered ${last}: more than one step past the last acknowledged ${acked}`);
      const st = store.stats();
      process.stdout.write(
        `# kill after acked≥${killAfterAcked}: acked ${acked}, released ${released} → recovered ${first}..${last} (${seqs.length}), torn bytes cut ${st.tornBytesCut}\n`,
      );
      store.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});
