/**
 * Experiment `tenants`: one tenant over its rate does not slow another (issue 26, docs/serve.md
 * "Running it on a network"). One `sluice serve --tokens` server in a child process (the bomb
 * experiment's child, file sink); open-loop load from separate processes (src/mixed-load.ts,
 * latency from each request's intended send time). The steady tenant sends the same load in
 * three settings, interleaved and repeated: alone; while a flooding tenant sends 4× its
 * records/s limit (refused 429 before its bodies are read); while the same flood comes with a
 * token that has no limit (the contrast: what the limit buys). Both tenants' p99 are recorded.
 * The verdicts follow the lab's protocol (src/protocol.ts): REPS interleaved rounds, medians, a
 * tolerance from NOISE_RUNS identical "alone" runs measured first, "not decidable here" inside
 * the noise. The isolation margin is fixed by the load before any run: beside the limited
 * flood, the steady tenant's p99 may grow at most as the records/s the server admits do
 * (steady + the flood's limit, ÷ steady); the refused excess must add nothing beyond that.
 */
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import zlib from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { hashToken } from 'sluice';
import { check } from '../checks.js';
import { NOISE_RUNS, REPS, interleaved, judge, median, noiseOf } from '../protocol.js';
import { createMemoryLimit } from '../memlimit.js';
import { mdTable } from '../runner.js';
import type { MixedLoadResult, MixedLoadSpec } from '../mixed-load.js';
import { RecordFactory } from '../records/records.js';
import type { Check, Experiment, ResultEnvelope } from '../types.js';
import { runLoad, startChild } from './bomb.js';

const STEADY = 'slk_lab-steady-0123456789abcdefghijklmnopqrstu';
const FLOOD = 'slk_lab-flood-0123456789abcdefghijklmnopqrstuv';
const FLOOD_UNLIMITED = 'slk_lab-flood-free-0123456789abcdefghijklmnopq';
const OPS = 'slk_lab-ops-0123456789abcdefghijklmnopqrstuvwxyz';

type Setting = 'steady alone' | 'with limited flood' | 'with unlimited flood';
const SETTINGS: Setting[] = ['steady alone', 'with limited flood', 'with unlimited flood'];

interface Run {
  round: number;
  setting: Setting;
  steady: MixedLoadResult;
  flood: MixedLoadResult | null;
}


