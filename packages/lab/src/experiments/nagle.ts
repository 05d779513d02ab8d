/**
 * Experiment `nagle`: the Nagle + delayed-ACK stall, measured per round-trip.
 *
 * The TCP request/response sink writes a 16-byte header and then the body as two writes and
 * waits for an ack. With Nagle on at the client, the body waits for the header's ACK; the
 * receiver, with nothing to answer yet, delays that ACK (Linux: ≥ 40 ms). Four variants in
 * the same run, same batches, low load (one batch at a time, a short pause between them):
 * Nagle on both ends, on the client only, on the server only, and noDelay on both ends.
 * Optionally a tcpdump capture on loopback shows the delayed ACK itself.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { check } from '../checks.js';
import { mdTable } from '../runner.js';
import type { ChartSpec, Experiment, ResultEnvelope } from '../types.js';
import { TcpSink } from 'sluice';
import { TcpReceiver } from 'sluice/testing';
import { TCP_ACK_BYTES, TCP_HEADER_BYTES } from 'sluice';
import { RecordFactory } from '../records/records.js';
import { describeExchange, requestTimings, startCapture } from '../loopback-capture.js';

export interface NagleVariant {
  label: string;
  clientNoDelay: boolean;
  serverNoDelay: boolean;
  roundTrips: number;
  itemsPerBatch: number;
  bodyBytesPerBatch: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; min: number; mean: number };
  /** Round-trips of 30 ms or more (the delayed-ACK floor shows as ≈ 40 ms). */
  stalledRoundTrips: number;
  /** Every round-trip, in order (ms, 3 decimals): the chart's raw data. */
  samplesMs: number[];
  sinkAcks: number;
  receiverBatches: number;
}

export interface CaptureVariantSummary {
  label: string;
  requestsSeen: number;
  /** Requests whose body left only after a bare ACK from the receiver. */
  bodyAfterReceiverAck: number;
  headerToBodyMs: { p50: number; max: number } | null;
  /** Header → receiver's bare ACK (the delayed ACK), when present. */
  headerToAckMs: { p50: number; max: number } | null;
  /** The segments of one request after the warm-up, as read from the capture. */
  example: string[];
}

const VARIANTS: { label: string; clientNoDelay: boolean; serverNoDelay: boolean }[] = [
  { label: 'Nagle both ends', clientNoDelay: false, serverNoDelay: false },
  { label: 'Nagle client only', clientNoDelay: false, serverNoDelay: true },
  { label: 'Nagle server only', clientNoDelay: true, serverNoDelay: false },
  { label: 'noDelay both ends', clientNoDelay: true, serverNoDelay: true },
];

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

async function measure(clientNoDelay: boolean, serverNoDelay: boolean, trips: number, warmup: number, pauseMs: number, items: number, factory: RecordFactory) {
  const rx = await TcpReceiver.start({ noDelay: serverNoDelay });
  const sink = new TcpSink({ port: rx.port, noDelay: clientNoDelay, timeoutMs: 5000 });
  const samples: number[] = [];
  let bodyBytes = 0;
  try {
    for (let i = 0; i < warmup + trips; i++) {
      const batch = Array.from({ length: items }, (_, k) => factory.make(i * items + k, performance.now()));
      const t0 = performance.now();
      await sink.write(batch);
      const dt = performance.now() - t0;
      if (i >= warmup) samples.push(dt);
      if (i === 0) bodyBytes = sink.stats().bodyBytes;
      if (pauseMs > 0) await sleep(pauseMs);
    }
    return { samples, bodyBytes, sinkAcks: sink.stats().acks, receiverBatches: rx.stats().batches, port: rx.port };
  } finally {
    await sink.close();
    await rx.close();
  }
}

