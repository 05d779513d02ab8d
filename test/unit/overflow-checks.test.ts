/**
 * The overflow experiment's checks can fail: each one is fed a variant that breaks it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { overflowChecks, type OverflowVariant } from '../../packages/lab/src/experiments/overflow.js';
import type { OverflowPolicy } from '../../packages/sluice/src/core/options.js';

const C = 1000;
const opts = { capacityPerSec: C, ratePerSec: 2500, spillMaxBytes: 1000, multiple: 2.5 };

function variant(policy: OverflowPolicy, over: Partial<OverflowVariant> = {}): OverflowVariant {
  const accepted = policy === 'block' ? 5000 : 12_500;
  const dropped = policy === 'drop-newest' || policy === 'drop-oldest' ? 7500 : 0;
  const base: OverflowVariant = {
    policy,
    memoryLimitMb: 256,
    limitMechanism: 'cgroup-v1',
    exitCode: 0,
    exitSignal: null,
    oomKilled: false,
    oomKillCount: 0,
    survived: true,
    offered: accepted,
    achievedOfferedPerSec: policy === 'block' ? 1000 : 2500,
    notSent: 0,
    accepted,
    committed: accepted - dropped,
    dropped,
    droppedByReason: dropped ? { [policy]: dropped } : {},
    spilled: policy === 'spill' ? 7000 : 0,
    inFlight: 0,
    rejected: 0,
    ledgerBalanced: true,
    sinkItems: accepted - dropped,
    sinkOrderViolations: 0,
    sinkWriteMsMean: 16,
    sinkGapMsMean: 0,
    sinkCapacityAsRunPerSec: 1000,
    baselineRssMb: 80,
    maxRssMb: 120,
    memoryBoundMb: 85,
    cgroupMaxUsageMb: 100,
    spillMaxDiskBytes: policy === 'spill' ? 900 : 0,
    spillDiskBytesAtEnd: 0,
    producerBlockedMs: 0,
    producerMs: 5000,
    elapsedMs: 6000,
    latencyMs: null,
    samples: [],
    stderrTail: '',
  };
  if (policy === 'unbounded')
    Object.assign(base, { survived: false, exitCode: null, exitSignal: 'SIGKILL', oomKilled: true, oomKillCount: 1, sinkItems: null, ledgerBalanced: null, memoryBoundMb: null, committed: 2000, inFlight: 10_500 });
  return { ...base, ...over };
}

const all = (over: Partial<Record<OverflowPolicy, Partial<OverflowVariant>>> = {}) =>
  (['block', 'drop-newest', 'drop-oldest', 'spill', 'unbounded'] as const).map((p) => variant(p, over[p]));

const failing = (v: OverflowVariant[]) => overflowChecks(v, opts).filter((c) => !c.pass).map((c) => c.name);

test('overflow checks: a run that meets every figure passes every check', () => {
  assert.deepEqual(failing(all()), []);
});

test('overflow checks: each broken figure fails its check', () => {
  const cases: [Partial<Record<OverflowPolicy, Partial<OverflowVariant>>>, RegExp][] = [
    [{ unbounded: { oomKilled: false, oomKillCount: 0, exitSignal: null, exitCode: 0 } }, /unbounded: OOM-killed/],
    [{ block: { survived: false } }, /block: survived/],
    [{ 'drop-oldest': { maxRssMb: 80 + 86 } }, /drop-oldest: max RSS/],
    [{ spill: { ledgerBalanced: false } }, /spill: ledger balances/],
    [{ spill: { sinkItems: 12_499 } }, /spill: committed − items counted by the sink/],
    [{ block: { sinkOrderViolations: 1 } }, /block: items delivered out of order/],
    [{ block: { dropped: 1, droppedByReason: { x: 1 }, committed: 4999, sinkItems: 4999 } }, /block: items dropped or rejected/],
    [{ 'drop-newest': { dropped: 3000, committed: 9500, sinkItems: 9500, droppedByReason: { 'drop-newest': 3000 } } }, /drop-newest: \|dropped fraction/],
    [{ 'drop-newest': { droppedByReason: { 'drop-oldest': 7500 } } }, /drop-newest: drops counted under its own reason/],
    [{ 'drop-oldest': { sinkItems: 4000, committed: 4000, inFlight: 1000 } }, /drop-oldest: (dropped − items missing|ledger)/],
    [{ spill: { spilled: 0 } }, /spill: items spilled/],
    [{ spill: { spillMaxDiskBytes: 1001 } }, /spill: peak disk/],
    [{ spill: { spillDiskBytesAtEnd: 10 } }, /spill: segment bytes left/],
    [{ spill: { achievedOfferedPerSec: 1900 } }, /spill: offered load achieved/],
  ];
  for (const [over, re] of cases) {
    const f = failing(all(over));
    assert.ok(f.some((n) => re.test(n)), `${JSON.stringify(over)} should fail ${re}, failed: ${JSON.stringify(f)}`);
  }
});
