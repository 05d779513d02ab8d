/**
 * Experiment `scaleout` (issue 24): beyond one process.
 *
 *   clients → F × `sluice serve --sink nats://…/STREAM` → JetStream (3 nodes, R3) → M × `sluice run` → PostgreSQL
 *
 * Its own three-node JetStream cluster on loopback (Debian's nats-server, own ports and store
 * dirs, cluster routes; the system NATS on 4222 is never used), an R3 stream, PostgreSQL as
 * the sink (its own table, dropped after). Three parts:
 *
 * 1. Workers: a backlog of B records in the stream drained by 1, 2, 3 `run` workers on a
 *    fresh durable consumer each (the doors out of the way): items/s from the commit times
 *    of the rows stored once every worker was ready, CPU of each process and the machine's
 *    CPU share over that same span, and how the records split between the workers.
 * 2. Front doors: 1 and 2 `serve` processes under an open-loop load above one door's
 *    capacity (2 workers draining): acknowledged items/s, p99 from each request's intended
 *    arrival to its 200, end-to-end p99 to the row's commit, CPU of each process.
 * 3. Kills under a steady open-loop load (2 doors, 3 workers): kill -9 one worker, then the
 *    stream's JetStream leader, then one door, each restarted a few seconds later, each kill
 *    once the previous one settled (see killPhase). Clients reach the doors through a
 *    balancer (OpenLoopClient in ../cluster.ts), as docs/scale.md deploys them. Then
 *    reconcile: acknowledged vs committed vs missing vs duplicated rows; the time until
 *    throughput (acknowledged and committed, 1 s windows) is back to ≥ 80% of its level
 *    before each kill; the statuses clients saw during the leader election.
 *
 * Every client is reconciled (0 missing, 0 duplicated) and every process stopped cleanly
 * prints a balanced ledger. Everything started is stopped in a finally, and checked gone.
 */
import net from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { jetstreamManager, jetstream } from '@nats-io/jetstream';
import { check } from '../checks.js';
import { REPS, judge, median } from '../protocol.js';
import { mdTable } from '../runner.js';
import type { Check, Experiment, ExperimentContext, ResultEnvelope } from '../types.js';
import { OpenLoopClient, quantile, type LedgerLine } from '../cluster.js';
import { Topology, ratePerBin, recoverySeconds, type Reconciliation } from '../scaleout-topology.js';

/** After each kill, throughput must be back to this share of its level before… */
export const RECOVERY_SHARE = 0.8;
/**
 * …within this many seconds. Budget: a dead worker's unacked messages wait one ack wait
 * (ACK_WAIT_MS) before redelivery; a leader election takes a few seconds and clients wait
 * their Retry-After (1 s) before resending; a dead door costs the requests it held when it
 * died (clients resend them after 200 ms), and its refused connections are passed on to the
 * other door at once by the clients' balancer (OpenLoopClient in ../cluster.ts).
 */
export const RECOVERY_BOUND_S = 12;
export const ACK_WAIT_MS = 5_000;
/** A step that adds a process must add ≥ 10% throughput, unless the machine's CPU was already ≥ 85% busy (the ceiling). */
export const SCALE_GAIN = 0.1;
export const CPU_CEILING = 0.85;
/** How long past its planned time a kill waits for the previous one to settle (see killPhase). */
const SETTLE_MAX_MS = 15_000;
const BIN_MS = 250;
const ITEMS_PER_REQUEST = 50;
const DOOR_ARGS = ['--max-in-flight', '4', '--max-concurrent-requests', '64'];

interface CpuShare {
  /** CPU seconds per process over the measured window. */
  procs: Record<string, number>;
  /** Every PostgreSQL server process on the machine (other users of the server included). */
  postgres: number;
  /** Machine busy time not in any process above: other work on this shared machine. */
  rest: number;
  /** Busy share of the whole machine (all cores) over the window, 0..1. */
  machineBusy: number;
  /** Busy CPU seconds of the whole machine. */
  machineBusySeconds: number;
  /** CPU seconds of this lab process (the load generator). */
  client: number;
  windowS: number;
}

interface WorkerRow {
  workers: number;
  /** Rows the drains stored (every repetition's; the check wants each to be the backlog). */
  items: number;
  /** Median over the interleaved repetitions. */
  itemsPerSec: number;
  /** Each repetition's items/s, in order. */
  itemsPerSecRuns: number[];
  drained: boolean;
  /** Fewest rows, over the repetitions, stored after every worker was ready (what the rate reads). */
  steadyRows: number;
  /** Median over the repetitions of the busiest worker's share of the records it committed. */
  busiestShare: number;
  cpu: CpuShare;
  ledgers: LedgerLine[];
}

interface DoorRow {
  doors: number;
  offeredPerSec: number;
  ackedPerSec: number;
  p50Ms: number;
  p99Ms: number;
  e2eP99Ms: number;
  statuses: Record<string, number>;
  cpu: CpuShare;
  reconcile: Reconciliation;
  drained: boolean;
}