export const nagle: Experiment = {
  name: 'nagle',
  title: 'Nagle + delayed ACK: a 40 ms floor under every round-trip, removed by noDelay',
  description:
    'The TCP request/response sink writes a small header and then the body as two writes and waits for an ack per batch. ' +
    'Nagle on both ends, on the client only, on the server only, and noDelay on both ends, one after the other in the same run ' +
    'with the same batches at low load; p50/p99/max round-trip per batch, and (when tcpdump can run) a loopback capture that shows ' +
    'the receiver\'s delayed ACK releasing the held-back body.',
  cliOptions: [{ flags: '--no-capture', description: 'skip the tcpdump loopback capture' }],

  async run(ctx) {
    // Round-trips per variant: the stalled variants cost ≈ 42 ms each, the others ≈ 0.3 ms, so
    // the latter get more samples (a p99 over 400 is not decided by one scheduler hiccup on
    // this shared machine).
    const trips = ctx.quick ? 150 : 400;
    const fastTrips = 400;
    const warmup = 5;
    const pauseMs = 2;
    const itemsPerBatch = 2;
    const factory = new RecordFactory({ seed: 9 });
    const variants: NagleVariant[] = [];
    ctx.progress.start('nagle: round-trips', VARIANTS.length);
    for (const v of VARIANTS) {
      const n = v.clientNoDelay ? fastTrips : trips;
      const m = await measure(v.clientNoDelay, v.serverNoDelay, n, warmup, pauseMs, itemsPerBatch, factory);
      const sorted = [...m.samples].sort((a, b) => a - b);
      const mean = m.samples.reduce((s, x) => s + x, 0) / m.samples.length;
      variants.push({
        ...v,
        roundTrips: m.samples.length,
        itemsPerBatch,
        bodyBytesPerBatch: m.bodyBytes,
        latencyMs: { p50: r3(pct(sorted, 50)), p90: r3(pct(sorted, 90)), p99: r3(pct(sorted, 99)), max: r3(sorted[sorted.length - 1]), min: r3(sorted[0]), mean: r3(mean) },
        stalledRoundTrips: m.samples.filter((x) => x >= 30).length,
        samplesMs: m.samples.map(r3),
        sinkAcks: m.sinkAcks,
        receiverBatches: m.receiverBatches,
      });
      ctx.progress.tick(1, `${v.label}: p50 ${r3(pct(sorted, 50))} ms, p99 ${r3(pct(sorted, 99))} ms`);
    }
    ctx.progress.done();

    // Optional capture: a short run of the stalled variant and of the fixed one, each on its own port.
    let captureSummary: { tool: string; variants: CaptureVariantSummary[]; note: string } | undefined;
    let captureSkipped: string | undefined;
    if (ctx.args.capture === false) captureSkipped = 'disabled with --no-capture';
    else {
      const summaries: CaptureVariantSummary[] = [];
      for (const v of [VARIANTS[1], VARIANTS[3]]) {
        const rx = await TcpReceiver.start({ noDelay: v.serverNoDelay });
        const { capture, reason } = await startCapture(rx.port, join(ctx.workDir, `nagle-${v.clientNoDelay ? 'nodelay' : 'nagle'}.pcap`));
        if (!capture) {
          await rx.close();
          captureSkipped = reason ?? 'capture unavailable';
          break;
        }
        const sink = new TcpSink({ port: rx.port, noDelay: v.clientNoDelay, timeoutMs: 5000 });
        try {
          for (let i = 0; i < 25; i++) {
            await sink.write(Array.from({ length: itemsPerBatch }, (_, k) => factory.make(i * 2 + k, performance.now())));
            await sleep(pauseMs);
          }
        } finally {
          await sink.close();
        }
        const segs = await capture.stop();
        const port = rx.port;
        await rx.close();
        const t = requestTimings(segs, port, TCP_HEADER_BYTES).slice(warmup);
        const gaps = t.map((x) => x.headerToBodyMs).sort((a, b) => a - b);
        const acks = t.filter((x) => x.headerToAckMs !== null).map((x) => x.headerToAckMs!).sort((a, b) => a - b);
        summaries.push({
          label: v.label,
          requestsSeen: t.length,
          bodyAfterReceiverAck: t.filter((x) => x.ackBeforeBody).length,
          headerToBodyMs: gaps.length ? { p50: r3(pct(gaps, 50)), max: r3(gaps[gaps.length - 1]) } : null,
          headerToAckMs: acks.length ? { p50: r3(pct(acks, 50)), max: r3(acks[acks.length - 1]) } : null,
          example: describeExchange(segs, port, TCP_HEADER_BYTES, warmup + 1, TCP_ACK_BYTES),
        });
      }
      if (summaries.length === 2)
        captureSummary = {
          tool: 'tcpdump -i lo',
          variants: summaries,
          note: '25 requests per variant, the first 5 left out (connection start: Linux acks at once in quick-ack mode); segments read back with tcpdump -r -tt',
        };
    }

    const by = (label: string) => variants.find((x) => x.label === label)!;
    const both = by('Nagle both ends');
    const client = by('Nagle client only');
    const fixed = by('noDelay both ends');
    const checks = [
      check('Nagle both ends: p50 round-trip (ms)', both.latencyMs.p50, '>=', 35),
      check('Nagle client only: p50 round-trip (ms)', client.latencyMs.p50, '>=', 35),
      check('noDelay both ends: p99 round-trip (ms)', fixed.latencyMs.p99, '<', 2),
      check('every batch acked once and received once, every variant', variants.every((x) => x.sinkAcks === x.roundTrips + warmup && x.receiverBatches === x.roundTrips + warmup), '==', true),
    ];
    if (captureSummary) {
      const nc = captureSummary.variants[0];
      checks.push(check('capture, Nagle on: requests whose body left after the receiver\'s bare ACK (share)', nc.requestsSeen ? nc.bodyAfterReceiverAck / nc.requestsSeen : 0, '>=', 0.9));
    }
    return {
      trips,
      tripsWithClientNoDelay: fastTrips,
      warmupTrips: warmup,
      pauseMs,
      itemsPerBatch,
      load: `one batch of ${itemsPerBatch} records at a time, ${pauseMs} ms pause between batches`,
      platform: process.platform,
      variants,
      ...(captureSummary ? { captureSummary } : {}),
      ...(captureSkipped ? { captureSkipped } : {}),
      checks,
    };
  },

  markdown(r: ResultEnvelope) {
    const vs = r.variants as NagleVariant[];
    let md =
      `### nagle — request/response round-trip per batch (${r.load}; ${r.warmupTrips} warm-up round-trips left out per variant)\n\n` +
      mdTable(
        ['variant', 'client noDelay', 'server noDelay', 'round-trips', 'body B', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', '≥ 30 ms'],
        vs.map((v) => [v.label, String(v.clientNoDelay), String(v.serverNoDelay), v.roundTrips, v.bodyBytesPerBatch, v.latencyMs.p50, v.latencyMs.p90, v.latencyMs.p99, v.latencyMs.max, v.stalledRoundTrips]),
      );
    const cap = r.captureSummary as { tool: string; variants: CaptureVariantSummary[]; note: string } | undefined;
    if (cap) {
      md +=
        `\n\n**Loopback capture** (${cap.tool}; ${cap.note})\n\n` +
        mdTable(
          ['variant', 'requests', 'body after receiver\'s bare ACK', 'header→body p50 ms', 'header→body max ms', 'header→bare ACK p50 ms'],
          cap.variants.map((c) => [c.label, c.requestsSeen, c.bodyAfterReceiverAck, c.headerToBodyMs?.p50 ?? '–', c.headerToBodyMs?.max ?? '–', c.headerToAckMs?.p50 ?? '–']),
        );
      for (const c of cap.variants) if (c.example.length) md += `\n\nOne request, ${c.label}:\n\n\`\`\`\n${c.example.join('\n')}\n\`\`\``;
    } else if (r.captureSkipped) md += `\n\nNo capture: ${r.captureSkipped}.`;
    return md;
  },

  charts(r: ResultEnvelope): ChartSpec[] {
    const vs = r.variants as NagleVariant[];
    const values = vs.flatMap((v) => v.samplesMs.map((ms) => ({ variant: v.label, ms: Math.max(ms, 0.001) })));
    return [
      {
        id: 'nagle-round-trips',
        title: 'Round-trip per batch: Nagle versus noDelay',
        caption: 'Each dot is one request/response round-trip (log scale). With Nagle on at the client every round-trip sits at the ≈40 ms delayed-ACK floor; with noDelay both ends it is a few tens of µs.',
        spec: {
          $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
          data: { values },
          width: 520,
          height: 200,
          layer: [
            {
              mark: { type: 'tick', opacity: 0.35 },
              encoding: {
                y: { field: 'variant', type: 'nominal', title: null, sort: vs.map((v) => v.label) },
                x: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'round-trip per batch (ms, log scale)' },
              },
            },
            {
              mark: { type: 'point', shape: 'diamond', color: 'black', size: 80, filled: true },
              encoding: {
                y: { field: 'variant', type: 'nominal', sort: vs.map((v) => v.label) },
                x: { aggregate: 'median', field: 'ms', type: 'quantitative' },
              },
            },
          ],
        },
      },
    ];
  },
};
