/**
 * The `scaleout` topology (issue 24, docs/scale.md), shared by the experiment and its
 * integration test:
 *
 *   clients → F × `sluice serve --sink nats://…/STREAM` → JetStream (R3) → M × `sluice run` → PostgreSQL
 *
 * Every process is a real child process (`packages/sluice/bin/sluice.js`), started and
 * killed here; `close()` stops them all, deletes the stream, drops the table and stops the
 * NATS nodes, whatever happened before (call it from a finally).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { ensureStream } from 'sluice';
import { cpuSecondsOf, machineCpu, postgresCpu, servedUrl, sluiceProc, startNatsCluster, type NatsCluster, type OpenLoopClient, type SluiceProc } from './cluster.js';

export interface TopologyOptions {
  natsNodes: number;
  replicas: number;
  databaseUrl: string;
  workDir: string;
  /** Redelivery delay after a worker dies (its unacked messages go to the others after this). */
  ackWaitMs: number;
  /** Workers the consumer is sized for (`--workers`). */
  workers: number;
  /** Extra `serve` flags. */
  doorArgs?: string[];
  log?: (l: string) => void;
}

export interface Reconciliation {
  offered: number;
  acknowledged: number;
  /** Distinct records (client sequence numbers) in the table. */
  committed: number;
  rows: number;
  /** Acknowledged to a client and not in the table. */
  missing: number;
  /** Rows beyond one per record. */
  duplicated: number;
  /** In the table without an acknowledgement (the client gave up on them, or their answer was lost). */
  storedNotAcknowledged: number;
  /** Offered, never acknowledged and not stored. */
  notStored: number;
}

export class Topology {
  readonly tag = randomBytes(3).toString('hex');
  readonly stream = `SCALEOUT_${this.tag.toUpperCase()}`;
  readonly table = `sluice_lab_scaleout_${this.tag}`;
  cluster!: NatsCluster;
  nc!: NatsConnection;
  private client: pg.Client | null = null;
  readonly doors: SluiceProc[] = [];
  readonly workers: SluiceProc[] = [];
  private consumers = new Set<string>();

  constructor(readonly o: TopologyOptions) {}

  async open(): Promise<void> {
    this.cluster = await startNatsCluster({ nodes: this.o.natsNodes, dir: join(this.o.workDir, `nats-${this.tag}`), log: this.o.log });
    this.nc = await this.cluster.connect();
    await ensureStream(await jetstreamManager(this.nc), this.stream, [`${this.stream}.in`], { replicas: this.o.replicas });
    await this.query('SELECT 1');
  }