interface KillRow {
  what: string;
  atS: number;
  process: string;
  restartedAtS: number;
  /** `spacingS` after the previous kill; the kill waited past it until the previous one settled. */
  plannedAtS: number;
  /** False when the previous kill's backlog had not drained within SETTLE_MAX_MS (the kill went ahead). */
  settled: boolean;
  ackedBaseline: number;
  committedBaseline: number;
  /** Where the baseline was read: the seconds before the kill, or (inside the previous kill's outage) the previous kill's. */
  baselineFrom: string;
  /** Refused connections the clients' balancer passed on to the other door between this kill and the next. */
  failedOver: number;
  ackedRecoveryS: number;
  committedRecoveryS: number;
  recoveryS: number;
  lowestAckedPerSec: number;
  lowestCommittedPerSec: number;
}

function delta(a: Awaited<ReturnType<Topology['cpu']>>, b: Awaited<ReturnType<Topology['cpu']>>, clientS: number, windowS: number): CpuShare {
  const procs: Record<string, number> = {};
  for (const k of Object.keys(b.procs)) {
    // A process started within the window counts from 0 (its start-up included).
    const before = a.procs[k];
    const d = b.procs[k] - (Number.isFinite(before) ? before : 0);
    if (Number.isFinite(d)) procs[k] = Math.round(d * 100) / 100;
  }
  let postgres = 0;
  for (const [pid, v] of b.postgres) if (Number.isFinite(v)) postgres += v - (a.postgres.get(pid) ?? 0);
  const busy = b.machine.busy - a.machine.busy;
  const tracked = Object.values(procs).reduce((x, y) => x + y, 0) + postgres + clientS;
  return {
    procs,
    postgres: Math.round(postgres * 100) / 100,
    rest: Math.round(Math.max(0, busy - tracked) * 100) / 100,
    machineBusy: busy / Math.max(1e-9, b.machine.total - a.machine.total),
    machineBusySeconds: busy,
    client: clientS,
    windowS,
  };
}

const clientCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const countStatuses = (xs: { status: number | string }[]) => xs.reduce<Record<string, number>>((a, x) => ((a[String(x.status)] = (a[String(x.status)] ?? 0) + 1), a), {});

async function fillBacklog(topo: Topology, n: number): Promise<void> {
  const js = jetstream(topo.nc);
  const subject = `${topo.stream}.in`;
  const pad = 'x'.repeat(100);
  for (let i = 0; i < n; i += 500) {
    const acks: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(n, i + 500); j++) acks.push(js.publish(subject, JSON.stringify({ n: j, t: Date.now(), src: 'backlog', pad }), { msgID: `backlog-${topo.tag}-${j}` }));
    await Promise.all(acks);
  }
}

async function workerSeries(ctx: ExperimentContext, topo: Topology, backlog: number): Promise<WorkerRow[]> {
  await fillBacklog(topo, backlog);
  // One drain of the backlog lasts about a second here, so one drain per worker count is one
  // sample of the machine's noise (a run of 1→2 workers read −2% and another +20% on the same
  // code). The protocol instead (src/protocol.ts): REPS interleaved repetitions (1 2 3, 1 2 3,
  // …), each on a consumer of its own over the same backlog, and the medians are compared.
  const runs = new Map<number, { itemsPerSec: number; items: number; steady: number; drained: boolean; cpu: CpuShare; ledgers: LedgerLine[] }[]>();
  for (let rep = 0; rep < REPS; rep++)
    for (const m of [1, 2, 3]) {
      ctx.progress.tick(1, `drain with ${m} worker(s), repetition ${rep + 1} of ${REPS}`);
      await topo.truncate();
      const consumer = `drain${m}r${rep}`;
      const ws = Array.from({ length: m }, (_, i) => topo.worker(i, consumer));
      await Promise.all(ws.map((w) => w.start()));
      // Read from the moment the last worker is ready: a worker's start-up costs about 0.8 CPU
      // s here (Node loading the CLI), and counted from the first start the CPU window held up
      // to three start-ups and the idle time between them (a 30,000-record drain read 62% busy
      // while the machine was at its ceiling). Rows stored before then are left out of the rate
      // (`steady` says how many were counted); the backlog is large enough that few are.
      const readyAt = Date.now();
      const c0 = await topo.cpu();
      const k0 = clientCpu();
      const t0 = performance.now();
      const drained = await topo.waitDrained(consumer, 180_000);
      const c1 = await topo.cpu();
      const cpu = delta(c0, c1, clientCpu() - k0, (performance.now() - t0) / 1000);
      const ledgers: LedgerLine[] = [];
      for (const w of ws) {
        const r = await w.stop();
        if (r.ledger) ledgers.push(r.ledger);
      }
      topo.workers.length = 0;
      const st = (
        await topo.query(
          `SELECT count(*)::int AS n, (count(*) FILTER (WHERE received_at >= to_timestamp($1 / 1000.0)))::int AS steady,
                  extract(epoch FROM max(received_at) - to_timestamp($1 / 1000.0)) AS s FROM "${topo.table}"`,
          [readyAt],
        )
      ).rows[0];
      const list = runs.get(m) ?? [];
      list.push({ itemsPerSec: Math.round(st.steady / Math.max(0.001, Number(st.s))), items: st.n, steady: st.steady, drained, cpu, ledgers });
      runs.set(m, list);
      ctx.log(`scaleout: ${m} worker(s), repetition ${rep + 1}: ${list.at(-1)!.itemsPerSec} items/s over the ${st.steady} rows stored once all were ready, machine CPU ${(cpu.machineBusy * 100).toFixed(0)}%`);
    }
  const rows: WorkerRow[] = [...runs].map(([m, list]) => {
    const ips = list.map((x) => x.itemsPerSec);
    const med = median(ips);
    // The CPU figures of the repetition whose rate is the median.
    const mid = list.find((x) => x.itemsPerSec === med) ?? list[0];
    return {
      workers: m,
      items: list.every((x) => x.items === list[0].items) ? list[0].items : Math.min(...list.map((x) => x.items)),
      itemsPerSec: Math.round(med),
      itemsPerSecRuns: ips,
      drained: list.every((x) => x.drained),
      steadyRows: Math.min(...list.map((x) => x.steady)),
      busiestShare: median(list.map((x) => (x.ledgers.length ? Math.max(...x.ledgers.map((l) => l.committed)) / Math.max(1, x.ledgers.reduce((a, l) => a + l.committed, 0)) : NaN))),
      cpu: mid.cpu,
      ledgers: list.flatMap((x) => x.ledgers),
    };
  });
  // The backlog is not part of what clients send next.
  await (await jetstreamManager(topo.nc)).streams.purge(topo.stream);
  await topo.truncate();
  topo.workers.length = 0;
  return rows;
}

