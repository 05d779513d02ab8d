/**
 * One variant of the `overflow` experiment, in its own process (so that its RSS is its own
 * and the unbounded variant can be OOM-killed without taking the lab down).
 *
 * Input: the JSON of an `OverflowChildConfig` as argv[2]. Output: JSON lines on stdout —
 * `{"type":"ready"}` with the baseline RSS, `{"type":"sample"}` every `sampleEveryMs`, and
 * `{"type":"result"}` at the end. stdout to a pipe is synchronous on Linux, so the samples
 * written before a SIGKILL reach the parent.
 */
import { performance } from 'node:perf_hooks';
import { Pipeline, type OfferResult } from 'sluice';
import { DiskSpillStore } from 'sluice';
import type { OverflowPolicy } from 'sluice';
import { envelope, type Envelope, type Sink } from 'sluice';
import { seededRng } from 'sluice';
import { PipelineMetrics } from 'sluice';
import type { LatencySummary } from 'sluice';
import { SlowSink } from 'sluice/testing';
import { RecordFactory, type EventRecord } from '../records/records.js';
import { poissonArrivals, runOpenLoop, type OfferTarget } from 'sluice/testing';

/**
 * The product's policies, and the lab's contrast: `unbounded`, the queue everybody writes
 * first — not a policy Sluice offers. It runs as `block` with bounds no memory can reach.
 */
export type OverflowRun = OverflowPolicy | 'unbounded';

export interface OverflowChildConfig {
  policy: OverflowRun;
  ratePerSec: number;
  durationMs: number;
  /** Payload padding per record (bytes), in the record's raw line (a Buffer: outside the V8 heap). */
  padBytes: number;
  seed: number;
  sink: { fixedCostMs: number; perItemUs: number };
  window: { maxItems: number; maxBytes: number; maxWaitMs: number; maxInFlight: number };
  queue: { maxItems: number; maxBytes: number; blockTimeoutMs: number };
  spill?: { dir: string; spillMaxBytes: number; segmentBytes: number; fallback: 'block' | 'drop-newest' };
  sampleEveryMs: number;
  sloMs: number;
  /** Items the producer emits before yielding to the event loop. */
  sliceItems: number;
}

export interface OverflowSample {
  tMs: number;
  queueItems: number;
  queueBytes: number;
  rssMb: number;
  accepted: number;
  dropped: number;
  /** Bytes of the spill segments on disk (what spillMaxBytes bounds). */
  spillBytes: number;
  spilledItems: number;
  committed: number;
  /** Producer time spent blocked so far, the wait in progress included (ms). */
  producerWaitMs: number;
}

export interface OverflowChildResult {
  offered: number;
  accepted: number;
  committed: number;
  dropped: number;
  droppedByReason: Record<string, number>;
  rejected: number;
  notSent: number;
  inFlight: number;
  ledgerBalanced: boolean;
  /** Items appended to the spill store over the run. */
  spilled: number;
  spillMaxDiskBytes: number;
  spillDiskBytesAtEnd: number;
  spillSegmentsAtEnd: number;
  /** The spill store's synchronous I/O on the event loop (DiskSpillStats io*), ms. */
  spillIo: { calls: number; totalMs: number; maxMs: number } | null;
  /** The sink's own count of items written, and its order check. */
  sinkItems: number;
  sinkOrderViolations: number;
  /** Mean time per sink write and mean gap between writes (ms): where the sink's capacity went. */
  sinkWriteMsMean: number;
  sinkGapMsMean: number;
  producerMs: number;
  elapsedMs: number;
  producerBlockedMs: number;
  latencyMs: LatencySummary;
  maxRssMb: number;
}

interface PaddedRecord extends EventRecord {
  /** Generator index: the sink checks that it only ever increases. */
  i: number;
  /** Length of the `pad` field of the raw line (the value does not repeat it). */
  padBytes: number;
}

