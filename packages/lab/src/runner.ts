/**
 * Runs experiments and writes their result files: `DIR/results/<name>.json` (the common
 * envelope) and `DIR/results/<name>.md` (the experiment's tables and checks).
 */
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { formatCheck } from './checks.js';
import { countVerdicts } from './protocol.js';
import { hostInfo } from './host.js';
import type { Progress } from './progress.js';
import type { Experiment, ExperimentContext, ResultEnvelope, SinkKind } from './types.js';

export interface LabOptions {
  quick: boolean;
  outDir: string;
  sloMs: number;
  sink: SinkKind;
  databaseUrl?: string;
  natsUrl?: string;
  keep?: boolean;
  args?: Record<string, unknown>;
  progress: Progress;
  log: (line: string) => void;
}

/** ../shared/data relative to the project root (or SLUICE_SHARED_DATA), when present. */
export function findSharedData(): string | null {
  const candidates = [process.env.SLUICE_SHARED_DATA, resolve(process.cwd(), '../shared/data'), resolve(import.meta.dirname ?? '.', '../../../../shared/data')];
  for (const c of candidates) if (c && existsSync(c)) return c;
  return null;
}

/** The commit the lab runs at (`+dirty` with uncommitted changes), or 'unknown' outside a git checkout. */
export function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return 'unknown';
  }
}

export async function runExperiment(exp: Experiment, opts: LabOptions): Promise<ResultEnvelope> {
  const workDir = await mkdtemp(join(tmpdir(), `sluice-${exp.name}-`));
  const ctx: ExperimentContext = {
    quick: opts.quick,
    outDir: opts.outDir,
    workDir,
    sloMs: opts.sloMs,
    sink: opts.sink,
    databaseUrl: opts.databaseUrl,
    natsUrl: opts.natsUrl,
    sharedDataDir: findSharedData(),
    progress: opts.progress,
    log: opts.log,
    args: opts.args ?? {},
  };
  const t0 = Date.now();
  let body: Awaited<ReturnType<Experiment['run']>>;
  try {
    body = await exp.run(ctx);
  } finally {
    if (!opts.keep) await rm(workDir, { recursive: true, force: true });
  }
  const result: ResultEnvelope = {
    experiment: exp.name,
    createdAt: new Date().toISOString(),
    commit: gitCommit(),
    host: hostInfo(),
    sloMs: opts.sloMs,
    quick: opts.quick,
    elapsedMs: Date.now() - t0,
    ...body,
    checks: body.checks,
  };
  const dir = join(opts.outDir, 'results');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${exp.name}.json`), JSON.stringify(result, null, 2) + '\n');
  const md = exp.markdown(result) + '\n\n' + checksMarkdown(result) + '\n';
  await writeFile(join(dir, `${exp.name}.md`), md);
  opts.log('\n' + md);
  return result;
}

export function checksMarkdown(r: ResultEnvelope): string {
  const lines = r.checks.map((c) => `- ${formatCheck(c)}`);
  const n = countVerdicts(r.checks);
  const nd = n.undecidable > 0 ? `, ${n.undecidable} not decidable here` : '';
  return `**Checks (${n.pass}/${r.checks.length} pass, ${n.fail} fail${nd})**\n\n${lines.join('\n')}`;
}

/** A Markdown table from rows of cells. */
export function mdTable(header: string[], rows: (string | number)[][]): string {
  const cell = (x: string | number) => String(x).replace(/\|/g, '\\|');
  return [
    `| ${header.map(cell).join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** Appends a bold title line, the table, and a blank line to a markdown section being built. */
export function pushTitledTable(out: string[], title: string, header: string[], rows: (string | number)[][]): void {
  out.push(title, '', mdTable(header, rows), '');
}