  /**
   * A query on the lab's own connection, reconnecting (for up to 60 s) when PostgreSQL drops
   * it: other work on this machine may restart the server, and a lost bookkeeping connection
   * must not end the experiment or leave its processes behind.
   */
  async query(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
    const end = Date.now() + 60_000;
    for (;;) {
      try {
        if (!this.client) {
          const c = new pg.Client({ connectionString: this.o.databaseUrl, connectionTimeoutMillis: 3_000 });
          c.on('error', () => {
            if (this.client === c) this.client = null;
          });
          await c.connect();
          this.client = c;
        }
        return await this.client.query(sql, params);
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        const connection = /^(08|57P)/.test(code) || /ECONNREFUSED|ECONNRESET|terminat|Connection/i.test((e as Error).message);
        if (!connection || Date.now() > end) throw e;
        const c = this.client;
        this.client = null;
        await c?.end().catch(() => {});
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /** A front door (not started). */
  door(i: number): SluiceProc {
    const n = this.cluster.nodes[i % this.cluster.nodes.length];
    const p = sluiceProc(
      `door${i + 1}`,
      ['serve', '--port', '0', '--sink', `${n.url}/${this.stream}`, '--nats', this.cluster.serverList, '--replicas', String(this.o.replicas), ...(this.o.doorArgs ?? [])],
      /listening on/,
    );
    this.doors[i] = p;
    return p;
  }

  doorUrls(): string[] {
    return this.doors.filter((d) => d.alive()).map(servedUrl);
  }

  /** A `run` worker on durable `consumer` (not started). */
  worker(i: number, consumer = 'work'): SluiceProc {
    this.consumers.add(consumer);
    const n = this.cluster.nodes[(i + 1) % this.cluster.nodes.length];
    const p = sluiceProc(
      `w${i + 1}`,
      [
        'run', '--source', `${n.url}/${this.stream}/${consumer}`, '--nats', this.cluster.serverList, '--replicas', String(this.o.replicas),
        '--workers', String(this.o.workers), '--sink', this.o.databaseUrl, '--table', this.table, '--name', `w${i + 1}`,
        '--ack-wait-ms', String(this.o.ackWaitMs), '--metrics-port', '0',
      ],
      /ready/,
    );
    this.workers[i] = p;
    return p;
  }

  /** num_pending + num_ack_pending of a consumer (0 when drained). */
  async consumerLag(consumer = 'work'): Promise<number> {
    const jsm = await jetstreamManager(this.nc);
    const i = await jsm.consumers.info(this.stream, consumer);
    return i.num_pending + i.num_ack_pending;
  }

  async waitDrained(consumer: string, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      try {
        if ((await this.consumerLag(consumer)) === 0) return true;
      } catch {
        /* leader moving: ask again */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return false;
  }

  async rowCount(): Promise<number> {
    try {
      return (await this.query(`SELECT count(*)::int AS n FROM "${this.table}"`)).rows[0].n as number;
    } catch {
      return 0; // not created yet
    }
  }

  async truncate(): Promise<void> {
    await this.query(`TRUNCATE "${this.table}"`).catch(() => {});
  }

  /** Rows committed per `binMs` bin of received_at (epoch ms bin start → rows). */
  async committedBins(binMs: number, fromEpochMs: number, toEpochMs: number): Promise<Map<number, number>> {
    const r = await this.query(
      `SELECT (floor(extract(epoch FROM received_at) * 1000 / $1) * $1)::bigint AS b, count(*)::int AS n FROM "${this.table}"
        WHERE received_at >= to_timestamp($2 / 1000.0) AND received_at < to_timestamp($3 / 1000.0) GROUP BY 1`,
      [binMs, fromEpochMs, toEpochMs],
    );
    return new Map(r.rows.map((x) => [Number(x.b), x.n as number]));
  }

  /** p-quantile of (received_at − the record's intended arrival `t`) for rows received in a window (ms). */
  async endToEndQuantile(q: number, fromEpochMs: number, toEpochMs: number): Promise<number> {
    const r = await this.query(
      `SELECT percentile_disc($1) WITHIN GROUP (ORDER BY extract(epoch FROM received_at) * 1000 - (doc->>'t')::float8) AS v FROM "${this.table}"
        WHERE received_at >= to_timestamp($2 / 1000.0) AND received_at < to_timestamp($3 / 1000.0)`,
      [q, fromEpochMs, toEpochMs],
    );
    return Number(r.rows[0]?.v ?? NaN);
  }

  async reconcile(client: OpenLoopClient): Promise<Reconciliation> {
    const r = await this.query(`SELECT (doc->>'n')::bigint AS n, count(*)::int AS c FROM "${this.table}" GROUP BY 1`);
    const stored = new Map<number, number>(r.rows.map((x) => [Number(x.n), x.c as number]));
    let missing = 0;
    for (const n of client.acked) if (!stored.has(n)) missing++;
    let rows = 0;
    let storedNotAcknowledged = 0;
    for (const [n, c] of stored) {
      rows += c;
      if (!client.acked.has(n)) storedNotAcknowledged++;
    }
    const offered = client.stats.offeredItems;
    return {
      offered,
      acknowledged: client.acked.size,
      committed: stored.size,
      rows,
      missing,
      duplicated: rows - stored.size,
      storedNotAcknowledged,
      notStored: offered - client.acked.size - storedNotAcknowledged,
    };
  }

  /** CPU seconds of every process (doors, workers, NATS nodes) and of the machine. */
  async cpu(): Promise<{ procs: Record<string, number>; postgres: Map<number, number>; machine: { busy: number; total: number } }> {
    const procs: Record<string, number> = {};
    for (const p of [...this.doors, ...this.workers]) if (p) procs[p.name] = await cpuSecondsOf(p.pid());
    for (const n of this.cluster.nodes) procs[`nats-${n.name}`] = await cpuSecondsOf(n.pid());
    return { procs, postgres: await postgresCpu(), machine: await machineCpu() };
  }

  async close(): Promise<void> {
    for (const p of [...this.doors, ...this.workers]) if (p) await p.stop(15_000).catch(() => {});
    try {
      const jsm = await jetstreamManager(this.nc);
      for (const c of this.consumers) await jsm.consumers.delete(this.stream, c).catch(() => {});
      await jsm.streams.delete(this.stream).catch(() => {});
      await jsm.streams.delete(`${this.stream}_DLQ`).catch(() => {});
    } catch {
      /* cluster gone: its store dirs are removed below */
    }
    await this.nc?.close().catch(() => {});
    await this.query(`DROP TABLE IF EXISTS "${this.table}"`).catch(() => {});
    await this.query(`DROP TABLE IF EXISTS "${this.table}_dlq"`).catch(() => {});
    await this.client?.end().catch(() => {});
    await this.cluster?.stop();
  }
}

/** Per-bin rate (items/s) from timestamped counts. */
export function ratePerBin(events: { at: number; items: number }[] | Map<number, number>, binMs: number, from: number, to: number): { t: number; rate: number }[] {
  const n = Math.max(0, Math.ceil((to - from) / binMs));
  const bins = new Array<number>(n).fill(0);
  const add = (at: number, items: number) => {
    const i = Math.floor((at - from) / binMs);
    if (i >= 0 && i < n) bins[i] += items;
  };
  if (events instanceof Map) for (const [b, c] of events) add(b, c);
  else for (const e of events) add(e.at, e.items);
  return bins.map((c, i) => ({ t: from + i * binMs, rate: (c * 1000) / binMs }));
}

/**
 * Recovery after a kill.
 * - Baseline: the median rate (per bin) over the `baselineMs` before `killAt`, capped at the
 *   offered rate `offered`: under an open-loop load no steady level exceeds what is offered;
 *   a rate above it is the backlog of an earlier kill draining (clients resending after a
 *   leader election), and a baseline made of it would ask the next recovery for 2× the load.
 * - Only bins from `prior.steadyFrom` on count (the moment the previous kill's own recovery
 *   ended): before it the rate is that kill's outage, not a level. A baseline read inside an
 *   outage (rows stalled at 0 after a leader election) would be 0 and every recovery from it
 *   would read 0 s: a check that cannot fail. When fewer than half of `baselineMs` is left
 *   after `prior.steadyFrom`, the baseline is the previous kill's (`prior.baseline`, the last
 *   level read in steady state; the load is the same throughout).
 * - Recovered: the start of the first 1 s window (sliding by one bin) from which every window
 *   for the next `holdMs` (or up to the horizon, if nearer) is at or above `share` of the
 *   baseline; the recovery time is the end
 *   of that first window, counted from the kill (0 if the first windows already hold).
 *   Infinity if no such span starts before `horizon`. A dip after the throughput held is not
 *   this kill's (a batch commit that landed late, the next kill's run-up) and does not undo it.
 */
export function recoverySeconds(
  series: { t: number; rate: number }[],
  binMs: number,
  killAt: number,
  baselineMs: number,
  share: number,
  horizon: number,
  offered = Infinity,
  holdMs = 2_000,
  prior?: { steadyFrom: number; baseline: number },
): { baseline: number; baselineFrom: 'window' | 'previous kill'; seconds: number; lowest: number } {
  const from = Math.max(killAt - baselineMs, prior?.steadyFrom ?? -Infinity);
  const before = series.filter((b) => b.t >= from && b.t + binMs <= killAt);
  const usePrior = prior !== undefined && before.length * binMs < baselineMs / 2;
  const sorted = before.map((b) => b.rate).sort((a, b) => a - b);
  const baseline = usePrior ? prior.baseline : Math.min(offered, sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : 0);
  const per = Math.max(1, Math.round(1000 / binMs));
  const after = series.filter((b) => b.t >= Math.floor(killAt / binMs) * binMs && b.t + binMs <= horizon);
  const windows: { end: number; rate: number }[] = [];
  for (let i = 0; i + per <= after.length; i++) {
    const w = after.slice(i, i + per);
    windows.push({ end: w[per - 1].t + binMs, rate: w.reduce((a, b) => a + b.rate, 0) / per });
  }
  const lowest = windows.reduce((m, w) => Math.min(m, w.rate), Infinity);
  const hold = Math.max(1, Math.round(holdMs / binMs));
  const baselineFrom = usePrior ? 'previous kill' : 'window';
  for (let i = 0; i < windows.length; i++) {
    // Held for holdMs, or until the horizon (the next kill) if that comes first.
    if (windows.slice(i, i + hold).every((w) => w.rate >= share * baseline)) {
      return { baseline, baselineFrom, seconds: i === 0 ? 0 : Math.max(0, (windows[i].end - killAt) / 1000), lowest };
    }
  }
  return { baseline, baselineFrom, seconds: Infinity, lowest };
}