async function doorSeries(ctx: ExperimentContext, topo: Topology, rate: number, durationMs: number): Promise<DoorRow[]> {
  const rows: DoorRow[] = [];
  const ws = [topo.worker(0), topo.worker(1)];
  for (const w of ws) await w.start();
  for (const f of [1, 2]) {
    ctx.progress.tick(1, `${f} front door(s)`);
    for (let i = 0; i < f; i++) if (!topo.doors[i]?.alive()) await topo.door(i).start();
    await topo.truncate();
    const client = new OpenLoopClient(topo.doorUrls(), { itemsPerRequest: ITEMS_PER_REQUEST, prefix: `doors${f}` });
    const c0 = await topo.cpu();
    const k0 = clientCpu();
    const t0 = Date.now();
    await client.offer(rate, durationMs);
    const t1 = t0 + durationMs;
    await sleep(Math.max(0, t1 - Date.now()));
    const c1 = await topo.cpu();
    const cpu = delta(c0, c1, clientCpu() - k0, (Date.now() - t0) / 1000);
    await client.settle(60_000);
    const drained = await topo.waitDrained('work', 120_000);
    const acked = client.stats.acks.filter((a) => a.at >= t0 && a.at < t1).reduce((s, a) => s + a.items, 0);
    const lat = client.stats.latenciesMs;
    rows.push({
      doors: f,
      offeredPerSec: rate,
      ackedPerSec: Math.round(acked / (durationMs / 1000)),
      p50Ms: quantile(lat, 0.5),
      p99Ms: quantile(lat, 0.99),
      e2eP99Ms: Math.round(await topo.endToEndQuantile(0.99, t0, Date.now() + 1000)),
      statuses: countStatuses(client.stats.attempts),
      cpu,
      reconcile: await topo.reconcile(client),
      drained,
    });
    ctx.log(`scaleout: ${f} door(s): ${rows.at(-1)!.ackedPerSec} acked items/s of ${rate} offered, p99 ${rows.at(-1)!.p99Ms} ms, machine CPU ${(cpu.machineBusy * 100).toFixed(0)}%`);
  }
  return rows;
}

