/**
 * Experiment `compression`: batch compression only pays on fat batches.
 *
 * The same records (real telemetry when ../shared/data is present), the same open-loop
 * Poisson load, through the HTTP sink to a minimal receiver in the same process: linger 0
 * (each record its own request) versus a 20 ms linger and a filled window (up to 500 items or
 * 1 s), with each codec and with none. Bytes on the wire are read at the sockets (headers
 * included) on both ends; CPU time is measured around every compress call.
 */
import { check } from '../checks.js';
import { runPipeline } from '../harness.js';
import { mdTable } from '../runner.js';
import type { Check, ChartSpec, Experiment, ResultEnvelope } from '../types.js';
import { HttpSink } from 'sluice';
import { HttpReceiver } from 'sluice/testing';
import { CODEC_LEVELS, availableCodecs, zstdAvailability, type CodecName } from 'sluice';
import { poissonArrivals } from 'sluice/testing';
import { seededRng } from 'sluice';
import { loadWirePayloads, payloadItem } from '../wire-payloads.js';
import type { LatencySummary } from 'sluice';

export interface CompressionVariant {
  payload: string;
  payloadSource: string;
  codec: CodecName;
  level: number | null;
  window: WindowName;
  lingerMs: number;
  maxItems: number;
  meanBatchSize: number;
  items: number;
  requests: number;
  rawBytesPerItem: number;
  /** Compressed body bytes per item. */
  bodyBytesPerItem: number;
  /** Bytes the sink wrote at its sockets per item: request line, headers and body. */
  wireBytesPerItem: number;
  /** Request line + headers per request (wire bytes − body bytes). */
  headerBytesPerRequest: number;
  /** Raw NDJSON bytes ÷ compressed body bytes. */
  ratio: number;
  /** Raw NDJSON bytes ÷ bytes on the wire (headers count against it). */
  wireRatio: number;
  compressCpuUsPerItem: number;
  throughputPerSec: number;
  latencyMs: LatencySummary;
  /** Total bytes the sink wrote at its sockets in this run. */
  wireBytes: number;
  /** Bytes read at the receiver's sockets: must equal `wireBytes`. */
  receiverWireBytes: number;
  receiverLines: number;
  ledgerBalanced: boolean;
}

// Item at a time versus a filled window. The item-at-a-time window also caps maxItems at 1:
// with linger 0 alone, records arriving while requests are in flight share a batch (measured
// here: mean 1.03–1.3 under this load), and two consecutive Zeek dns records already compress
// 2.7× with gzip, so "linger 0" would quietly stop meaning "one record per request".
const WINDOWS = {
  'linger-0': { maxItems: 1, maxWaitMs: 0, maxInFlight: 8 },
  /** In between: a 20 ms linger (≈12 records at this load). Not part of the checks. */
  'linger-20ms': { maxItems: 500, maxWaitMs: 20, maxInFlight: 8 },
  filled: { maxItems: 500, maxWaitMs: 1000, maxInFlight: 8 },
} as const;
type WindowName = keyof typeof WINDOWS;
const WINDOW_NAMES = Object.keys(WINDOWS) as WindowName[];

const r2 = (x: number) => Math.round(x * 100) / 100;

