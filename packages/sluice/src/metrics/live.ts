/**
 * The live page: `GET /` serves one HTML page (src/metrics/live-page.ts: inline CSS and JS,
 * no build step, nothing fetched from elsewhere) and `GET /live/events` streams one sample
 * per second to it as server-sent events.
 *
 * Cost: nothing while nobody watches (no timer, no state: the sampler starts with the first
 * viewer and stops with the last). While someone does, one sample per interval is computed
 * and the same serialized line written to every viewer: the cost does not grow with viewers
 * beyond one socket write each. A sample reads counters the pipeline keeps anyway, plus one
 * HDR interval read (a copy of the latency histogram's counts and one walk of their difference:
 * see `LatencyHistogram.intervalReader`);
 * the source's lag is fetched at most once per interval, without waiting for it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ControllerStats } from '../core/controller.js';
import { invalidOption } from '../core/errors.js';
import type { Pipeline } from '../core/pipeline.js';
import type { LatencySummary } from './histogram.js';
import type { PipelineMetrics } from './metrics.js';
import { livePageHtml } from './live-page.js';

/** The SLO line drawn when none is configured: the lab's default (docs/window.md, `--slo-ms 20`). */
export const LAB_DEFAULT_SLO_MS = 20;
export const LIVE_EVENTS_PATH = '/live/events';

export interface LiveOptions<T> {
  pipeline: Pipeline<T>;
  metrics: PipelineMetrics<T>;
  /** Which command serves the page (the title; `run` shows the source's lag). */
  kind: 'serve' | 'run';
  /** The p99 objective drawn on the latency chart. @default LAB_DEFAULT_SLO_MS, marked as the lab's default */
  sloMs?: number;
  /** The window controller, when one runs: its kind and the p99 it last acted on are shown. */
  controller?: () => Pick<ControllerStats, 'kind' | 'lastP99Ms'> | null;
  /** The source's lag (records not yet acknowledged), for `run`. */
  sourceLag?: () => Promise<number>;
  /** ms between samples. @default 1000 */
  intervalMs?: number;
  /** Samples kept for a viewer who arrives later (and drawn). @default 300 (5 min at 1 s) */
  historyPoints?: number;
  /** Viewers at once; more get 503. @default 16 */
  maxViewers?: number;
}

export interface LiveSample {
  /** Epoch ms. */
  t: number;
  inPerSec: number;
  committedPerSec: number;
  droppedPerSec: number;
  deadLetteredPerSec: number;
  queueItems: number;
  inFlight: number;
  /** Mean items per batch cut during the interval (null: no batch cut). */
  batchMean: number | null;
  batches: number;
  /** End-to-end latency of the items committed during the interval (null: none committed). */
  p50Ms: number | null;
  p99Ms: number | null;
  window: { maxItems: number; maxWaitMs: number };
  controller: { kind: string; lastP99Ms: number } | null;
  sinkUp: boolean;
  balanced: boolean;
  lag: number | null;
  totals: { accepted: number; committed: number; dropped: number; deadLettered: number; rejected: number };
}

export interface LiveHello {
  name: string;
  kind: 'serve' | 'run';
  sloMs: number;
  sloSource: 'configured' | 'lab-default';
  intervalMs: number;
  historyPoints: number;
  history: LiveSample[];
}

interface Counts {
  at: number;
  accepted: number;
  committed: number;
  dropped: number;
  deadLettered: number;
  batches: number;
  batchItems: number;
}

export class LiveView<T = unknown> {
  private readonly viewers = new Set<ServerResponse>();
  private timer: NodeJS.Timeout | null = null;
  private history: LiveSample[] = [];
  private prev: Counts | null = null;
  private interval: (() => LatencySummary) | null = null;
  private lag: number | null = null;
  private lagPending = false;
  private closed = false;
  private readonly intervalMs: number;
  private readonly historyPoints: number;
  private readonly maxViewers: number;
  /** Samples computed so far (0 while nobody has watched: the test of "costs nothing"). */
  samples = 0;

  constructor(private readonly opts: LiveOptions<T>) {
    this.intervalMs = opts.intervalMs ?? 1000;
    if (!Number.isFinite(this.intervalMs) || this.intervalMs < 50) throw invalidOption('intervalMs', opts.intervalMs, 'a number ≥ 50');
    this.historyPoints = opts.historyPoints ?? 300;
    if (!Number.isInteger(this.historyPoints) || this.historyPoints < 1) throw invalidOption('historyPoints', opts.historyPoints, 'an integer ≥ 1');
    this.maxViewers = opts.maxViewers ?? 16;
    if (!Number.isInteger(this.maxViewers) || this.maxViewers < 1) throw invalidOption('maxViewers', opts.maxViewers, 'an integer ≥ 1');
    if (opts.sloMs !== undefined && !(Number.isFinite(opts.sloMs) && opts.sloMs > 0)) throw invalidOption('sloMs', opts.sloMs, 'a number > 0');
  }

  /** Viewers connected now. */
  get viewerCount(): number {
    return this.viewers.size;
  }

