/**
 * Realistic result envelopes for report tests, shaped like the real result files (the
 * batching figures are from a quick run on the lab machine), so tests never run a sweep.
 */
import type { Check, HostInfo, ResultEnvelope } from '../../packages/lab/src/types.js';

export const HOST: HostInfo = { cpus: 2, cpuModel: 'AMD EPYC', nodeVersion: 'v20.20.2', platform: 'linux 6.18', totalMemMb: 24106, hostname: 'vm' };

function envelope(experiment: string, body: Record<string, unknown>, checks: Check[]): ResultEnvelope {
  return { experiment, createdAt: '2026-11-27T00:43:17.404Z', host: HOST, sloMs: 20, quick: true, elapsedMs: 14271, ...body, checks };
}

const lat = (p50: number, p99: number, max = p99 * 1.2) => ({ count: 1000, mean: p50, p50, p90: (p50 + p99) / 2, p99, p999: max, max });

function run(variant: 'unbatched' | 'batched', loadMultiple: number, offeredPerSec: number, throughputPerSec: number, opsPerItem: number, p50: number, p99: number, meanBatch: number, blockedMs: number) {
  const committed = Math.round(throughputPerSec * 1.5);
  return {
    variant,
    loadMultiple,
    offeredPerSec,
    durationMs: 1500,
    elapsedMs: 1502,
    offered: committed,
    accepted: committed,
    committed,
    dropped: 0,
    droppedByReason: {},
    deadLettered: 0,
    inFlight: 0,
    rejected: 0,
    notSent: 0,
    producerBlockedMs: blockedMs,
    throughputPerSec,
    fixedCostOps: Math.round(committed * opsPerItem),
    fixedCostOpsPerItem: opsPerItem,
    fixedCostKind: 'fsync',
    latencyMs: lat(p50, p99),
    batchSize: { count: 100, mean: meanBatch, p50: Math.round(meanBatch), p99: Math.round(meanBatch * 2), max: Math.round(meanBatch * 3), histogram: [[1, 10], [Math.round(meanBatch) + 1, 90]] },
    batchWaitMs: lat(p50 / 2, p99 / 2),
    flushReasons: variant === 'batched' ? { size: 0, bytes: 0, time: 250, drain: 1 } : { size: committed, bytes: 0, time: 0, drain: 0 },
    sloBreaches: p99 > 20 ? 100 : 0,
    ledgerBalanced: true,
    achievedOfferedPerSec: offeredPerSec,
    storedInSink: committed,
    window: variant === 'batched' ? { maxItems: 1024, maxWaitMs: 5, maxInFlight: 1 } : { maxItems: 1, maxWaitMs: 0, maxInFlight: 1 },
  };
}

export function batchingResult(): ResultEnvelope {
  return envelope(
    'batching',
    {
      sink: 'file',
      sinkDescription: 'file (write + fdatasync per batch) /tmp/sluice-batching-x/batching.ndjson',
      calibration: { fixedCostMs: 0.387, p90Ms: 0.523, samples: 150, unbatchedCapacityPerSec: 2584 },
      ladder: [0.5, 2, 10, 30],
      durationMs: 1500,
      load: 'poisson',
      generatorNote: 'the generator produced every load of the ladder (top: 77609/s)',
      runs: [
        run('unbatched', 0.5, 1292, 1338, 1, 1.63, 19.807, 1, 0),
        run('batched', 0.5, 1292, 1340, 0.1239, 4.851, 9.151, 8.07, 0),
        run('unbatched', 2, 5168, 3015, 1, 417.8, 922.111, 1, 530),
        run('batched', 2, 5168, 5233, 0.0346, 4.663, 7.735, 28.87, 0),
        run('unbatched', 10, 25840, 3351, 1, 1021.9, 1769.471, 1, 1388),
        run('batched', 10, 25840, 25848, 0.00717, 4.479, 7.515, 139.54, 0),
        run('unbatched', 30, 77520, 3253, 1, 1016.3, 2105.343, 1, 1438),
        run('batched', 30, 77520, 77553, 0.002259, 4.999, 11.135, 442.64, 0),
      ],
    },
    [
      { name: 'batched throughput ÷ unbatched at 30×C1', value: 23.84, op: '>=', threshold: 20, pass: true },
      { name: 'batched fixed-cost ops per item at 30×C1', value: 0.002259, op: '<=', threshold: 0.01, pass: true },
      { name: 'ledger balances in every run', value: true, op: '==', threshold: true, pass: true },
    ],
  );
}

