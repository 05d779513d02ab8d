import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function lab(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'packages/sluice/src/cli/main.ts', 'lab', ...args], { encoding: 'utf8', timeout: 60_000 });
}

test('sluice lab window: a missing --trace or a bad --speedup is one line and exit 2, before any run', async () => {
  const out = await mkdtemp(join(tmpdir(), 'sluice-lab-cli-'));
  try {
    for (const [args, pattern] of [
      [['--trace', join(out, 'nope.csv')], /invalid option --trace=.*nope\.csv.*no such file.*\[SLUICE_INVALID_OPTION\]/],
      [['--speedup', '-1'], /invalid option --speedup="-1": expected a number > 0 \[SLUICE_INVALID_OPTION\]/],
    ] as const) {
      const r = lab(['window', '--quick', '--out', out, ...args]);
      assert.equal(r.status, 2, r.stderr);
      const err = r.stderr.trim();
      assert.equal(err.split('\n').length, 1, err);
      assert.match(err, pattern);
      // Nothing measured, nothing written.
      assert.doesNotMatch(r.stdout, /calibrate/);
      assert.equal(existsSync(join(out, 'results', 'window.json')), false);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