  /** Serves `GET /` and `GET /live/events`; returns false (and does nothing) for any other request. */
  route(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/') {
      const body = livePageHtml(this.opts.kind);
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      return true;
    }
    if (path === '/favicon.ico') {
      // Browsers ask for it with the page; a 404 would show as an error in their console.
      res.writeHead(204).end();
      return true;
    }
    if (path === LIVE_EVENTS_PATH) {
      this.subscribe(req, res);
      return true;
    }
    return false;
  }

  /** Ends every stream and stops sampling; later requests for the stream get 503. */
  close(): void {
    this.closed = true;
    for (const res of this.viewers) res.end();
    this.viewers.clear();
    this.stop();
  }

  private subscribe(req: IncomingMessage, res: ServerResponse): void {
    if (this.closed || this.viewers.size >= this.maxViewers) {
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5' }).end(this.closed ? 'closing\n' : `at most ${this.maxViewers} viewers\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const hello: LiveHello = {
      name: this.opts.pipeline.name,
      kind: this.opts.kind,
      sloMs: this.opts.sloMs ?? LAB_DEFAULT_SLO_MS,
      sloSource: this.opts.sloMs !== undefined ? 'configured' : 'lab-default',
      intervalMs: this.intervalMs,
      historyPoints: this.historyPoints,
      history: this.history,
    };
    res.write(`retry: 2000\nevent: hello\ndata: ${JSON.stringify(hello)}\n\n`);
    this.viewers.add(res);
    const gone = () => {
      this.viewers.delete(res);
      if (this.viewers.size === 0) this.stop();
    };
    req.once('close', gone);
    res.once('close', gone);
    if (!this.timer) this.start();
  }

  private start(): void {
    this.interval = this.opts.metrics.latency.intervalReader();
    this.interval(); // from now on, each read covers one interval
    this.prev = this.counts();
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.interval = null;
    this.prev = null;
    this.history = [];
    this.lag = null;
  }

  private counts(): Counts {
    const l = this.opts.pipeline.ledger;
    const m = this.opts.metrics;
    return {
      at: performance.now(),
      accepted: l.accepted,
      committed: m.committed,
      dropped: l.droppedTotal(),
      deadLettered: m.deadLettered,
      batches: m.batchSize.count,
      batchItems: m.batchItems,
    };
  }

  /** One sample, computed once and written to every viewer. */
  private tick(): void {
    if (!this.prev || !this.interval) return;
    const { pipeline, metrics } = this.opts;
    const now = this.counts();
    const prev = this.prev;
    this.prev = now;
    const dt = Math.max(1e-3, (now.at - prev.at) / 1000);
    const rate = (a: number, b: number) => Math.round(((a - b) / dt) * 10) / 10;
    const lat = this.interval();
    const st = pipeline.stats();
    const batches = now.batches - prev.batches;
    const w = pipeline.window();
    const c = this.opts.controller?.() ?? null;
    this.fetchLag();
    const sample: LiveSample = {
      t: Date.now(),
      inPerSec: rate(now.accepted, prev.accepted),
      committedPerSec: rate(now.committed, prev.committed),
      droppedPerSec: rate(now.dropped, prev.dropped),
      deadLetteredPerSec: rate(now.deadLettered, prev.deadLettered),
      queueItems: st.queueItems,
      inFlight: st.ledger.inFlight,
      batchMean: batches > 0 ? Math.round(((now.batchItems - prev.batchItems) / batches) * 10) / 10 : null,
      batches,
      p50Ms: lat.count > 0 ? lat.p50 : null,
      p99Ms: lat.count > 0 ? lat.p99 : null,
      window: { maxItems: w.maxItems, maxWaitMs: w.maxWaitMs },
      controller: c ? { kind: c.kind, lastP99Ms: c.lastP99Ms } : null,
      sinkUp: pipeline.sinkHealth()?.isUp() !== false,
      balanced: st.ledger.balanced,
      lag: this.lag,
      totals: { accepted: st.ledger.accepted, committed: metrics.committed, dropped: st.ledger.dropped, deadLettered: metrics.deadLettered, rejected: st.ledger.rejected },
    };
    this.samples++;
    this.history.push(sample);
    if (this.history.length > this.historyPoints) this.history.splice(0, this.history.length - this.historyPoints);
    const line = `data: ${JSON.stringify(sample)}\n\n`;
    for (const res of this.viewers) {
      // A viewer that stopped reading holds at most ≈ 1 MiB here, then is cut off.
      if (res.writableLength > 2 ** 20) res.destroy();
      else res.write(line);
    }
  }

  private fetchLag(): void {
    const lag = this.opts.sourceLag;
    if (!lag || this.lagPending) return;
    this.lagPending = true;
    lag().then(
      (n) => {
        this.lagPending = false;
        if (this.timer) this.lag = n;
      },
      () => {
        this.lagPending = false;
      },
    );
  }
}

export function liveView<T>(opts: LiveOptions<T>): LiveView<T> {
  return new LiveView(opts);
}
