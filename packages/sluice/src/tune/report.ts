/**
 * `sluice tune`'s output: the terminal summary, `tune.json`, `tune.md` and `tune.html` (the
 * grid chart as an inline SVG drawn here: the product depends on no chart library and the page
 * loads nothing from a CDN).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CellResult, TuneResult } from './tune.js';

const f = (x: number, d = 2) => (Number.isFinite(x) ? String(Math.round(x * 10 ** d) / 10 ** d) : '∞');
const us = (ms: number | null) => (ms === null ? 'not separable with these records' : `${f(ms * 1000, 3)} µs`);

export function summaryLines(r: TuneResult): string[] {
  const L: string[] = [];
  L.push(`sink: ${r.sink}`);
  L.push(`records: ${r.records}`);
  L.push(`cost: fixed ${f(r.cost.fixedMs, 3)} ms per write, ${us(r.cost.perItemMs)} per item, ${r.cost.perByteMs === null ? 'per byte not separable with these records' : `${f(r.cost.perByteMs * 1e6, 3)} ns per byte`}`);
  L.push(`writes: ${r.stalls.writes} timed, ${r.stalls.overSlo} longer than the SLO (${r.sloMs} ms); p99 write ${f(r.stalls.p99WriteMs)} ms, longest ${f(r.stalls.maxWriteMs)} ms`);
  const probes = r.capacity.probes.map((p) => `${p.ratePerSec}/s → ${Number.isFinite(p.p99Ms) ? `${f(p.p99Ms)} ms` : 'load not offered or records lost'}`).join(', ');
  const capNote =
    r.capacity.perSec === 0 ? '' : r.capacity.bound === 'at-least' ? ' at least (no rate tried failed: the ramp ran out of probes)' : r.capacity.limitedByGenerator ? ' at least (the load generator in this process, not the sink, failed above it)' : '';
  L.push(`capacity at the SLO (p99 ≤ ${r.limitMs} ms = SLO − margin): ${r.capacity.perSec}/s${capNote}; probes (rate → p99): ${probes}`);
  L.push(r.loads.peakPerSec > 0 ? `loads: peak ${r.loads.peakPerSec}/s (${r.loads.peakFrom}), low ${r.loads.lowPerSec}/s` : 'loads: none (no rate held the SLO)');
  if (r.derived) L.push(r.derived.feasible ? `derived from the cost model: ${r.derived.reason}` : `derived from the cost model: none: ${r.derived.reason}`);
  if (r.choice.chosen) {
    L.push(`chosen: ${r.choice.reason}`);
    L.push(`runner-up: ${r.choice.runnerUp ?? 'none'}: ${r.choice.runnerUpLostOn}`);
  }
  if (r.validation)
    L.push(`validation at the peak, ${r.validation.runs.length} runs: p99 ${r.validation.runs.map((v) => `${f(v.p99Ms)} ms`).join(', ')}; median ${f(r.validation.medianP99Ms)} ms ${r.validation.held ? '≤' : '>'} SLO ${r.sloMs} ms: ${r.validation.held ? 'held' : 'NOT held'}`);
  L.push(`verdict: ${r.verdict}: ${r.summary}`);
  if (r.snippet) L.push(`config (run --config / serve --config): ${JSON.stringify(r.snippet)}`);
  return L;
}

function cellRows(cells: CellResult[], r: TuneResult): string[] {
  const rows = ['| window | p99 low (ms) | p99 peak (ms) | ops/item at peak | cut by size at peak | median batch at peak | |', '|---|---:|---:|---:|---:|---:|---|'];
  for (const c of cells) {
    const mark = c.label === r.choice.chosen ? 'chosen' : c.label === r.choice.runnerUp ? 'runner-up' : c.derived ? 'derived' : '';
    rows.push(`| ${c.label} | ${f(c.p99ByLoad.low)} | ${f(c.p99ByLoad.peak)} | ${f(c.opsPerItem, 5)} | ${Math.round(c.sizeCutShareAtPeak * 100)}% | ${f(c.medianBatchAtPeak, 0)} | ${mark} |`);
  }
  return rows;
}

export function markdown(r: TuneResult): string {
  const out = [`# sluice tune: SLO p99 ≤ ${r.sloMs} ms`, '', `**${r.verdict}**: ${r.summary}`, '', ...summaryLines(r).map((l) => `- ${l}`), ''];
  if (r.cells.length) out.push('## Grid', '', `Medians over the repetitions; the bound is ${r.limitMs} ms (SLO − margin) at both loads.`, '', ...cellRows(r.cells, r), '', '![grid](tune.svg)', '');
  if (r.snippet) out.push('## Config', '', 'Accepted as is by `sluice run --config` and `sluice serve --config`:', '', '```json', JSON.stringify(r.snippet, null, 2), '```', '');
  return out.join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Worst p99 of each window (y) against its fixed-cost ops per item at peak (x, log), with the bound and the SLO. */
