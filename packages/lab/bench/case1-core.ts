/**
 * Case 1 — core overhead: a no-op sink, a 512-item / 5 ms window, the producer pushing as
 * fast as the contender accepts. One contender per process.
 *
 *   node --expose-gc dist/bench/case1-core.js --contender sluice --duration 2000 --warmup 500
 */
import { emit, main, num, parseArgs } from './lib/harness.js';
import { throughputRun } from './lib/throughput.js';

main(async () => {
  const a = parseArgs();
  const r = await throughputRun({
    caseName: 'core',
    contender: a.contender ?? 'sluice',
    durationMs: num(a, 'duration', 2000),
    warmupMs: num(a, 'warmup', 500),
    sink: async () => null,
    // A no-op sink keeps up with every producer; the cap is only a safety net here.
    cap: 16_384,
    otelMaxQueueSize: 16_384 + 1024,
  });
  emit(r);
});
