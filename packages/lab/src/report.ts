/**
 * The lab report, built from the result files in `DIR/results/` alone, so it can be rebuilt
 * from the raw figures at any time:
 *
 * - `DIR/charts/<id>.svg` and `.png` for every chart of every registered experiment;
 * - `DIR/REPORT.md` (charts as PNG links);
 * - `DIR/index.html`, self-contained apart from the chart files beside it: inline CSS, no
 *   script, nothing fetched from the network.
 *
 * One broken chart (or one experiment's broken `charts()`/`markdown()`) costs one log line
 * and a note in the report, never the report.
 */
import { countVerdicts } from './protocol.js';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChartSpec, Check, Experiment, HostInfo, ResultEnvelope } from './types.js';
import { EXPERIMENTS } from './registry.js';
import { WINDOW_HISTORY_FILE } from './experiments/window.js';
import { formatCheck, round } from './checks.js';
import { hostInfo } from './host.js';
import { renderChart, type RenderedChart } from './charts.js';
import { escapeHtml, inlineMarkdown, markdownToHtml } from './html.js';
import { headlines, writeup, writeupMarkdown, type Headline, type WriteupParagraph } from './writeup.js';

export interface ReportOptions {
  /** Experiments known to this build (default: the registry). */
  experiments?: Experiment[];
  /** One line per problem (default: stderr). */
  log?: (line: string) => void;
  /** Generation time shown in the header (default: now). */
  now?: Date;
}

const stderrLine = (l: string) => process.stderr.write(l + '\n');

export async function loadResults(outDir: string, opts: Pick<ReportOptions, 'experiments' | 'log'> = {}): Promise<ResultEnvelope[]> {
  const dir = join(outDir, 'results');
  const log = opts.log ?? stderrLine;
  let names: string[] = [];
  try {
    // The window's choice history lives beside the envelopes on purpose (one directory per
    // report); it is the lab's own file, so it is left out without a warning.
    names = (await readdir(dir)).filter((n) => n.endsWith('.json') && n !== WINDOW_HISTORY_FILE).sort();
  } catch {
    return [];
  }
  const results: ResultEnvelope[] = [];
  for (const n of names) {
    try {
      const r = JSON.parse(await readFile(join(dir, n), 'utf8')) as ResultEnvelope;
      if (typeof r !== 'object' || r === null || typeof r.experiment !== 'string') throw new Error('not a result envelope (no "experiment")');
      if (!Array.isArray(r.checks)) r.checks = [];
      results.push(r);
    } catch (err) {
      log(`report: skipped results/${n}: ${(err as Error).message}`);
    }
  }
  // Registry order first (the order `sluice lab` runs them), unknown experiments after, by name.
  const order = (opts.experiments ?? EXPERIMENTS).map((e) => e.name);
  const rank = (r: ResultEnvelope) => (order.includes(r.experiment) ? order.indexOf(r.experiment) : order.length);
  return results.sort((a, b) => rank(a) - rank(b) || a.experiment.localeCompare(b.experiment));
}

/** What the report shows for one result. */
export interface ReportSection {
  result: ResultEnvelope;
  experiment?: Experiment;
  title: string;
  markdown: string | null;
  charts: RenderedChart[];
  /** Charts that could not be built or rendered: id/title and the reason. */
  failedCharts: { id: string; title: string; error: string }[];
}

function describeError(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split('\n')[0].slice(0, 200);
}

async function buildSection(r: ResultEnvelope, exp: Experiment | undefined, outDir: string, log: (l: string) => void): Promise<ReportSection> {
  const section: ReportSection = { result: r, experiment: exp, title: exp?.title ?? r.experiment, markdown: null, charts: [], failedCharts: [] };
  if (!exp) return section;
  try {
    section.markdown = exp.markdown(r);
  } catch (err) {
    log(`report: ${r.experiment}: markdown() failed: ${describeError(err)}`);
  }
  let specs: ChartSpec[] = [];
  try {
    specs = exp.charts?.(r) ?? [];
  } catch (err) {
    log(`report: ${r.experiment}: charts() failed: ${describeError(err)}`);
    section.failedCharts.push({ id: `${r.experiment}-charts`, title: `${r.experiment} charts`, error: describeError(err) });
  }
  for (const spec of specs) {
    try {
      section.charts.push(await renderChart(spec, outDir));
    } catch (err) {
      log(`report: chart ${spec.id} failed: ${describeError(err)}`);
      section.failedCharts.push({ id: spec.id, title: spec.title, error: describeError(err) });
    }
  }
  return section;
}