export const compression: Experiment = {
  name: 'compression',
  title: 'Compression on the wire pays on fat batches only',
  description:
    'Same records (real Zeek dns/ssl and Apache access-log telemetry when ../shared/data is present, synthetic otherwise), same ' +
    'open-loop Poisson load, through the HTTP sink to a minimal receiver: linger 0 with one record per request versus a 20 ms linger and a filled window, with ' +
    'gzip, brotli, zstd and none. Bytes on the wire are read at both sockets, headers included; CPU time is measured around each ' +
    'compress call.',
  cliOptions: [{ flags: '--payload <kind>', description: 'real (shared telemetry when present) or synthetic', defaultValue: 'real' }],

  async run(ctx) {
    // Low enough that the item-at-a-time variant (one HTTP request per record, client and
    // receiver in this process) does not saturate a core of this shared 2-core machine.
    const ratePerSec = 600;
    // Every check here is a ratio of bytes, not a latency: the filled window (500 items, filled
    // in ≈ 0.83 s at this rate) needs only a few batches per variant, so a run is a few seconds
    // (54 variants in a full run: 8 s each made this the lab's second-longest experiment).
    const durationMs = ctx.quick ? 1500 : 4000;
    const sets = loadWirePayloads(ctx.sharedDataDir, Math.ceil((ratePerSec * durationMs) / 1000) + 500, ctx.args.payload === 'synthetic');
    const codecs: { codec: CodecName; level?: number }[] = [{ codec: 'none' }];
    for (const c of availableCodecs()) if (c !== 'none') codecs.push({ codec: c });
    if (!ctx.quick) codecs.push({ codec: 'gzip', level: 1 }, { codec: 'brotli', level: 9 });
    const zstd = zstdAvailability();
    const variants: CompressionVariant[] = [];
    // Warm-up (discarded): JIT, the agent and the receiver's code paths, before anything is measured.
    {
      const rx = await HttpReceiver.start();
      const sink = new HttpSink<string>({ url: rx.url, codec: 'none', maxSockets: 8 });
      try {
        await runPipeline<string>({
          sink,
          window: WINDOWS['linger-0'],
          schedule: poissonArrivals(ratePerSec, seededRng(5)),
          durationMs: 1000,
          make: (i, t) => payloadItem(sets[0], i, t),
          sloMs: ctx.sloMs,
          offeredPerSec: ratePerSec,
        });
      } finally {
        await sink.close();
        await rx.close();
      }
    }
    ctx.progress.start('compression: variants', sets.length * codecs.length * WINDOW_NAMES.length);
    for (const set of sets) {
      for (const c of codecs) {
        for (const w of WINDOW_NAMES) {
          const rx = await HttpReceiver.start();
          const sink = new HttpSink<string>({ url: rx.url, codec: c, maxSockets: WINDOWS[w].maxInFlight });
          try {
            const fig = await runPipeline<string>({
              sink,
              window: WINDOWS[w],
              queue: { maxItems: 10_000, policy: 'block', blockTimeoutMs: 60_000 },
              schedule: poissonArrivals(ratePerSec, seededRng(77)),
              durationMs,
              make: (i, t) => payloadItem(set, i, t),
              sloMs: ctx.sloMs,
              offeredPerSec: ratePerSec,
            });
            const st = sink.stats();
            const rs = rx.stats();
            const n = Math.max(1, fig.committed);
            variants.push({
              payload: set.name,
              payloadSource: set.payloadSource,
              codec: c.codec,
              level: sink.codec.level,
              window: w,
              lingerMs: WINDOWS[w].maxWaitMs,
              maxItems: WINDOWS[w].maxItems,
              meanBatchSize: r2(fig.committed / Math.max(1, st.requests)),
              items: fig.committed,
              requests: st.requests,
              rawBytesPerItem: r2(st.rawBytes / n),
              bodyBytesPerItem: r2(st.bodyBytes / n),
              wireBytesPerItem: r2(st.wireBytesOut / n),
              headerBytesPerRequest: r2((st.wireBytesOut - st.bodyBytes) / Math.max(1, st.requests)),
              ratio: r2(st.rawBytes / Math.max(1, st.bodyBytes)),
              wireRatio: r2(st.rawBytes / Math.max(1, st.wireBytesOut)),
              compressCpuUsPerItem: r2(st.compressCpuUs / n),
              throughputPerSec: fig.throughputPerSec,
              latencyMs: fig.latencyMs,
              wireBytes: st.wireBytesOut,
              receiverWireBytes: rs.wireBytesIn,
              receiverLines: rs.acceptedLines,
              ledgerBalanced: fig.ledgerBalanced && fig.inFlight === 0 && fig.dropped === 0,
            });
            const v = variants[variants.length - 1];
            ctx.progress.tick(1, `${set.name} ${sink.codec.label} ${w}: ratio ${v.ratio}, ${v.wireBytesPerItem} B/item on the wire, batch ${v.meanBatchSize}`);
          } finally {
            await sink.close();
            await rx.close();
          }
        }
      }
    }
    ctx.progress.done();

    const checks: Check[] = [];
    const label = (v: CompressionVariant) => (v.level === null ? v.codec : `${v.codec}-${v.level}`);
    for (const set of sets) {
      const of = (w: WindowName) => variants.filter((v) => v.payload === set.name && v.window === w);
      const l0 = of('linger-0');
      const fw = of('filled');
      const pairs = l0.map((a) => ({ a, b: fw.find((b) => label(b) === label(a))! }));
      const compressed = pairs.filter((p) => p.a.codec !== 'none');
      const none = pairs.find((p) => p.a.codec === 'none')!;
      checks.push(
        // The seed's claim, per payload and codec (issue 20): a filled window compresses at least
        // 3× better than one record per request, and a lone record stays below 2. (A bound of 1.6
        // on the lone record, set without data, failed on brotli's built-in dictionary: 1.64 on
        // one Zeek DNS record.)
        ...compressed.map((p) => check(`${set.name}, ${label(p.a)}: filled window ratio ÷ linger 0 ratio`, p.b.ratio / p.a.ratio, '>=', 3)),
        check(`${set.name}: linger 0, highest ratio over codecs`, Math.max(...compressed.map((p) => p.a.ratio)), '<', 2),
        check(
          `${set.name}: wire bytes per item, filled ÷ linger 0, worst codec`,
          Math.max(...compressed.map((p) => p.b.wireBytesPerItem / p.a.wireBytesPerItem)),
          '<=',
          0.5,
        ),
        check(`${set.name}: wire bytes per item, filled ÷ linger 0, no codec (headers amortised)`, none.b.wireBytesPerItem / none.a.wireBytesPerItem, '<', 1),
        check(`${set.name}: linger 0 mean batch size, largest`, Math.max(...l0.map((v) => v.meanBatchSize)), '<=', 1.5),
        check(`${set.name}: filled window mean batch size, smallest`, Math.min(...fw.map((v) => v.meanBatchSize)), '>=', 100),
      );
    }
    checks.push(
      check('sink wire-byte counter equals bytes read at the receiver\'s sockets, every run', variants.every((v) => v.wireBytes === v.receiverWireBytes), '==', true),
      check('receiver decoded every committed record, every run', variants.every((v) => v.receiverLines === v.items), '==', true),
      check('ledger balanced, nothing dropped, every run', variants.every((v) => v.ledgerBalanced), '==', true),
    );
    const overOne = variants.filter((v) => v.window === 'linger-0' && v.ratio >= 1.6); // noted, not a check: see the checks above
    const notes = overOne.length
      ? `One record per request, ${overOne.map((v) => `${label(v)} on ${v.payload} (${v.ratio})`).join(', ')} reached 1.6 or more: ` +
        'brotli carries a built-in static dictionary of common text, so it compresses even a lone record somewhat; every other codec stays below. ' +
        'On the wire the ~150 B of request headers still leave such a record at ' +
        overOne.map((v) => `${Math.round((100 * v.wireBytesPerItem) / v.rawBytesPerItem)} %`).join(', ') +
        ' of its raw size.'
      : null;
    return {
      ...(notes ? { notes } : {}),
      ratePerSec,
      durationMs,
      load: `poisson ${ratePerSec}/s for ${durationMs} ms per variant`,
      windows: WINDOWS,
      payloadSources: sets.map((s) => ({ payload: s.name, payloadSource: s.payloadSource, records: s.lines.length, meanBytes: Math.round(s.meanBytes) })),
      codecs: codecs.map((c) => ({ codec: c.codec, level: c.level ?? CODEC_LEVELS[c.codec].default })),
      zstd: zstd.available ? '@mongodb-js/zstd 1.2.2' : `unavailable: ${zstd.reason}`,
      cpuNote:
        'compressCpuUsPerItem is process.cpuUsage() around each compress call. gzip and brotli run synchronously on the calling thread, so it is their CPU. ' +
        'zstd (N-API binding, async on the libuv pool) is awaited while other requests proceed: its figure includes concurrent work and is an upper bound.',
      variants,
      checks,
    };
  },

  markdown(r: ResultEnvelope) {
    const vs = r.variants as CompressionVariant[];
    const srcs = r.payloadSources as { payload: string; payloadSource: string; records: number; meanBytes: number }[];
    return (
      `### compression — HTTP sink, ${r.load}; windows: ${Object.entries(r.windows as typeof WINDOWS).map(([k, w]) => `${k} = ${JSON.stringify(w)}`).join(', ')}\n\n` +
      `${r.cpuNote}\n\nPayloads: ${srcs.map((s) => `${s.payload} (${s.payloadSource}, ${s.records} records, mean ${s.meanBytes} B)`).join('; ')}. zstd: ${r.zstd}.\n\n` +
      (r.notes ? `${r.notes}\n\n` : '') +
      mdTable(
        ['payload', 'codec', 'window', 'mean batch', 'raw B/item', 'body B/item', 'wire B/item', 'hdr B/req', 'ratio', 'wire ratio', 'compress CPU µs/item', 'items/s', 'p50 ms', 'p99 ms'],
        vs.map((v) => [
          v.payload,
          v.level === null ? v.codec : `${v.codec}-${v.level}`,
          v.window,
          v.meanBatchSize,
          v.rawBytesPerItem,
          v.bodyBytesPerItem,
          v.wireBytesPerItem,
          v.headerBytesPerRequest,
          v.ratio,
          v.wireRatio,
          v.compressCpuUsPerItem,
          v.throughputPerSec,
          v.latencyMs.p50,
          v.latencyMs.p99,
        ]),
      )
    );
  },

  charts(r: ResultEnvelope): ChartSpec[] {
    const vs = r.variants as CompressionVariant[];
    const values = vs.map((v) => ({
      payload: v.payload,
      codec: v.level === null ? v.codec : `${v.codec}-${v.level}`,
      windowKind: v.window,
      wireBytesPerItem: v.wireBytesPerItem,
      ratio: v.ratio,
    }));
    const codecOrder = [...new Set(values.map((v) => v.codec))];
    const bars = (field: string, title: string) => ({
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      data: { values },
      facet: { column: { field: 'payload', type: 'nominal', title: 'payload' } },
      spec: {
        width: 260,
        height: 220,
        mark: { type: 'bar', tooltip: true },
        encoding: {
          x: { field: 'codec', type: 'nominal', title: 'codec', sort: codecOrder, axis: { labelAngle: 0 } },
          xOffset: { field: 'windowKind', type: 'nominal', sort: WINDOW_NAMES },
          y: { field, type: 'quantitative', title },
          color: { field: 'windowKind', type: 'nominal', title: 'window', scale: { domain: WINDOW_NAMES } },
        },
      },
    });
    return [
      {
        id: 'compression-wire-bytes',
        title: 'Bytes on the wire per item, by codec and window',
        caption: 'Bytes written at the HTTP sink\'s sockets (headers included) per record. One record per request: every codec leaves about its raw size plus ~150 B of request headers; a 20 ms linger already cuts that several times, a filled window by an order of magnitude.',
        spec: bars('wireBytesPerItem', 'bytes on the wire per item (B)'),
      },
      {
        id: 'compression-ratio',
        title: 'Compression ratio, by codec and window',
        caption: 'Raw NDJSON bytes ÷ compressed body bytes. One record at a time: about 1.1–1.7 whatever the codec. A filled window: 8–16 on real telemetry.',
        spec: bars('ratio', 'compression ratio (raw ÷ compressed)'),
      },
    ];
  },
};