async function killPhase(ctx: ExperimentContext, topo: Topology, rate: number, spacingMs: number, restartAfterMs: number) {
  // 2 doors and 2 workers are running; a third worker joins.
  await topo.worker(2).start();
  await topo.waitDrained('work', 60_000);
  await topo.truncate();
  // Small requests: at a few hundred items/s, 250 ms bins of 50-item requests would be too coarse to see a dip.
  const client = new OpenLoopClient(topo.doorUrls(), { itemsPerRequest: 10, prefix: 'kills' });
  const t0 = Date.now();
  const baselineMs = Math.min(4_000, spacingMs - 1_000);
  const kills: { what: string; process: string; at: number; restartedAt: number; plannedAt: number; settled: boolean }[] = [];
  // The load runs until endOffer(), spacingMs after the last kill.
  const load = client.offer(rate, spacingMs * 4 + 3 * SETTLE_MAX_MS);
  const restarts: Promise<void>[] = [];
  const lag = () => topo.consumerLag('work').catch(() => Infinity);
  // The steady level of what is pending, read over the baseline window before the first kill:
  // clients' requests not yet acknowledged, and the consumer's lag.
  const steady = { outstanding: 0, lag: 0 };
  while (Date.now() < t0 + spacingMs - 250) {
    if (Date.now() >= t0 + spacingMs - baselineMs) {
      steady.outstanding = Math.max(steady.outstanding, client.outstanding);
      steady.lag = Math.max(steady.lag, await lag());
    }
    await sleep(250);
  }
  const limits = { outstanding: Math.max(10, 2 * steady.outstanding), lag: Math.max(rate, 2 * steady.lag) };
  /**
   * A kill is read against the level before it, so it waits until the previous kill is over:
   * its victim restarted, and for 1 s the clients' pending requests and the consumer's lag
   * back under twice their steady level before the first kill (a leader election leaves
   * seconds of resent requests and undelivered records behind it, which drain above the
   * offered rate and would hide the next kill's dip); then `baselineMs` more, for the level.
   * Never earlier than `spacingMs` after the previous kill; at most SETTLE_MAX_MS later (then
   * the kill is marked as not settled).
   */
  const waitSettled = async (prev: (typeof kills)[number], prevRestart: Promise<void>): Promise<{ plannedAt: number; settled: boolean }> => {
    const plannedAt = prev.at + spacingMs;
    const deadline = plannedAt + SETTLE_MAX_MS;
    await Promise.race([prevRestart, sleep(Math.max(0, deadline - Date.now()))]);
    let okSince = NaN;
    while (Date.now() < deadline) {
      const ok = Number.isFinite(prev.restartedAt) && client.outstanding <= limits.outstanding && (await lag()) <= limits.lag;
      okSince = ok ? (Number.isNaN(okSince) ? Date.now() : okSince) : NaN;
      if (ok && Date.now() - okSince >= 1_000) {
        await sleep(Math.max(0, Math.max(plannedAt, okSince + baselineMs) - Date.now()));
        return { plannedAt, settled: true };
      }
      await sleep(250);
    }
    return { plannedAt, settled: false };
  };
  const killNext = async (what: string, pick: () => Promise<{ name: string; kill9(): void; start(): Promise<void> }>, after?: () => void) => {
    let plan = { plannedAt: t0 + spacingMs, settled: true };
    if (kills.length === 0) await sleep(Math.max(0, plan.plannedAt - Date.now()));
    else plan = await waitSettled(kills[kills.length - 1], restarts[restarts.length - 1]);
    const victim = await pick();
    const at = Date.now();
    victim.kill9();
    const entry = { what, process: victim.name, at, restartedAt: NaN, ...plan };
    kills.push(entry);
    ctx.log(`scaleout: kill -9 ${victim.name} (${what}) at ${((at - t0) / 1000).toFixed(1)} s${plan.settled ? '' : ' (the previous kill had not settled)'}`);
    restarts.push(
      (async () => {
        await sleep(restartAfterMs);
        await victim.start();
        entry.restartedAt = Date.now();
        after?.();
      })(),
    );
  };
  ctx.progress.tick(1, 'kill a worker');
  await killNext('run worker', async () => topo.workers[0]);
  ctx.progress.tick(1, 'kill the stream leader');
  let leaderElection = { from: 0 };
  await killNext('JetStream leader of the stream', async () => {
    const n = await topo.cluster.streamLeader(topo.nc, topo.stream);
    if (!n) throw new Error('stream has no leader before the kill');
    leaderElection = { from: Date.now() };
    return n;
  });
  ctx.progress.tick(1, 'kill a front door');
  await killNext('front door', async () => topo.doors[0], () => client.setDoors(topo.doorUrls()));
  await sleep(Math.max(0, kills[kills.length - 1].at + spacingMs - Date.now()));
  const loadEnd = client.endOffer();
  const loadMs = loadEnd - t0;
  await load;
  await Promise.all(restarts);
  client.setDoors(topo.doorUrls());
  await client.settle(90_000);
  const drained = await topo.waitDrained('work', 180_000);
  await sleep(500);

  const acked = ratePerBin(client.stats.acks, BIN_MS, t0, loadEnd);
  const committed = ratePerBin(await topo.committedBins(BIN_MS, t0, loadEnd), BIN_MS, t0, loadEnd);
  const rows: KillRow[] = [];
  // Each kill's "level before" is read after the previous kill's recovery ended (see recoverySeconds).
  let priorA: { steadyFrom: number; baseline: number } | undefined;
  let priorC: { steadyFrom: number; baseline: number } | undefined;
  for (const [i, k] of kills.entries()) {
    // The last kill's horizon stops short of the load's end, where the last commits trail off.
    const horizon = kills[i + 1]?.at ?? loadEnd - 500;
    const a = recoverySeconds(acked, BIN_MS, k.at, baselineMs, RECOVERY_SHARE, horizon, rate, undefined, priorA);
    const c = recoverySeconds(committed, BIN_MS, k.at, baselineMs, RECOVERY_SHARE, horizon, rate, undefined, priorC);
    priorA = { steadyFrom: k.at + a.seconds * 1000, baseline: a.baseline };
    priorC = { steadyFrom: k.at + c.seconds * 1000, baseline: c.baseline };
    rows.push({
      what: k.what,
      process: k.process,
      atS: (k.at - t0) / 1000,
      restartedAtS: (k.restartedAt - t0) / 1000,
      plannedAtS: (k.plannedAt - t0) / 1000,
      settled: k.settled,
      ackedBaseline: Math.round(a.baseline),
      committedBaseline: Math.round(c.baseline),
      baselineFrom: a.baselineFrom === c.baselineFrom ? a.baselineFrom : `acked: ${a.baselineFrom}, committed: ${c.baselineFrom}`,
      ackedRecoveryS: a.seconds,
      committedRecoveryS: c.seconds,
      recoveryS: Math.max(a.seconds, c.seconds),
      lowestAckedPerSec: Math.round(a.lowest),
      lowestCommittedPerSec: Math.round(c.lowest),
      failedOver: client.stats.failedOver.filter((x) => x >= k.at && x < horizon).length,
    });
  }
  const leaderRow = rows.find((r) => r.what.startsWith('JetStream'))!;
  const electionEnd = leaderElection.from + (Number.isFinite(leaderRow.recoveryS) ? leaderRow.recoveryS * 1000 : spacingMs) + 1_000;
  const electionStatuses = countStatuses(client.stats.attempts.filter((x) => x.at >= leaderElection.from && x.at <= electionEnd));
  // Sink or NATS outages the processes reported (e.g. PostgreSQL restarted by other work on this machine): a kill's recovery window that overlaps one is not the kill's alone.
  const outages = [...topo.doors, ...topo.workers].flatMap((p) => p.events.map((e) => ({ process: p.name, atS: (e.at - t0) / 1000, line: e.line }))).sort((a, b) => a.atS - b.atS);
  return {
    rate,
    outages,
    loadS: loadMs / 1000,
    spacingS: spacingMs / 1000,
    restartAfterS: restartAfterMs / 1000,
    settleLimits: { ...limits, steadyOutstanding: steady.outstanding, steadyLag: steady.lag, maxWaitS: SETTLE_MAX_MS / 1000 },
    kills: rows,
    electionStatuses,
    statuses: countStatuses(client.stats.attempts),
    p99Ms: quantile(client.stats.latenciesMs, 0.99),
    unacked: client.stats.unacked,
    drained,
    reconcile: await topo.reconcile(client),
    series: acked.map((b, i) => ({ t: (b.t - t0) / 1000, acked: b.rate, committed: committed[i]?.rate ?? 0 })),
  };
}