export function windowResult(): ResultEnvelope {
  const cell = (load: 'low' | 'peak', maxItems: number, maxWaitMs: number, p99: number, offeredPerSec: number, flush: Record<string, number>, p50Batch: number) => ({
    maxItems,
    maxWaitMs,
    load,
    offeredPerSec,
    throughputPerSec: offeredPerSec,
    latencyMs: lat(p99 / 3, p99),
    fixedCostOpsPerItem: 1 / p50Batch,
    batchSize: { count: 100, mean: p50Batch, p50: p50Batch, p99: maxItems, max: maxItems, histogram: [[maxItems, 100]] },
    flushReasons: flush,
  });
  return envelope(
    'window',
    {
      grid: [
        cell('low', 512, 5, 9.4, 1000, { size: 2, bytes: 0, time: 198, drain: 0 }, 5),
        cell('peak', 512, 5, 14.2, 60000, { size: 470, bytes: 0, time: 30, drain: 0 }, 498),
        cell('low', 1024, 10, 15.1, 1000, { size: 0, bytes: 0, time: 100, drain: 0 }, 10),
        cell('peak', 1024, 10, 19.9, 60000, { size: 200, bytes: 0, time: 50, drain: 0 }, 1000),
      ],
      chosen: { maxItems: 512, maxWaitMs: 5, reason: 'fewest fixed-cost ops per item at peak with p99 ≤ SLO − 2 ms at both loads; runner-up 1024/10 breached the margin at peak' },
      replays: [
        { trace: 'bursty', source: 'synthetic', speedup: 1, offeredPeakPerSec: 60000, latencyMs: lat(4, 12.5), accepted: 1000, committed: 1000, dropped: 0, inFlight: 0 },
        { trace: 'azure-code', source: 'azure.csv', speedup: 40, offeredPeakPerSec: 60000, latencyMs: lat(4, 16.25), accepted: 2000, committed: 2000, dropped: 0, inFlight: 0 },
      ],
    },
    [{ name: 'chosen window p99 ≤ SLO at peak (ms)', value: 14.2, op: '<=', threshold: 20, pass: true }],
  );
}

export function overflowResult(): ResultEnvelope {
  const v = (policy: string, accepted: number, committed: number, dropped: number, p99: number | null, oomKilled: boolean, exitCode: number, exitSignal: string | null) => ({
    policy,
    memoryLimitMb: 256,
    limitMechanism: 'cgroup-v1',
    exitCode,
    exitSignal,
    oomKilled,
    accepted,
    committed,
    dropped,
    spilled: policy === 'spill' ? 40000 : 0,
    inFlight: 0,
    maxRssMb: oomKilled ? 256 : 90,
    latencyMs: p99 === null ? undefined : lat(p99 / 4, p99),
    samples: [
      { tMs: 0, queueItems: 0, queueBytes: 0, rssMb: 60, dropped: 0, spillBytes: 0, committed: 0 },
      { tMs: 250, queueItems: 2048, queueBytes: 400000, rssMb: 80, dropped: dropped / 2, spillBytes: 0, committed: committed / 2 },
    ],
  });
  return envelope(
    'overflow',
    {
      variants: [
        v('block', 100000, 100000, 0, 1800, false, 0, null),
        v('drop-newest', 100000, 52000, 48000, 12.5, false, 0, null),
        v('drop-oldest', 100000, 53000, 47000, 9.1, false, 0, null),
        v('spill', 100000, 100000, 0, 2400, false, 0, null),
        v('unbounded', 300000, 40000, 0, null, true, 137, 'SIGKILL'),
      ],
    },
    [{ name: 'unbounded OOM-killed', value: true, op: '==', threshold: true, pass: true }],
  );
}

export function poisonResult(): ResultEnvelope {
  const v = (strategy: string, lagSlopePerSec: number, p99: number, committed: number) => ({
    strategy,
    offeredPerSec: 2000,
    produced: 20000,
    committed,
    deadLettered: strategy === 'split-and-retry' ? 4 : 0,
    poisonInjected: 4,
    inFlight: 0,
    sinkCalls: 400,
    isolationSinkCallsMax: 21,
    maxBatchSize: 1024,
    lagSamples: [
      { tMs: 0, lag: 0 },
      { tMs: 5000, lag: lagSlopePerSec * 5 },
    ],
    lagSlopePerSec,
    latencyMs: lat(p99 / 3, p99),
  });
  return envelope(
    'poison',
    { variants: [v('split-and-retry', 3.2, 14.5, 19996), v('abort-whole-batch', 1960, 11.2, 6000)] },
    [{ name: 'split-and-retry lag slope within ±2% of offered', value: 3.2, op: 'within', threshold: [-40, 40], pass: true }],
  );
}

export function adaptiveResult(): ResultEnvelope {
  const s = (maxItems: number, maxWaitMs: number, regime: string, p99: number, ops: number, meetsSlo: boolean) => ({
    maxItems,
    maxWaitMs,
    regime,
    offeredPerSec: regime === 'low' ? 500 : 40000,
    latencyMs: lat(p99 / 3, p99),
    fixedCostOpsPerItem: ops,
    throughputPerSec: regime === 'low' ? 500 : 40000,
    meetsSlo,
    reconciled: true,
  });
  const a = (regime: string, p99: number, ops: number, meetsSlo: boolean) => ({
    regime,
    offeredPerSec: regime === 'low' ? 500 : 40000,
    settleMs: 2000,
    durationMs: 8000,
    latencyMs: lat(p99 / 3, p99),
    fixedCostOpsPerItem: ops,
    throughputPerSec: regime === 'low' ? 500 : 40000,
    meetsSlo,
  });
  return envelope(
    'adaptive',
    {
      regimes: [
        { name: 'low', offeredPerSec: 500 },
        { name: 'high', offeredPerSec: 40000 },
      ],
      statics: [s(512, 10, 'low', 14, 0.2, true), s(512, 10, 'high', 12, 0.0025, true), s(64, 2, 'low', 5, 0.5, true), s(64, 2, 'high', 300, 0.016, false)],
      bestStatic: { maxItems: 512, maxWaitMs: 10, worstRatio: 1.1, why: 'meets p99 in both regimes' },
      aimd: [a('low', 15.5, 0.125, true), a('high', 13, 0.0026, true)],
    },
    [{ name: 'AIMD low: p99 after settling (ms)', value: 15.5, op: '<=', threshold: 20, pass: true }],
  );
}