export async function buildReport(outDir: string, opts: ReportOptions = {}): Promise<string[]> {
  const experiments = opts.experiments ?? EXPERIMENTS;
  const log = opts.log ?? stderrLine;
  const results = await loadResults(outDir, { experiments, log });
  const sections: ReportSection[] = [];
  for (const r of results) sections.push(await buildSection(r, experiments.find((e) => e.name === r.experiment), outDir, log));
  let paragraphs: WriteupParagraph[] = [];
  try {
    paragraphs = writeup(results);
  } catch (err) {
    log(`report: write-up failed: ${describeError(err)}`);
  }
  let heads: Headline[] = [];
  try {
    heads = headlines(results);
  } catch (err) {
    log(`report: headlines failed: ${describeError(err)}`);
  }
  const meta: ReportMeta = { generatedAt: (opts.now ?? new Date()).toISOString(), hosts: hostsOf(results), outDir, headlines: heads };
  const mdPath = join(outDir, 'REPORT.md');
  const htmlPath = join(outDir, 'index.html');
  await writeFile(mdPath, reportMarkdown(sections, paragraphs, meta));
  await writeFile(htmlPath, reportHtml(sections, paragraphs, meta));
  return [mdPath, htmlPath];
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

export interface ReportMeta {
  generatedAt: string;
  /** Distinct hosts the results were measured on (the current host when there are none). */
  hosts: HostInfo[];
  outDir: string;
  /** Headline figures shown under the title (may be empty). */
  headlines?: Headline[];
}

function hostsOf(results: ResultEnvelope[]): HostInfo[] {
  const seen = new Map<string, HostInfo>();
  for (const r of results) if (r.host) seen.set(`${r.host.cpuModel}|${r.host.cpus}|${r.host.nodeVersion}`, r.host);
  return seen.size ? [...seen.values()] : [hostInfo()];
}

export function hostLine(h: HostInfo): string {
  return `${h.cpuModel} × ${h.cpus} cores, ${h.totalMemMb ? `${Math.round(h.totalMemMb / 1024)} GB RAM, ` : ''}Node ${h.nodeVersion}, ${h.platform}`;
}

const REGENERATE = 'npm run lab';

/** Passed, failed, and not decidable here (a judged check whose spread exceeded its margin: neither). */
function counts(checks: Check[]): { pass: number; fail: number; undecidable: number } {
  return countVerdicts(checks);
}

function verdictWord(c: { fail: number; undecidable: number }): string {
  return c.fail > 0 ? '❌ fail' : c.undecidable > 0 ? `➖ ${c.undecidable} not decidable here` : '✅ pass';
}

function fmtValue(v: Check['value'] | Check['threshold']): string {
  if (Array.isArray(v)) return `[${v.map((x) => round(x)).join(', ')}]`;
  if (typeof v === 'number') return String(round(v));
  return String(v);
}

function runLine(r: ResultEnvelope): string {
  const when = typeof r.createdAt === 'string' ? r.createdAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : 'unknown time';
  const took = typeof r.elapsedMs === 'number' ? `${(r.elapsedMs / 1000).toFixed(1)} s` : '';
  return [`\`${r.experiment}\``, when, r.quick ? 'quick run' : 'full run', took, typeof r.sloMs === 'number' ? `SLO ${r.sloMs} ms` : ''].filter(Boolean).join(' · ');
}

function anchor(r: ResultEnvelope): string {
  return `exp-${r.experiment.replace(/[^a-zA-Z0-9_-]+/g, '-')}`;
}

// ---------------------------------------------------------------------------------------------
// REPORT.md

export function reportMarkdown(sections: ReportSection[], paragraphs: WriteupParagraph[], meta: ReportMeta): string {
  const md: string[] = ['# Sluice lab report', ''];
  md.push(`Generated ${meta.generatedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')} on ${meta.hosts.map(hostLine).join('; ')}.`);
  md.push(`Regenerate with \`${REGENERATE}\` (all experiments; \`sluice lab <name> --quick --out DIR\` for one). Every figure below is read from \`results/*.json\`.`, '');
  if (meta.headlines?.length) md.push(meta.headlines.map((h) => `**${h.value}** ${h.label}`).join(' · '), '');
  md.push('## Summary', '');
  if (sections.length === 0) md.push('No results yet: run `npm run lab`.', '');
  else {
    md.push('| experiment | checks passed | failed | not decidable here | verdict | run |', '| --- | ---: | ---: | ---: | --- | --- |');
    for (const s of sections) {
      const c = counts(s.result.checks);
      md.push(`| [${s.result.experiment}](#${anchor(s.result)}) | ${c.pass} | ${c.fail} | ${c.undecidable} | ${verdictWord(c)} | ${s.result.quick ? 'quick' : 'full'} |`);
    }
    md.push('');
  }
  for (const s of sections) {
    md.push(`<a id="${anchor(s.result)}"></a>`, '', `## ${s.title}`, '', runLine(s.result), '');
    if (s.experiment) md.push(s.experiment.description, '');
    else md.push(`*Experiment \`${s.result.experiment}\` is not registered in this build: its checks only.*`, '');
    if (s.markdown) md.push(s.markdown, '');
    for (const c of s.charts) md.push(`#### ${c.title}`, '', `![${c.title}](${c.pngFile})`, '', `*${c.caption}* ([SVG](${c.svgFile}))`, '');
    for (const f of s.failedCharts) md.push(`> Chart “${f.title}” could not be rendered: ${f.error}`, '');
    const c = counts(s.result.checks);
    md.push(`**Checks: ${c.pass} of ${s.result.checks.length} pass${c.undecidable ? `, ${c.undecidable} not decidable here` : ''}**`, '');
    md.push(...s.result.checks.map((x) => `- ${formatCheck(x)}`), '');
  }
  md.push('## Write-up', '');
  md.push(paragraphs.length ? writeupMarkdown(paragraphs) : 'No write-up yet: none of the result files it quotes (batching, window, overflow, poison) is present.', '');
  return md.join('\n');
}

// ---------------------------------------------------------------------------------------------
// index.html

const CSS = `
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#4c78a8; --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#cf222e; --fail-bg:#ffebe9; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--soft); color: var(--fg); font: 16px/1.6 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 40px 32px 64px; background: #fff; min-height: 100vh; box-shadow: 0 0 0 1px var(--line); }
header.top h1 { font-size: 30px; line-height: 1.2; margin: 0 0 8px; letter-spacing: -0.01em; }
.meta { color: var(--muted); font-size: 14px; margin: 2px 0; }
.meta code { font-size: 13px; }
h2 { font-size: 22px; line-height: 1.3; margin: 0 0 6px; letter-spacing: -0.005em; }
h3 { font-size: 18px; margin: 28px 0 8px; }
h4 { font-size: 16px; margin: 24px 0 8px; }
h5, h6 { font-size: 15px; margin: 20px 0 6px; }
p { margin: 10px 0; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 0.88em/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; background: var(--soft); padding: 0.1em 0.35em; border-radius: 4px; }
pre { background: var(--soft); padding: 12px 16px; border-radius: 6px; overflow-x: auto; }
pre code { background: none; padding: 0; }
section.experiment { border-top: 1px solid var(--line); margin-top: 40px; padding-top: 32px; }
section.summary { margin-top: 28px; }
.headlines { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 14px; margin: 26px 0 8px; }
.headline { border: 1px solid var(--line); border-left: 4px solid var(--accent); border-radius: 8px; padding: 12px 16px; background: #fbfcfd; }
.headline.good { border-left-color: var(--pass); }
.headline.bad { border-left-color: var(--fail); }
.headline .value { font-size: 26px; font-weight: 700; line-height: 1.2; font-variant-numeric: tabular-nums; letter-spacing: -0.01em; }
.headline .label { color: var(--muted); font-size: 13.5px; line-height: 1.35; margin-top: 4px; }
.description { color: #31383f; }
.table-wrap { overflow-x: auto; margin: 14px 0; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; width: auto; min-width: 50%; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--soft); font-weight: 600; border-bottom: 2px solid var(--line); white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
td.num, th.num { text-align: right; }
td.center, th.center { text-align: center; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12.5px; font-weight: 600; white-space: nowrap; }
.badge.pass { color: var(--pass); background: var(--pass-bg); }
.badge.fail { color: var(--fail); background: var(--fail-bg); }
.charts { display: grid; grid-template-columns: 1fr; gap: 20px; margin: 20px 0; }
figure.chart { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 16px 18px 12px; background: #fff; }
figure.chart h4 { margin: 0 0 10px; font-size: 16px; }
figure.chart img { display: block; width: auto; max-width: 100%; height: auto; margin: 0 auto; }
figure.chart figcaption { color: var(--muted); font-size: 14px; margin-top: 8px; }
figure.chart figcaption a { font-size: 13px; margin-left: 6px; }
.chart-failed { color: var(--fail); background: var(--fail-bg); padding: 8px 12px; border-radius: 6px; font-size: 14px; }
.note { color: var(--muted); font-style: italic; }
.checks td.value { font-variant-numeric: tabular-nums; white-space: nowrap; }
section.writeup { border-top: 1px solid var(--line); margin-top: 40px; padding-top: 32px; }
section.writeup p { font-size: 16.5px; }
section.writeup strong { color: var(--accent); }
footer { color: var(--muted); font-size: 13px; margin-top: 48px; border-top: 1px solid var(--line); padding-top: 16px; }
@media (max-width: 640px) { main { padding: 24px 16px; } }
`;

function badge(pass: boolean, text?: string): string {
  return `<span class="badge ${pass ? 'pass' : 'fail'}">${text ?? (pass ? 'pass' : 'fail')}</span>`;
}

function checksHtml(checks: Check[]): string {
  if (checks.length === 0) return '<p class="note">No checks recorded.</p>';
  const rows = checks.map(
    (c) =>
      `<tr><td>${c.verdict === 'undecidable' ? '<span class="badge fail">not decidable here</span>' : badge(c.pass)}</td><td>${escapeHtml(c.name)}${c.judged ? `<br><small>median of ${c.judged.reps.length}: ${escapeHtml(c.judged.reps.join(', '))}; spread ${c.judged.spread}, tolerance ${c.judged.tolerance} (${escapeHtml(c.judged.toleranceFrom)})${c.judged.needs ? `; ${escapeHtml(c.judged.needs)}` : ''}</small>` : ''}</td><td class="value num">${escapeHtml(fmtValue(c.value))}</td><td class="center"><code>${escapeHtml(c.op)}</code></td><td class="value num">${escapeHtml(fmtValue(c.threshold))}</td></tr>`,
  );
  return `<div class="table-wrap"><table class="checks">\n<thead><tr><th></th><th>check</th><th class="num">measured</th><th class="center">op</th><th class="num">threshold</th></tr></thead>\n<tbody>\n${rows.join('\n')}\n</tbody>\n</table></div>`;
}

function chartHtml(c: RenderedChart): string {
  return [
    `<figure class="chart" id="chart-${escapeHtml(c.id)}">`,
    `<h4>${escapeHtml(c.title)}</h4>`,
    `<img src="${escapeHtml(c.svgFile)}" width="${Math.round(c.width)}" height="${Math.round(c.height)}" alt="${escapeHtml(c.title)}: ${escapeHtml(c.caption)}">`,
    `<figcaption>${inlineMarkdown(c.caption)} <a href="${escapeHtml(c.pngFile)}">PNG</a> · <a href="${escapeHtml(c.svgFile)}">SVG</a></figcaption>`,
    `</figure>`,
  ].join('\n');
}

function sectionHtml(s: ReportSection): string {
  const r = s.result;
  const c = counts(r.checks);
  const out = [`<section class="experiment" id="${anchor(r)}">`, `<h2>${escapeHtml(s.title)}</h2>`, `<p class="meta">${inlineMarkdown(runLine(r))} · ${badge(c.fail === 0, `${c.pass}/${r.checks.length} checks pass`)}</p>`];
  if (s.experiment) out.push(`<p class="description">${inlineMarkdown(s.experiment.description)}</p>`);
  else out.push(`<p class="note">Experiment <code>${escapeHtml(r.experiment)}</code> is not registered in this build: its checks only.</p>`);
  if (s.markdown) out.push(markdownToHtml(s.markdown));
  if (s.charts.length || s.failedCharts.length) {
    out.push('<div class="charts">');
    out.push(...s.charts.map(chartHtml));
    out.push(...s.failedCharts.map((f) => `<p class="chart-failed">Chart “${escapeHtml(f.title)}” could not be rendered: ${escapeHtml(f.error)}</p>`));
    out.push('</div>');
  }
  out.push(`<h3>Checks</h3>`, checksHtml(r.checks), '</section>');
  return out.join('\n');
}

export function reportHtml(sections: ReportSection[], paragraphs: WriteupParagraph[], meta: ReportMeta): string {
  const generated = meta.generatedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const total = sections.reduce((s, x) => s + x.result.checks.length, 0);
  const passed = sections.reduce((s, x) => s + counts(x.result.checks).pass, 0);
  const summaryRows = sections.map((s) => {
    const c = counts(s.result.checks);
    return `<tr><td><a href="#${anchor(s.result)}"><code>${escapeHtml(s.result.experiment)}</code></a></td><td>${escapeHtml(s.title)}</td><td class="num">${c.pass}</td><td class="num">${c.fail}</td><td>${badge(c.fail === 0)}</td><td>${s.result.quick ? 'quick' : 'full'}</td></tr>`;
  });
  const summary = sections.length
    ? `<div class="table-wrap"><table>\n<thead><tr><th>experiment</th><th>what it shows</th><th class="num">passed</th><th class="num">failed</th><th>verdict</th><th>run</th></tr></thead>\n<tbody>\n${summaryRows.join('\n')}\n</tbody>\n</table></div>`
    : '<p class="note">No results yet: run <code>npm run lab</code>.</p>';
  const writeupHtml = paragraphs.length
    ? paragraphs.map((p) => `<p><strong>${escapeHtml(p.topic)}.</strong> ${inlineMarkdown(p.text)}</p>`).join('\n')
    : '<p class="note">No write-up yet: none of the result files it quotes (batching, window, overflow, poison) is present.</p>';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice lab report</title>
<style>${CSS}</style>
</head>
<body>
<main>
<header class="top">
<h1>Sluice lab report</h1>
<p class="meta">Generated ${escapeHtml(generated)} on ${meta.hosts.map((h) => escapeHtml(hostLine(h))).join('; ')}</p>
<p class="meta">Regenerate with <code>${REGENERATE}</code> — every figure on this page is read from <code>results/*.json</code>.</p>
</header>
${meta.headlines?.length ? `<div class="headlines">\n${meta.headlines.map((h) => `<div class="headline${h.good === false ? ' bad' : h.good === true ? ' good' : ''}"><div class="value">${escapeHtml(h.value)}</div><div class="label">${escapeHtml(h.label)}</div></div>`).join('\n')}\n</div>` : ''}
<section class="summary">
<h2>Summary ${sections.length ? badge(passed === total, `${passed}/${total} checks pass`) : ''}</h2>
${summary}
</section>
${sections.map(sectionHtml).join('\n')}
<section class="writeup" id="writeup">
<h2>Write-up</h2>
${writeupHtml}
</section>
<footer>Sluice — a batching ingest pipeline and the lab that measures it. Charts: Vega-Lite, rendered to SVG and PNG without a browser.</footer>
</main>
</body>
</html>
`;
}
