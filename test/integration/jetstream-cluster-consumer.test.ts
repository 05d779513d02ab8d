/**
 * Two `sluice run` workers started together on a new durable consumer of an R3 stream, on a
 * three-node cluster of its own (own ports and store dirs; never the system NATS), draining a
 * backlog into PostgreSQL. A consumer just created has no leader for a moment; a pull sent
 * then is answered 503, and nats.js's consume() pulls again only after two missed heartbeats,
 * so one worker idled for seconds while the other took every record (the `scaleout` lab's
 * drains read 120,000 + 0). The source now opens once the consumer has a leader.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { inCI, requirePostgres } from '../helpers/services.js';
import { NATS_SERVER_BIN } from '../../packages/lab/src/cluster.js';
import { Topology } from '../../packages/lab/src/scaleout-topology.js';

test('jetstream cluster: two run workers started together on a new R3 consumer both commit records', { timeout: 180_000 }, async (t) => {
  const db = await requirePostgres(t);
  if (!db) return;
  if (spawnSync(NATS_SERVER_BIN, ['--version']).status !== 0) {
    if (inCI) throw new Error('nats-server not installed: required in CI');
    t.skip('nats-server not installed');
    return;
  }
  const N = 40_000;
  const dir = await mkdtemp(join(tmpdir(), 'sluice-jscluster-'));
  const topo = new Topology({ natsNodes: 3, replicas: 3, databaseUrl: db, workDir: dir, ackWaitMs: 10_000, workers: 2 });
  let natsDir = '';
  try {
    await topo.open();
    natsDir = join(dir, `nats-${topo.tag}`);
    const js = jetstream(topo.nc);
    for (let i = 0; i < N; i += 1000)
      await Promise.all(Array.from({ length: 1000 }, (_, j) => js.publish(`${topo.stream}.in`, JSON.stringify({ n: i + j }), { msgID: `jsc-${i + j}` })));
    const ws = [topo.worker(0, 'fresh'), topo.worker(1, 'fresh')];
    await Promise.all(ws.map((w) => w.start()));
    assert.ok(await topo.waitDrained('fresh', 60_000), 'the backlog drains');
    const ledgers = [];
    for (const w of ws) {
      const r = await w.stop();
      assert.equal(r.code, 0, `${w.name} exits 0`);
      assert.ok(r.ledger, `${w.name} printed its ledger`);
      assert.equal(r.ledger!.accepted, r.ledger!.committed + r.ledger!.dropped + r.ledger!.deadLettered + r.ledger!.inFlight, r.ledger!.text);
      ledgers.push(r.ledger!);
    }
    const rows = (await topo.query(`SELECT count(*)::int AS n FROM "${topo.table}"`)).rows[0].n;
    assert.equal(rows, N, 'one row per record');
    const split = ledgers.map((l) => l.committed);
    // Both pulled from the start; before the fix one of them committed 0 here.
    assert.ok(split.every((c) => c >= N * 0.1), `both workers committed a share: ${split.join(' + ')}`);
  } finally {
    await topo.close();
    await rm(dir, { recursive: true, force: true });
  }
  assert.ok(topo.cluster.nodes.every((n) => !n.alive()), 'nats-server stopped');
  assert.ok(natsDir !== '' && !existsSync(natsDir), 'store removed');
});