/** The first configuration whose machine CPU share reached the ceiling, or null. */
function ceilingOf<T extends { cpu: CpuShare }>(rows: T[], label: (r: T) => string): string | null {
  const r = rows.find((x) => x.cpu.machineBusy >= CPU_CEILING);
  return r ? label(r) : null;
}

const DEFAULT_DATABASE_URL = 'postgres://root@127.0.0.1:5432/test';

async function postgresReachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const sock = net.connect(Number(u.port || 5432), u.hostname || '127.0.0.1');
    const done = (ok: boolean) => (sock.destroy(), resolve(ok));
    sock.setTimeout(1500, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export const scaleout: Experiment = {
  name: 'scaleout',
  title: 'Beyond one process: front doors, a JetStream cluster and workers, with nodes killed mid-run',
  description:
    'Its own three-node JetStream cluster (nats-server, loopback, R3 stream) between `sluice serve --sink nats://…` front doors and `sluice run` workers on one ' +
    'durable consumer writing to PostgreSQL. Workers 1, 2, 3 drain a backlog; 1 and 2 doors take an open-loop load; then under steady load a worker, the ' +
    "stream's leader and a door are killed with -9 and restarted; every acknowledged record is reconciled against the table.",
  cliOptions: [{ flags: '--rate <items/s>', description: 'open-loop rate offered to the doors in part 2 (default 3000)' }],

  async run(ctx) {
    // PostgreSQL is this experiment's sink; the lab's embedded defaults have none, so without a
    // reachable server the experiment says it was not run here, and judges nothing.
    const databaseUrl = ctx.databaseUrl ?? process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
    if (!(await postgresReachable(databaseUrl))) {
      ctx.log(`scaleout: not run: PostgreSQL not reachable at ${new URL(databaseUrl).host} (set DATABASE_URL or --database-url)`);
      return { notRunnable: `PostgreSQL not reachable at ${new URL(databaseUrl).host}`, checks: [] };
    }
    const q = ctx.quick;
    // A drain of the quick backlog lasts ≈ 6 s here (drains of 1 s spread ±20% from run to run).
    const backlog = q ? 120_000 : 200_000;
    const doorRate = Number(ctx.args.rate ?? 3000);
    const doorMs = q ? 6_000 : 12_000;
    const spacingMs = q ? 9_000 : 14_000;
    const restartAfterMs = q ? 3_000 : 5_000;
    // Steps: 3 × REPS drains, 2 door settings, 3 kills, the reconciliation.
    ctx.progress.start('scaleout', 3 * REPS + 6);
    const topo = new Topology({ natsNodes: 3, replicas: 3, databaseUrl, workDir: ctx.workDir, ackWaitMs: ACK_WAIT_MS, workers: 3, doorArgs: DOOR_ARGS, log: ctx.log });
    let workers: WorkerRow[] = [];
    let doors: DoorRow[] = [];
    let kills: Awaited<ReturnType<typeof killPhase>> | null = null;
    const ledgers: { process: string; ledger: LedgerLine }[] = [];
    let natsDir = '';
    try {
      await topo.open();
      natsDir = join(ctx.workDir, `nats-${topo.tag}`);
      workers = await workerSeries(ctx, topo, backlog);
      doors = await doorSeries(ctx, topo, doorRate, doorMs);
      // Steady load for the kills: half of what two doors acknowledged, so that a dip and its recovery are visible.
      const killRate = Math.max(300, Math.min(1500, Math.round(0.5 * Math.min(...doors.map((d) => d.ackedPerSec)))));
      kills = await killPhase(ctx, topo, killRate, spacingMs, restartAfterMs);
      for (const p of [...topo.doors, ...topo.workers]) {
        const r = await p.stop();
        if (r.ledger) ledgers.push({ process: p.name, ledger: r.ledger });
      }
      ctx.progress.tick(1, 'reconciled');
    } finally {
      await topo.close();
      ctx.progress.done();
    }
    const leftovers = [...topo.doors, ...topo.workers].filter((p) => p?.alive()).length + (topo.cluster?.nodes.filter((n) => n.alive()).length ?? 0);

    // --- checks ---
    const checks: Check[] = [];
    const allRec: [string, Reconciliation][] = [...doors.map((d) => [`${d.doors} door(s)`, d.reconcile] as [string, Reconciliation]), ...(kills ? [['kills', kills.reconcile] as [string, Reconciliation]] : [])];
    for (const [name, r] of allRec) {
      checks.push(
        check(`${name}: acknowledged records missing from the table`, r.missing, '==', 0),
        check(`${name}: duplicated rows`, r.duplicated, '==', 0),
        check(`${name}: every offered record acknowledged in the end (clients resend until 200)`, r.acknowledged, '==', r.offered),
      );
    }
    for (const w of workers) checks.push(check(`${w.workers} worker(s): the backlog drained (${w.items} of ${backlog} rows)`, w.drained && w.items === backlog, '==', true));
    const everyLedger = [...workers.flatMap((w) => w.ledgers.map((l) => ({ process: `drain${w.workers}`, ledger: l }))), ...ledgers];
    checks.push(
      check(`ledgers balanced, in_flight 0 (accepted = committed + dropped + dead_lettered + in_flight) in all ${everyLedger.length} clean stops`, everyLedger.every((l) => l.ledger.balanced && l.ledger.inFlight === 0), '==', true),
    );
    // Scaling up to the ceiling.
    const wCeil = ceilingOf(workers, (r) => `${r.workers} worker(s)`);
    for (let i = 1; i < workers.length; i++) {
      const a = workers[i - 1];
      const b = workers[i];
      const atCeiling = a.cpu.machineBusy >= CPU_CEILING;
      // Past the CPU ceiling a worker has no CPU left to add: no claim there (the result names
      // the ceiling). Listed as not decidable here rather than left out, with how much of the
      // machine's busy time was other work on this shared machine.
      if (atCeiling) {
        checks.push({
          name: `${a.workers}→${b.workers} workers: not judged: the machine was ${(a.cpu.machineBusy * 100).toFixed(0)}% busy at ${a.workers} (CPU ceiling ${CPU_CEILING * 100}%; ${a.cpu.rest.toFixed(1)} of ${a.cpu.machineBusySeconds.toFixed(1)} busy CPU s were other work on this machine); gains by repetition ${b.itemsPerSecRuns.map((x, r) => `${((x / a.itemsPerSecRuns[r] - 1) * 100).toFixed(0)}%`).join(', ')}`,
          value: Math.round(a.cpu.machineBusy * 100) / 100,
          op: '<',
          threshold: CPU_CEILING,
          pass: false,
          verdict: 'undecidable',
        });
        continue;
      }
      // Paired by repetition (the drains ran 1 2 3, 1 2 3, …): each repetition's gain, judged on
      // the median; inside their own spread the gain is "not decidable here".
      const gains = b.itemsPerSecRuns.map((x, r) => x / a.itemsPerSecRuns[r] - 1);
      checks.push(
        judge(`${a.workers}→${b.workers} workers: items/s gain, paired by repetition (${(a.cpu.machineBusy * 100).toFixed(0)}% busy at ${a.workers}, below the ${CPU_CEILING * 100}% ceiling)`, gains, '>=', SCALE_GAIN, {
          tolerance: 0,
          toleranceFrom: 'no separate calibration: the spread of these paired repetitions decides',
        }),
      );
    }
    if (doors.length === 2 && doors[0].ackedPerSec >= (1 - SCALE_GAIN) * doorRate) {
      // One door already acknowledged the whole offered load: a second cannot add throughput at
      // this load (the load is open-loop and fixed), so what can be judged is that two doors
      // carry it as well, not a gain.
      checks.push(
        check(
          `1 door acknowledged ${doors[0].ackedPerSec} of ${doorRate} offered items/s (not the bottleneck at this load): 2 doors acknowledge ≥ ${(1 - SCALE_GAIN) * 100}% of it too (items/s)`,
          doors[1].ackedPerSec,
          '>=',
          (1 - SCALE_GAIN) * doorRate,
        ),
      );
    } else if (doors.length === 2) {
      const gain = doors[1].ackedPerSec / doors[0].ackedPerSec - 1;
      checks.push(
        check(
          `1→2 front doors: +${(gain * 100).toFixed(0)}% acknowledged items/s, or the machine was at its CPU ceiling already (${(doors[0].cpu.machineBusy * 100).toFixed(0)}% busy with 1)`,
          gain >= SCALE_GAIN || doors[0].cpu.machineBusy >= CPU_CEILING,
          '==',
          true,
        ),
      );
    }
    if (kills) {
      for (const [i, k] of kills.kills.entries()) {
        const until = kills.kills[i + 1]?.atS ?? kills.loadS;
        const overlap = kills.outages.filter((o) => /sink down/.test(o.line) && o.atS >= k.atS - 1 && o.atS < until);
        const note = overlap.length ? `; a sink outage reported by ${overlap[0].process} at ${overlap[0].atS.toFixed(1)} s overlaps` : '';
        const from = (k.baselineFrom === 'window' ? '' : `; level before from the ${k.baselineFrom}`) + (k.settled ? '' : '; killed before the previous kill settled');
        checks.push(
          check(
            `after kill -9 of the ${k.what} (${k.process}): throughput back to ≥ ${RECOVERY_SHARE * 100}% of its level before (acked ${k.ackedBaseline}/s, committed ${k.committedBaseline}/s${from}) within ${RECOVERY_BOUND_S} s (acked ${k.ackedRecoveryS} s, committed ${k.committedRecoveryS} s${note})`,
            k.recoveryS,
            '<=',
            RECOVERY_BOUND_S,
          ),
        );
      }
      checks.push(check('every consumer drained after the kills (lag 0)', kills.drained, '==', true));
    }
    checks.push(check('every process started (3 nats-server, doors, workers) is gone, and the NATS store dirs removed', leftovers === 0 && natsDir !== '' && !existsSync(natsDir), '==', true));

    // --- projection (on paper) ---
    const w1 = workers[0];
    const d1 = doors[0];
    const perItem = (cpuS: number, items: number) => (items > 0 ? (cpuS / items) * 1e6 : NaN); // µs of CPU per item
    const sumOf = (cpu: CpuShare, prefix: string) => Object.entries(cpu.procs).filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
    const workerUs = w1 ? perItem(sumOf(w1.cpu, 'w'), w1.items) : NaN;
    const doorItems = d1 ? d1.ackedPerSec * (doorMs / 1000) : 0;
    const doorUs = d1 ? perItem(sumOf(d1.cpu, 'door'), doorItems) : NaN;
    const natsUs = d1 ? perItem(sumOf(d1.cpu, 'nats'), doorItems) : NaN;
    const pgUs = w1 ? perItem(w1.cpu.postgres, w1.items) : NaN;
    const perMachineItemsPerSec = 2e6 / (doorUs + workerUs + natsUs);
    const pgCeilingItemsPerSec = 2e6 / pgUs;
    const projection = {
      label: 'PROJECTION (arithmetic on measured CPU per item, not a measurement)',
      cpuUsPerItem: { door: Math.round(doorUs), worker: Math.round(workerUs), natsR3: Math.round(natsUs), postgres: Math.round(pgUs) },
      measuredIn: 'door and NATS: the 1-door open-loop run; worker and PostgreSQL: the 1-worker drain',
      assumptions:
        'machines of 2 cores like this one, each running doors, workers and a NATS node in the measured CPU proportions; PostgreSQL on its own 2-core machine ' +
        "(one table: it does not scale out); no network cost beyond loopback's; CPU-bound throughout",
      perMachineItemsPerSec: Math.round(perMachineItemsPerSec),
      postgresCeilingItemsPerSec: Math.round(pgCeilingItemsPerSec),
      byMachines: [1, 2, 4, 8].map((n) => ({ machines: n, itemsPerSec: Math.round(Math.min(n * perMachineItemsPerSec, pgCeilingItemsPerSec)) })),
    };
    return {
      backlog,
      doorRate,
      recoveryBoundS: RECOVERY_BOUND_S,
      recoveryShare: RECOVERY_SHARE,
      ackWaitMs: ACK_WAIT_MS,
      cpuCeiling: { share: CPU_CEILING, workers: wCeil, doors: ceilingOf(doors, (r) => `${r.doors} door(s)`), cores: 2 },
      workers,
      doors,
      kills,
      ledgers,
      projection,
      checks,
    };
  },

  markdown(r: ResultEnvelope) {
    if (typeof r.notRunnable === 'string') return `Not run here: ${r.notRunnable}.\n`;
    const ws = r.workers as WorkerRow[];
    const ds = r.doors as DoorRow[];
    const k = r.kills as Awaited<ReturnType<typeof killPhase>> | null;
    const p = r.projection as { label: string; cpuUsPerItem: Record<string, number>; assumptions: string; perMachineItemsPerSec: number; postgresCeilingItemsPerSec: number; byMachines: { machines: number; itemsPerSec: number }[] };
    const ceil = r.cpuCeiling as { workers: string | null; doors: string | null; share: number };
    const fmtCpu = (c: CpuShare) =>
      Object.entries(c.procs).filter(([, v]) => v > 0.05).map(([n, v]) => `${n} ${v.toFixed(1)}`).join(', ') + `; postgres ${c.postgres.toFixed(1)}; lab client ${c.client.toFixed(1)}; rest of the machine ${c.rest.toFixed(1)}`;
    let s = `### scaleout — 3-node JetStream cluster (R3), PostgreSQL sink\n\n`;
    s += `**Workers** draining a backlog of ${r.backlog} records, read from the moment every worker was ready (rows stored from then on, CPU seconds per process over that span):\n\n`;
    s += mdTable(
      ['workers', 'items/s (median)', 'repetitions', 'rows read (fewest)', 'busiest worker\'s share', 'machine CPU', 'CPU s per process'],
      ws.map((w) => [w.workers, w.itemsPerSec, (w.itemsPerSecRuns ?? []).join(', '), w.steadyRows ?? '–', w.busiestShare === undefined ? '–' : `${Math.round(w.busiestShare * 100)}%`, `${(w.cpu.machineBusy * 100).toFixed(0)}%`, fmtCpu(w.cpu)]),
    );
    s += `\n\n**Front doors** under an open-loop load of ${r.doorRate} items/s (${ITEMS_PER_REQUEST} per request), 2 workers; latency from intended arrival:\n\n`;
    s += mdTable(
      ['doors', 'acked items/s', 'p50 ms', 'p99 ms', 'end-to-end p99 ms', 'statuses', 'machine CPU', 'CPU s per process'],
      ds.map((d) => [d.doors, d.ackedPerSec, Math.round(d.p50Ms), Math.round(d.p99Ms), d.e2eP99Ms, Object.entries(d.statuses).map(([a, b]) => `${a}×${b}`).join(' '), `${(d.cpu.machineBusy * 100).toFixed(0)}%`, fmtCpu(d.cpu)]),
    );
    s += `\n\nCPU ceiling (machine ≥ ${ceil.share * 100}% busy, 2 cores): workers — ${ceil.workers ?? 'not reached'}; doors — ${ceil.doors ?? 'not reached'}.\n`;
    if (k) {
      const sl = k.settleLimits;
      s += `\n**Kills** under ${k.rate} items/s for ${k.loadS.toFixed(1)} s (2 doors, 3 workers), each restarted ${k.restartAfterS} s later; a kill comes ${k.spacingS} s after the previous one or, if later, once that one settled (victim back, ≤ ${sl?.outstanding} client requests pending and consumer lag ≤ ${sl?.lag} for 1 s, then the baseline window):\n\n`;
      s += mdTable(
        ['kill -9', 'process', 'at s (planned)', 'restarted at s', 'acked/s before', 'lowest', 'recovered (acked) s', 'committed/s before', 'lowest', 'recovered (committed) s', 'level before read from', 'refused, passed on'],
        k.kills.map((x) => [x.what, x.process, `${x.atS.toFixed(1)} (${x.plannedAtS?.toFixed(1) ?? '–'}${x.settled === false ? ', not settled' : ''})`, x.restartedAtS.toFixed(1), x.ackedBaseline, x.lowestAckedPerSec, x.ackedRecoveryS, x.committedBaseline, x.lowestCommittedPerSec, x.committedRecoveryS, x.baselineFrom ?? 'window', x.failedOver ?? '']),
      );
      s += `\n\n"Refused, passed on": connections to a dead door that the clients' balancer passed to the other door at once (nginx's default \`proxy_next_upstream error\`); a door that failed a connection is left out of the rotation for 10 s. Requests in flight on the door when it died are seen by their client as errors and resent.\n`;
      s += `\nStatuses clients saw during the leader election: ${Object.entries(k.electionStatuses).map(([a, b]) => `${a}×${b}`).join(', ') || 'none'}. All statuses: ${Object.entries(k.statuses).map(([a, b]) => `${a}×${b}`).join(', ')}.\n`;
      const rc = k.reconcile;
      const sinkOut = k.outages.filter((o) => /sink down|sink back/.test(o.line));
      if (sinkOut.length) s += `\nSink outages reported by the processes during the kills: ${sinkOut.slice(0, 8).map((o) => `${o.process} at ${o.atS.toFixed(1)} s: ${o.line.slice(0, 90)}`).join('; ')}.\n`;
      s += `\nReconciliation: offered ${rc.offered}, acknowledged ${rc.acknowledged}, committed ${rc.committed} (rows ${rc.rows}), missing ${rc.missing}, duplicated ${rc.duplicated}, stored without an acknowledgement ${rc.storedNotAcknowledged}.\n`;
    }
    s += `\n**${p.label}.** CPU µs per item: door ${p.cpuUsPerItem.door}, worker ${p.cpuUsPerItem.worker}, NATS (3 replicas) ${p.cpuUsPerItem.natsR3}, PostgreSQL ${p.cpuUsPerItem.postgres}. Assumptions: ${p.assumptions}. `;
    s += `Per machine ≈ ${p.perMachineItemsPerSec} items/s; PostgreSQL ceiling ≈ ${p.postgresCeilingItemsPerSec} items/s. ` + p.byMachines.map((b) => `${b.machines} machine(s): ≈ ${b.itemsPerSec}`).join('; ') + ' items/s (projected).\n';
    return s;
  },
};
