/**
 * The lab's memory limit really limits: a child that grows without bound is killed by the
 * kernel inside a cgroup (SIGKILL, oom_kill counted), or aborts on V8's heap limit in the
 * fallback. Memory is kept small (96 MB limits) and each child dies within a second or two.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createMemoryLimit } from '../../packages/lab/src/memlimit.js';

// Grows by 8 MB every 10 ms, touching every page (Buffer.alloc zero-fills), forever.
const GROW_EXTERNAL = 'const k=[];setInterval(()=>k.push(Buffer.alloc(8<<20,1)),10)';
// Grows the V8 heap (strings in an array), forever.
const GROW_HEAP = 'const k=[];setInterval(()=>{for(let i=0;i<20000;i++)k.push("x".repeat(64)+i)},1)';

function run(cmd: string, args: string[]): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const t = setTimeout(() => c.kill('SIGKILL'), 30_000);
    c.on('error', reject);
    c.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stderr });
    });
  });
}

test('memory limit: a child growing without bound in the lab cgroup is OOM-killed by the kernel', { timeout: 60_000 }, async (t) => {
  const lim = createMemoryLimit(`sluice-memlimit-test-${process.pid}`, 96);
  try {
    if (!lim.mechanism.startsWith('cgroup')) {
      t.skip(`no writable memory cgroup here (${lim.note}): the experiment falls back to v8-heap`);
      return;
    }
    const [cmd, args] = lim.wrap(process.execPath, ['-e', GROW_EXTERNAL]);
    const r = await run(cmd, args);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(lim.oomKills() >= 1, `oom_kill count ${lim.oomKills()}`);
  } finally {
    await lim.remove();
  }
});

test('memory limit: the v8-heap fallback passes --max-old-space-size and the runtime aborts with "heap out of memory"', { timeout: 60_000 }, async () => {
  // An impossible group name makes every cgroup attempt fail: the fallback is what is left.
  const lim = createMemoryLimit('no/such/parent/sluice-test', 64);
  assert.equal(lim.mechanism, 'v8-heap');
  const [cmd, args] = lim.wrap(process.execPath, ['-e', GROW_HEAP]);
  assert.deepEqual([cmd, args[0]], [process.execPath, '--max-old-space-size=64']);
  const r = await run(cmd, args);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /heap out of memory/i);
  await lim.remove();
});
