/**
 * Child-process entry: steady-rate HTTP load from a second process (autocannon), with a
 * cycle of request kinds (e.g. three good batches then one bomb), counting answers per
 * kind and status. Used by the `bomb` experiment and by test/integration/serve.test.ts.
 *
 *   node --import tsx src/lab/mixed-load.ts '<json MixedLoadSpec>'   (or dist/src/lab/mixed-load.js)
 *
 * Prints one JSON line (MixedLoadResult) on stdout. autocannon corrects latencies for
 * coordinated omission when a rate is set (its `overallRate`), so a stalled server shows up
 * in the percentiles instead of slowing the load.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface MixedLoadSpec {
  url: string;
  durationSec: number;
  connections: number;
  /** Requests per second, all connections together. */
  overallRate: number;
  /** Cycled in order by each connection. */
  requests: { kind: string; bodyFile: string; headers: Record<string, string> }[];
  timeoutSec?: number;
}

export interface MixedLoadResult {
  /** kind → status → count (status 0: no answer). */
  byKind: Record<string, Record<string, number>>;
  sent: number;
  answered: number;
  errors: number;
  timeouts: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  durationSec: number;
}

interface AutocannonResult {
  latency: { p50: number; p90: number; p99: number; max: number; mean: number };
  requests: { sent: number; total: number };
  errors: number;
  timeouts: number;
  duration: number;
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

export async function runMixedLoad(spec: MixedLoadSpec): Promise<MixedLoadResult> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  const byKind: Record<string, Record<string, number>> = {};
  const requests = spec.requests.map((r) => {
    const body = readFileSync(r.bodyFile);
    byKind[r.kind] ??= {};
    return {
      method: 'POST',
      path: new URL(spec.url).pathname,
      headers: { 'content-type': 'application/x-ndjson', ...r.headers },
      body,
      onResponse: (status: number) => {
        const k = byKind[r.kind];
        k[String(status)] = (k[String(status)] ?? 0) + 1;
      },
    };
  });
  const u = new URL(spec.url);
  const res = await autocannon({
    url: `${u.protocol}//${u.host}`,
    connections: spec.connections,
    overallRate: spec.overallRate,
    duration: spec.durationSec,
    timeout: spec.timeoutSec ?? 10,
    requests,
  });
  return {
    byKind,
    sent: res.requests.sent,
    answered: Object.values(byKind).reduce((s, k) => s + Object.values(k).reduce((a, b) => a + b, 0), 0),
    errors: res.errors,
    timeouts: res.timeouts,
    latencyMs: { p50: res.latency.p50, p90: res.latency.p90, p99: res.latency.p99, max: res.latency.max, mean: res.latency.mean },
    durationSec: res.duration,
  };
}

/** How to start this file as a child process, from source (tsx) or compiled. */
export function mixedLoadCommand(): { command: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  return { command: process.execPath, args: self.endsWith('.ts') ? ['--import', 'tsx', self] : [self] };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const spec = JSON.parse(process.argv[2] ?? '{}') as MixedLoadSpec;
  runMixedLoad(spec).then(
    (r) => process.stdout.write(JSON.stringify(r) + '\n'),
    (e) => {
      process.stderr.write(`mixed-load: ${(e as Error)?.stack ?? e}\n`);
      process.exit(1);
    },
  );
}
