/**
 * The lab's common result envelope. Every experiment writes one JSON file holding its
 * configuration, the raw figures it measured and a `checks` list, so that the report and
 * any reader can recompute each verdict from the raw figures.
 */
import type { Progress } from './progress.js';

export type CheckOp = '<=' | '<' | '>=' | '>' | '==' | 'within';

export interface Check {
  name: string;
  value: number | boolean | string;
  /** For `within`: [lo, hi]. */
  threshold: number | boolean | string | [number, number];
  op: CheckOp;
  /** True only for a `pass` verdict: a check that is not decidable here is not a pass. */
  pass: boolean;
  /**
   * Judged comparisons (src/lab/protocol.ts) carry a verdict: `undecidable` when the spread of
   * the repetitions (or the calibrated tolerance) exceeds the margin the median has from the
   * threshold — reported with its stalls, counted neither as a pass nor as a failure. Absent
   * on plain checks (their verdict is `pass`).
   */
  verdict?: Verdict;
  /** For judged comparisons: the repetitions, their spread and the tolerance (see Judgement). */
  judged?: Judgement;
}

export type Verdict = 'pass' | 'fail' | 'undecidable';

export interface Judgement {
  /** The value of each repetition (the check's value is their median). */
  reps: number[];
  /** Median absolute deviation of the repetitions from their median. */
  spread: number;
  /** Tolerance from the calibration step (same unit as the value), and where it came from. */
  tolerance: number;
  toleranceFrom: string;
  /** Signed distance of the median from the threshold, positive on the passing side. */
  margin: number;
  /** What stalled the repetitions (worst GC pause, loop delay and sink write of each), when known. */
  stalls?: { gcPauseMaxMs: number; eventLoopDelayMaxMs: number; sinkWriteMaxMs: number; sinkWritesOver5Ms: number }[];
  /** For an undecidable check: how quiet the machine would have to be to decide it. */
  needs?: string;
}

export interface HostInfo {
  cpus: number;
  cpuModel: string;
  nodeVersion: string;
  platform: string;
  totalMemMb: number;
  hostname: string;
}

export interface ResultEnvelope {
  experiment: string;
  createdAt: string;
  host: HostInfo;
  sloMs: number;
  quick: boolean;
  /** Wall time of the whole experiment (ms). */
  elapsedMs: number;
  checks: Check[];
  [key: string]: unknown;
}

export type SinkKind = 'file' | 'postgres';

export interface ExperimentContext {
  quick: boolean;
  /** Report directory; results go to `${outDir}/results/`. */
  outDir: string;
  /** Scratch directory for this experiment's data files (removed afterwards unless --keep). */
  workDir: string;
  sloMs: number;
  sink: SinkKind;
  databaseUrl?: string;
  natsUrl?: string;
  /** ../shared/data when present, else null: experiments fall back to generators. */
  sharedDataDir: string | null;
  progress: Progress;
  log: (line: string) => void;
  /** Experiment-specific flags from the CLI (e.g. trace, speedup, source). */
  args: Record<string, unknown>;
}

export interface Experiment {
  name: string;
  title: string;
  /** One paragraph: what it shows and how. */
  description: string;
  /** Extra CLI flags of `sluice lab <name>`, e.g. `{ flags: '--trace <file>', description: '…' }`. Parsed values land in `ctx.args` (camelCase). */
  cliOptions?: { flags: string; description: string; defaultValue?: string | boolean }[];
  /** Runs and returns everything but the envelope fields the runner fills in. */
  run(ctx: ExperimentContext): Promise<{ checks: Check[]; [key: string]: unknown }>;
  /** Markdown rendering of the result (tables), printed and written beside the JSON. */
  markdown(result: ResultEnvelope): string;
  /** Charts for the report, built from the result file alone (see src/lab/report.ts). */
  charts?(result: ResultEnvelope): ChartSpec[];
}

/** One chart of the report: a Vega-Lite spec with its data inlined, rendered to SVG and PNG. */
export interface ChartSpec {
  /** File stem, unique in the report, e.g. `batching-throughput`. */
  id: string;
  /** Shown above the chart. */
  title: string;
  /** One line saying what the chart shows (and what to look at). */
  caption: string;
  /** A Vega-Lite (v6) spec; axis titles must carry units. */
  spec: Record<string, unknown>;
}