/** A SlowSink that counts what it really wrote and checks delivery order by generator index. */
class CheckingSink implements Sink<PaddedRecord> {
  readonly name = 'slow-checked';
  readonly fixedCostKind = 'round-trip' as const;
  items = 0;
  orderViolations = 0;
  /** Time inside write() and between writes (the pipeline's and the event loop's share), ms. */
  writeMs = 0;
  gapMs = 0;
  writes = 0;
  private last = -1;
  private lastEnd = -1;
  constructor(private readonly inner: SlowSink<PaddedRecord>) {}
  async write(batch: readonly Envelope<PaddedRecord>[]): Promise<void> {
    const t0 = performance.now();
    if (this.lastEnd >= 0) this.gapMs += t0 - this.lastEnd;
    await this.inner.write(batch);
    this.lastEnd = performance.now();
    this.writeMs += this.lastEnd - t0;
    this.writes++;
    for (let k = 0; k < batch.length; k++) {
      const i = batch[k].value.i;
      if (i <= this.last) this.orderViolations++;
      this.last = i;
    }
    this.items += batch.length;
  }
  fixedCostOps(): number {
    return this.inner.fixedCostOps();
  }
  async close(): Promise<void> {}
}

const mb = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
const emit = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

export async function runOverflowChild(cfg: OverflowChildConfig): Promise<OverflowChildResult> {
  const factory = new RecordFactory({ seed: cfg.seed });
  // Each record owns its padding: a fresh Buffer (its raw NDJSON line, `"pad":"aaa…"` at the
  // end), so memory really grows with every item held and nothing is shared between items.
  // The payload lives outside the V8 heap, as a socket's or a file's bytes would: the
  // garbage collector only sees the small value object.
  const make = (i: number, t: number): Envelope<PaddedRecord> => {
    const base = factory.make(i, t);
    const head = `${base.raw!.toString('latin1').slice(0, -1)},"i":${i},"padBytes":${cfg.padBytes},"pad":"`;
    const raw = Buffer.allocUnsafe(head.length + cfg.padBytes + 2);
    raw.write(head, 0, 'latin1');
    raw.fill(97 + (i % 26), head.length, head.length + cfg.padBytes);
    raw.write('"}', head.length + cfg.padBytes, 'latin1');
    const value: PaddedRecord = { ...base.value, i, padBytes: cfg.padBytes };
    return envelope(value, { bytes: raw.length, intendedAtMs: t, id: base.id, raw });
  };
  const sink = new CheckingSink(new SlowSink<PaddedRecord>({ fixedCostMs: cfg.sink.fixedCostMs, perItemUs: cfg.sink.perItemUs }));
  const spill = cfg.spill
    ? DiskSpillStore.open<PaddedRecord>({
        dir: cfg.spill.dir,
        spillMaxBytes: cfg.spill.spillMaxBytes,
        segmentBytes: cfg.spill.segmentBytes,
        fallback: cfg.spill.fallback, // the default codec: raw bytes + JSON of the value
      })
    : undefined;
  const metrics = new PipelineMetrics<PaddedRecord>(sink, cfg.sloMs);
  const pipeline = new Pipeline<PaddedRecord>({
    sink,
    window: cfg.window,
    queue:
      cfg.policy === 'unbounded'
        ? { ...cfg.queue, policy: 'block', maxItems: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER }
        : { ...cfg.queue, policy: cfg.policy },
    spill,
    observers: [metrics],
    name: `overflow-${cfg.policy}`,
  });
  metrics.attach(pipeline);

  // Producer wait, the wait in progress included, so a sample taken mid-block shows it.
  let blockedMs = 0;
  let blockedSince = -1;
  const target: OfferTarget<PaddedRecord> = {
    offer: (e) => pipeline.offer(e),
    put: async (e): Promise<OfferResult> => {
      blockedSince = performance.now();
      try {
        return await pipeline.put(e);
      } finally {
        blockedMs += performance.now() - blockedSince;
        blockedSince = -1;
      }
    },
  };

  let spillMaxDisk = 0;
  const t0 = performance.now();
  const sample = (): OverflowSample => {
    const st = pipeline.stats();
    const disk = spill?.diskUsage() ?? 0;
    if (disk > spillMaxDisk) spillMaxDisk = disk;
    const now = performance.now();
    return {
      tMs: Math.round(now - t0),
      queueItems: st.queueItems,
      queueBytes: st.queueBytes,
      rssMb: mb(process.memoryUsage.rss()),
      accepted: st.ledger.accepted,
      dropped: st.ledger.dropped,
      spillBytes: disk,
      spilledItems: st.spilledItems,
      committed: st.ledger.committed,
      producerWaitMs: Math.round(blockedMs + (blockedSince >= 0 ? now - blockedSince : 0)),
    };
  };
  const timer = setInterval(() => emit({ type: 'sample', ...sample() }), cfg.sampleEveryMs);
  let load;
  try {
    load = await runOpenLoop({
      schedule: poissonArrivals(cfg.ratePerSec, seededRng(cfg.seed)),
      durationMs: cfg.durationMs,
      make,
      target,
      // Small slices: a producer that falls behind (spill encoding, GC of a growing heap)
      // must not hold the event loop for hundreds of items while the sink's timers wait.
      sliceItems: cfg.sliceItems,
    });
    const producerMs = performance.now() - t0;
    await pipeline.close();
    clearInterval(timer);
    emit({ type: 'sample', ...sample() });
    const st = pipeline.stats();
    const ss = spill?.stats();
    const result: OverflowChildResult = {
      offered: load.offered,
      accepted: st.ledger.accepted,
      committed: st.ledger.committed,
      dropped: st.ledger.dropped,
      droppedByReason: st.ledger.droppedByReason,
      rejected: st.ledger.rejected,
      notSent: load.notSent,
      inFlight: st.ledger.inFlight,
      ledgerBalanced: st.ledger.balanced,
      spilled: ss?.appended ?? 0,
      spillMaxDiskBytes: spillMaxDisk,
      spillDiskBytesAtEnd: ss?.diskBytes ?? 0,
      spillSegmentsAtEnd: ss?.segments ?? 0,
      spillIo: ss ? { calls: ss.ioCalls, totalMs: Math.round(ss.ioMs * 10) / 10, maxMs: Math.round(ss.ioMaxMs * 1000) / 1000 } : null,
      sinkItems: sink.items,
      sinkOrderViolations: sink.orderViolations,
      sinkWriteMsMean: Math.round((sink.writeMs / Math.max(1, sink.writes)) * 1000) / 1000,
      sinkGapMsMean: Math.round((sink.gapMs / Math.max(1, sink.writes - 1)) * 1000) / 1000,
      producerMs: Math.round(producerMs),
      elapsedMs: Math.round(performance.now() - t0),
      producerBlockedMs: Math.round(blockedMs),
      latencyMs: metrics.latency.summary(),
      // getrusage: the peak the kernel saw, between two samples included (kB).
      maxRssMb: mb(process.resourceUsage().maxRSS * 1024),
    };
    return result;
  } finally {
    clearInterval(timer);
    spill?.destroy();
  }
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].split('/').pop()!);
if (isMain && process.argv[2]) {
  const cfg = JSON.parse(process.argv[2]) as OverflowChildConfig;
  // Baseline: the runtime with every module loaded, before the first item.
  emit({ type: 'ready', rssMb: mb(process.memoryUsage.rss()), pid: process.pid });
  runOverflowChild(cfg).then(
    (r) => emit({ type: 'result', ...r }),
    (e) => {
      process.stderr.write(`overflow child failed: ${(e as Error).stack ?? e}\n`);
      process.exitCode = 1;
    },
  );
}
