/**
 * Progress for long runs: a bar per experiment with ETA on a terminal, plain lines
 * otherwise (CI logs, pipes). Experiments report units of work; the runner owns the display.
 */
export interface Progress {
  /** Starts a task of `total` units (e.g. runs in a sweep). */
  start(label: string, total: number): void;
  /** Advances by `units` and optionally updates the status text. */
  tick(units?: number, status?: string): void;
  /** Ends the current task. */
  done(summary?: string): void;
}

/** Plain-line progress: one line when a task starts, at every 10% and when it ends. */
export class LineProgress implements Progress {
  private label = '';
  private total = 1;
  private n = 0;
  private lastDecile = -1;
  private t0 = 0;

  constructor(private readonly write: (line: string) => void = (l) => process.stderr.write(l + '\n')) {}

  start(label: string, total: number): void {
    this.label = label;
    this.total = Math.max(1, total);
    this.n = 0;
    this.lastDecile = 0;
    this.t0 = Date.now();
    this.write(`[${label}] started (${total} steps)`);
  }

  tick(units = 1, status?: string): void {
    this.n += units;
    const decile = Math.floor((10 * this.n) / this.total);
    if (decile > this.lastDecile && this.n < this.total) {
      this.lastDecile = decile;
      const elapsed = (Date.now() - this.t0) / 1000;
      const eta = this.n > 0 ? (elapsed * (this.total - this.n)) / this.n : 0;
      this.write(`[${this.label}] ${Math.round((100 * this.n) / this.total)}% eta ${eta.toFixed(0)}s${status ? ` ${status}` : ''}`);
    }
  }

  done(summary?: string): void {
    this.write(`[${this.label}] done in ${((Date.now() - this.t0) / 1000).toFixed(1)}s${summary ? `: ${summary}` : ''}`);
  }
}

export const silentProgress: Progress = { start() {}, tick() {}, done() {} };
