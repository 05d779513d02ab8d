/**
 * Chooses the progress display: on a terminal, one cli-progress bar per task with its ETA
 * and status text; anywhere else (CI logs, pipes, `TERM=dumb`) the plain lines of
 * `LineProgress`. Progress always goes to stderr, so stdout stays the lab's tables.
 */
import cliProgress from 'cli-progress';
import { LineProgress, type Progress } from './progress.js';

export interface ProgressOptions {
  /** Where progress goes (default: process.stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Output written while a bar is showing; it is printed above the bar (default: process.stdout). */
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  env?: NodeJS.ProcessEnv;
}

/** True when bars make sense: the progress stream is a terminal and we are not in CI. */
export function isInteractive(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = env.CI === 'true' || env.CI === '1';
  return stream.isTTY === true && !ci && env.TERM !== 'dumb';
}

export function createProgress(opts: ProgressOptions = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  if (!isInteractive(stream, opts.env ?? process.env)) return new LineProgress((l) => stream.write(l + '\n'));
  return new BarProgress(stream, opts.stdout ?? process.stdout);
}

const CLEAR_LINE = '\r\x1b[2K';

/**
 * ETA from the average pace of every step so far (a sweep has few, long steps: a moving
 * window of the last few would swing). Recomputed at each redraw, so it counts down
 * between steps; "…" until the first step is done.
 */
export function formatEta(startTimeMs: number, value: number, total: number, nowMs = Date.now()): string {
  if (value <= 0 || total <= 0) return '…';
  if (value >= total) return '0s';
  const remainingS = Math.max(0, ((nowMs - startTimeMs) / 1000) * (total / value) - (nowMs - startTimeMs) / 1000);
  if (remainingS < 60) return `${Math.ceil(remainingS)}s`;
  const m = Math.floor(remainingS / 60);
  const sec = Math.round(remainingS % 60);
  return m < 60 ? `${m}m${String(sec).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** One bar per task: the finished task leaves a one-line summary, the next task gets a new bar. */
export class BarProgress implements Progress {
  private bar: cliProgress.SingleBar | null = null;
  private label = '';
  private t0 = 0;
  private restoreStdout: (() => void) | null = null;

  constructor(
    private readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
    private readonly stdout: NodeJS.WritableStream & { isTTY?: boolean },
  ) {}

  start(label: string, total: number): void {
    if (this.bar) this.done();
    this.label = label;
    this.t0 = Date.now();
    const bar = new cliProgress.SingleBar(
      {
        stream: this.stream as NodeJS.WritableStream,
        format: (options, params, payload: { label: string; status: string }) => {
          const bar = cliProgress.Format.BarFormat(params.progress, options);
          const pct = Math.floor(params.progress * 100);
          return `\x1b[1m${payload.label}\x1b[22m ${bar} ${String(pct).padStart(3)}% · ${params.value}/${params.total} · ETA ${formatEta(params.startTime, params.value, params.total)}${payload.status ? ` · ${payload.status}` : ''}`;
        },
        barsize: 24,
        barCompleteChar: '█',
        barIncompleteChar: '░',
        hideCursor: false,
        clearOnComplete: true,
        fps: 5,
        gracefulExit: false,
        linewrap: false,
      },
      cliProgress.Presets.shades_classic,
    );
    // cli-progress redraws from a timer; an experiment that throws before done() must not
    // keep the process alive, so every redraw timer is unref'd.
    const render = bar.render.bind(bar);
    bar.render = () => {
      render();
      (bar as unknown as { timer?: NodeJS.Timeout | null }).timer?.unref?.();
    };
    bar.start(Math.max(1, total), 0, { label, status: '' });
    this.bar = bar;
    this.interceptStdout();
  }

  tick(units = 1, status?: string): void {
    this.bar?.increment(units, status !== undefined ? { status } : undefined);
  }

  done(summary?: string): void {
    const bar = this.bar;
    if (!bar) return;
    this.bar = null;
    bar.stop();
    this.restoreStdout?.();
    this.restoreStdout = null;
    const secs = ((Date.now() - this.t0) / 1000).toFixed(1);
    this.stream.write(`\x1b[32m✓\x1b[39m ${this.label} \x1b[2m${secs}s\x1b[22m${summary ? ` ${summary}` : ''}\n`);
  }

  /**
   * While a bar shows on the same terminal as stdout, a line printed to stdout would land in
   * the middle of the bar: clear the bar's line first, print, and redraw the bar below.
   */
  private interceptStdout(): void {
    if (this.stdout.isTTY !== true || this.restoreStdout) return;
    const out = this.stdout as NodeJS.WritableStream & { write: (...a: unknown[]) => boolean };
    const original = out.write;
    out.write = (...args: unknown[]): boolean => {
      this.stream.write(CLEAR_LINE);
      const ok = original.apply(out, args);
      this.bar?.render();
      return ok;
    };
    this.restoreStdout = () => {
      out.write = original;
    };
  }
}