export const tenants: Experiment = {
  name: 'tenants',
  title: 'Tenants: one over its rate does not slow another',
  description:
    'One authenticated server (`sluice serve --tokens`, file sink) in a child process. A steady tenant sends 100-record gzip batches at a fixed rate ' +
    '(open loop, from a second process) alone, while a flooding tenant sends 4× its records/s limit, and while the same flood comes with an unlimited token; ' +
    'the three settings interleaved and repeated. Records both tenants’ p50/p99 and answers by status, and the records the limited tenant got through.',

  async run(ctx) {
    // The verdict protocol (src/protocol.ts): k = REPS interleaved rounds, a tolerance measured
    // before them from NOISE_RUNS identical "steady alone" runs.
    const rounds = REPS;
    const durationSec = ctx.quick ? 3 : 6;
    const batch = 100;
    const steadyRate = 20; // requests/s → 2,000 records/s
    const floodRate = 40; // requests/s → 4,000 records/s
    const floodLimit = 1000; // records/s: the flood sends 4× this
    const f = new RecordFactory({ seed: 11 });
    const body = zlib.gzipSync(Buffer.concat(Array.from({ length: batch }, (_, i) => [f.make(i, 0).raw!, Buffer.from('\n')]).flat()));
    const bodyFile = join(ctx.workDir, 'batch.ndjson.gz');
    writeFileSync(bodyFile, body);
    const tokensFile = join(ctx.workDir, 'tokens.json');
    writeFileSync(
      tokensFile,
      JSON.stringify({
        tokens: [
          { name: 'steady', hash: hashToken(STEADY), routes: ['ingest'] },
          { name: 'flood', hash: hashToken(FLOOD), routes: ['ingest'], rate: { recordsPerSec: floodLimit, bytesPerSec: 1e9 } },
          { name: 'flood-unlimited', hash: hashToken(FLOOD_UNLIMITED), routes: ['ingest'] },
          { name: 'ops', hash: hashToken(OPS), routes: ['metrics', 'healthz'] },
        ],
      }),
    );
    const limit = createMemoryLimit(`sluice-tenants-${process.pid}`, 1024);
    const child = await startChild({ variant: 'capped', dataDir: join(ctx.workDir, 'data'), serve: { auth: { tokensFile } } }, limit);
    const load = (token: string, rate: number, kind: string, startAtMs: number): MixedLoadSpec => ({
      url: `${child.url}/ingest`,
      durationSec,
      startAtMs,
      connections: 8,
      overallRate: rate,
      requests: [{ kind, bodyFile, headers: { 'content-encoding': 'gzip', 'content-type': 'application/x-ndjson', authorization: `Bearer ${token}` } }],
      warmupPath: '/healthz',
    });
    const runs: Run[] = [];
    const floodRecords: number[] = [];
    const calibration: MixedLoadResult[] = [];
    try {
      ctx.progress.start('tenants: tolerance calibration (steady alone)', NOISE_RUNS);
      for (let k = 0; k < NOISE_RUNS; k++) {
        const r = await runLoad(load(STEADY, steadyRate, 'steady', Date.now() + 1500));
        calibration.push(r);
        ctx.progress.tick(1, `steady alone: p99 ${r.latencyMs.p99} ms`);
        await sleep(500);
      }
      ctx.progress.done();
      ctx.progress.start('tenants: settings × rounds', rounds * SETTINGS.length);
      await interleaved(SETTINGS, rounds, async (setting, round) => {
        const startAtMs = Date.now() + 1500;
        const floodToken = setting === 'with limited flood' ? FLOOD : FLOOD_UNLIMITED;
        const before = await tenantRecords(child.url, 'flood');
        const [steady, flood] = await Promise.all([
          runLoad(load(STEADY, steadyRate, 'steady', startAtMs)),
          setting === 'steady alone' ? Promise.resolve(null) : runLoad(load(floodToken, floodRate, 'flood', startAtMs)),
        ]);
        if (setting === 'with limited flood') floodRecords.push(((await tenantRecords(child.url, 'flood')) - before) / durationSec);
        runs.push({ round, setting, steady, flood });
        ctx.progress.tick(1, `${setting}: steady p99 ${steady.latencyMs.p99} ms${flood ? `, flood p99 ${flood.latencyMs.p99} ms` : ''}`);
        // Let the sink catch up on the unlimited flood's records before the next setting.
        await sleep(500);
      });
      ctx.progress.done();
    } finally {
      child.proc.kill('SIGTERM');
      await Promise.race([child.exited, sleep(30_000)]);
      if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
      await child.exited;
      await limit.remove();
    }
    let ledger: { balanced?: boolean } | null = null;
    for (const l of child.stdout)
      try {
        const m = JSON.parse(l) as { ledger?: { balanced?: boolean } };
        if (m.ledger) ledger = m.ledger;
      } catch {
        /* not ours */
      }

    const p99 = (s: Setting, who: 'steady' | 'flood') => runs.filter((r) => r.setting === s).map((r) => (who === 'steady' ? r.steady : r.flood)?.latencyMs.p99 ?? NaN);
    const summary = SETTINGS.map((s) => ({ setting: s, steadyP99Ms: median(p99(s, 'steady')), steadyP99ByRound: p99(s, 'steady'), floodP99Ms: s === 'steady alone' ? null : median(p99(s, 'flood')) }));
    const noise = noiseOf(calibration.map((r) => r.latencyMs.p99));
    // Paired by round: each round ran the three settings back to back, so a slow minute of the
    // machine falls on both sides of a ratio.
    const byRound = (s: Setting) => Array.from({ length: rounds }, (_, k) => runs.find((r) => r.round === k && r.setting === s)!.steady.latencyMs.p99);
    const ratioTo = (s: Setting) => byRound(s).map((x, k) => x / Math.max(1, byRound('steady alone')[k]));
    const ratio = ratioTo('with limited flood');
    // Reported, not judged: the same ratio beside the unlimited flood (what the limit buys here).
    const unlimitedRatio = ratioTo('with unlimited flood');
    const steadyStatuses = (s: Setting) => runs.filter((r) => r.setting === s).flatMap((r) => Object.keys(r.steady.byKind.steady ?? {}));
    const floodStatuses = runs.filter((r) => r.setting === 'with limited flood').map((r) => r.flood!.byKind.flood ?? {});
    // The isolation claim as a fixed margin, set from the load's own figures before any run:
    // the limited flood is still admitted up to its limit, so beside it the server takes
    // (steady + limit) records/s where alone it takes steady. Its p99 may grow at most in that
    // proportion (isolationRatio); the three quarters of the flood over the limit, refused from
    // their headers, must add nothing measurable on top. The tolerance is the calibration's, the
    // same rule as bomb's "good p99 with bombs ÷ without": 2 × the relative MAD of p99 over the
    // identical alone runs, × the threshold. When that tolerance (or the rounds' own spread)
    // exceeds the ratio's distance from the margin, the check says "not decidable here".
    const isolationRatio = (steadyRate * batch + floodLimit) / (steadyRate * batch);
    const ratioTolerance = 2 * noise.relMad * isolationRatio;
    const ratioFrom = `2 × the relative MAD of the steady tenant's p99 over ${NOISE_RUNS} identical "steady alone" runs before the rounds, × ${isolationRatio}`;
    const mad = `MAD of the steady tenant's p99 over ${NOISE_RUNS} identical "steady alone" runs before the rounds`;
    const aloneSlo = judge('steady p99 alone ≤ SLO (ms)', byRound('steady alone'), '<=', ctx.sloMs, { tolerance: noise.mad, toleranceFrom: mad, unit: 'ms' });
    const checks: Check[] = [
      judge(
        `steady p99 with the limited flood ÷ alone, paired by round ≤ ${isolationRatio} (= (steady ${steadyRate * batch} + flood limit ${floodLimit}) ÷ steady records/s)`,
        ratio,
        '<=',
        isolationRatio,
        { tolerance: ratioTolerance, toleranceFrom: ratioFrom },
      ),
      withinSloBeside(judge(`steady p99 with the limited flood ≤ SLO (ms)`, byRound('with limited flood'), '<=', ctx.sloMs, { tolerance: noise.mad, toleranceFrom: mad, unit: 'ms' }), aloneSlo),
      check('steady tenant answered 200 only, in every setting', SETTINGS.every((s) => steadyStatuses(s).every((st) => st === '200')), '==', true),
      check('limited flood: refused with 429', floodStatuses.every((k) => (k['429'] ?? 0) > 0), '==', true),
      // Long-run rate + burst (1 s) + what the requests admitted at once carry (8 connections × 100), over the run.
      check('limited flood: records/s it got through (median) ≤ limit + (burst + 8 × 100) ÷ duration', median(floodRecords), '<=', floodLimit + (floodLimit + 8 * batch) / durationSec),
      check('ledger balanced after drain', ledger?.balanced === true, '==', true),
    ];
    return { rounds, durationSec, batch, steadyRate, floodRate, floodLimit, isolationRatio, noise, calibrationP99Ms: noise.values, ratioByRound: ratio, unlimitedRatioByRound: unlimitedRatio, aloneSlo, summary, floodRecordsPerSec: floodRecords, runs, ledger, checks };
  },

  markdown(r: ResultEnvelope) {
    const runs = r.runs as Run[];
    const t = mdTable(
      ['round', 'setting', 'steady answers', 'steady p50 ms', 'steady p99 ms', 'flood answers', 'flood p50 ms', 'flood p99 ms'],
      runs.map((x) => [
        x.round,
        x.setting,
        JSON.stringify(x.steady.byKind.steady ?? {}),
        x.steady.latencyMs.p50,
        x.steady.latencyMs.p99,
        x.flood ? JSON.stringify(x.flood.byKind.flood ?? {}) : '—',
        x.flood?.latencyMs.p50 ?? '—',
        x.flood?.latencyMs.p99 ?? '—',
      ]),
    );
    const s = r.summary as { setting: string; steadyP99Ms: number; floodP99Ms: number | null }[];
    return (
      `### tenants — steady ${r.steadyRate} req/s × ${r.batch} records; flood ${r.floodRate} req/s × ${r.batch} records against a limit of ${r.floodLimit} records/s; ` +
      `${r.rounds} rounds × ${r.durationSec} s, settings interleaved\n\n` +
      `**Tolerance calibration** (before the rounds): ${NOISE_RUNS} identical "steady alone" runs, p99 ${(r.calibrationP99Ms as number[]).join(', ')} ms (MAD ${(r.noise as { mad: number }).mad} ms). ` +
      `Steady p99 ÷ alone, paired by round: with the limited flood ${(r.ratioByRound as number[]).map((x) => x.toFixed(2)).join(', ')} ` +
      `(judged ≤ ${r.isolationRatio}: the records/s the server takes beside it ÷ alone); with the unlimited flood ${(r.unlimitedRatioByRound as number[]).map((x) => x.toFixed(2)).join(', ')} (reported). ` +
      `Steady p99 alone against the SLO: median ${(r.aloneSlo as Check).value} ms, ${(r.aloneSlo as Check).verdict === 'undecidable' ? 'not decidable' : (r.aloneSlo as Check).verdict}.\n\n` +
      t +
      `\n\nMedian over rounds: ${s.map((x) => `${x.setting}: steady p99 ${x.steadyP99Ms} ms${x.floodP99Ms !== null ? `, flood p99 ${x.floodP99Ms} ms` : ''}`).join('; ')}. ` +
      `Limited flood got through ${(r.floodRecordsPerSec as number[]).map((x) => x.toFixed(0)).join(', ')} records/s.\n`
    );
  },
};

/**
 * "Steady p99 beside the limited flood ≤ SLO", given the steady tenant's own p99 alone against
 * the SLO in the same rounds. Where the machine does not hold the SLO at this load without any
 * flood (alone: fail or not decidable), a p99 over the SLO beside the flood says nothing about
 * the flood: a fail is then "not decidable here". A pass stands.
 */
export function withinSloBeside(beside: Check, alone: Check): Check {
  if (beside.verdict !== 'fail' || alone.verdict === 'pass') return beside;
  return {
    ...beside,
    pass: false,
    verdict: 'undecidable',
    judged: { ...beside.judged!, needs: `the steady tenant alone does not meet the SLO here either (median p99 ${alone.value} ms, ${alone.verdict === 'fail' ? 'over it' : 'not decidable'}): decidable where it does` },
  };
}

async function tenantRecords(url: string, tenant: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${OPS}` } })).text();
  const m = new RegExp(`^sluice_tenant_records_total\\{tenant="${tenant}"[^}]*\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}