export function gridSvg(r: TuneResult): string {
  const W = 640;
  const H = 360;
  const m = { l: 60, r: 20, t: 20, b: 50 };
  const cells = r.cells.filter((c) => Number.isFinite(c.opsPerItem) && c.opsPerItem > 0);
  if (cells.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="40"><text x="10" y="25" font-size="13">no window measured</text></svg>`;
  const worst = (c: CellResult) => Math.max(...Object.values(c.p99ByLoad));
  const xs = cells.map((c) => Math.log10(c.opsPerItem));
  const x0 = Math.min(...xs) - 0.1;
  const x1 = Math.max(...xs) + 0.1;
  const yMax = Math.max(r.sloMs * 1.5, ...cells.map(worst).filter(Number.isFinite).map((v) => Math.min(v, r.sloMs * 4)));
  const X = (v: number) => m.l + ((Math.log10(v) - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (v: number) => H - m.b - (Math.min(v, yMax) / yMax) * (H - m.t - m.b);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#999"/>`);
  for (const [v, name, color] of [[r.limitMs, `bound ${r.limitMs} ms`, '#d08000'], [r.sloMs, `SLO ${r.sloMs} ms`, '#c00000']] as const)
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${Y(v)}" y2="${Y(v)}" stroke="${color}" stroke-dasharray="4 3"/><text x="${W - m.r - 4}" y="${Y(v) - 3}" text-anchor="end" fill="${color}">${name}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    parts.push(`<text x="${m.l - 6}" y="${Y(v) + 4}" text-anchor="end">${f(v, 1)}</text>`);
  }
  for (let e = Math.ceil(x0); e <= Math.floor(x1); e++) parts.push(`<text x="${X(10 ** e)}" y="${H - m.b + 16}" text-anchor="middle">${10 ** e}</text>`);
  parts.push(`<text x="${(W + m.l) / 2}" y="${H - 12}" text-anchor="middle">fixed-cost ops per item at the peak (log)</text>`);
  parts.push(`<text x="14" y="${(H - m.b) / 2}" transform="rotate(-90 14 ${(H - m.b) / 2})" text-anchor="middle">worst p99 of low and peak (ms)</text>`);
  for (const c of cells) {
    const chosen = c.label === r.choice.chosen;
    const runner = c.label === r.choice.runnerUp;
    const color = chosen ? '#008000' : runner ? '#0060c0' : worst(c) <= r.limitMs ? '#666' : '#c00000';
    parts.push(`<circle cx="${X(c.opsPerItem)}" cy="${Y(worst(c))}" r="${chosen || runner ? 6 : 4}" fill="${color}"><title>${esc(`${c.label}: p99 low ${f(c.p99ByLoad.low)} ms, peak ${f(c.p99ByLoad.peak)} ms, ${f(c.opsPerItem, 5)} ops/item`)}</title></circle>`);
    parts.push(`<text x="${X(c.opsPerItem) + 7}" y="${Y(worst(c)) - 5}" fill="${color}">${esc(c.label)}${chosen ? ' (chosen)' : runner ? ' (runner-up)' : ''}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}

export function html(r: TuneResult): string {
  const table = r.cells.length ? cellRows(r.cells, r) : [];
  const body: string[] = [];
  body.push(`<h1>sluice tune: SLO p99 ≤ ${r.sloMs} ms</h1>`, `<p><b>${esc(r.verdict)}</b>: ${esc(r.summary)}</p>`, '<ul>');
  for (const l of summaryLines(r)) body.push(`<li>${esc(l)}</li>`);
  body.push('</ul>');
  if (table.length) {
    body.push('<h2>Grid</h2>', gridSvg(r), '<table border="1" cellpadding="4" cellspacing="0">');
    for (const [i, row] of table.entries()) {
      if (i === 1) continue;
      const cells = row.split('|').slice(1, -1).map((c) => c.trim());
      body.push(`<tr>${cells.map((c) => (i === 0 ? `<th>${esc(c)}</th>` : `<td>${esc(c)}</td>`)).join('')}</tr>`);
    }
    body.push('</table>');
  }
  if (r.snippet) body.push('<h2>Config</h2><p>Accepted as is by <code>sluice run --config</code> and <code>sluice serve --config</code>:</p>', `<pre>${esc(JSON.stringify(r.snippet, null, 2))}</pre>`);
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>sluice tune</title></head><body style="font-family:sans-serif;max-width:60em">\n${body.join('\n')}\n</body></html>\n`;
}

/** Writes tune.json, tune.md, tune.svg, tune.html and (when recommended) tune.config.json into `dir`. */
export async function writeOutputs(dir: string, r: TuneResult): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const files: [string, string][] = [
    ['tune.json', JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n'],
    ['tune.md', markdown(r)],
    ['tune.svg', gridSvg(r) + '\n'],
    ['tune.html', html(r)],
  ];
  if (r.snippet) files.push(['tune.config.json', JSON.stringify(r.snippet, null, 2) + '\n']);
  for (const [name, text] of files) await writeFile(join(dir, name), text);
  return files.map(([n]) => join(dir, n));
}
