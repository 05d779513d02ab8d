/**
 * The lab report: REPORT.md (and later index.html with charts) built from the result
 * files in `DIR/results/`, so it can be rebuilt from the raw figures at any time.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ResultEnvelope } from './types.js';
import { EXPERIMENTS } from './registry.js';
import { checksMarkdown } from './runner.js';

export async function loadResults(outDir: string): Promise<ResultEnvelope[]> {
  const dir = join(outDir, 'results');
  let names: string[] = [];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const order = EXPERIMENTS.map((e) => e.name);
  const results = await Promise.all(names.map(async (n) => JSON.parse(await readFile(join(dir, n), 'utf8')) as ResultEnvelope));
  return results.sort((a, b) => order.indexOf(a.experiment) - order.indexOf(b.experiment));
}

export async function buildReport(outDir: string): Promise<string[]> {
  const results = await loadResults(outDir);
  const parts = ['# Sluice lab report', ''];
  for (const r of results) {
    const exp = EXPERIMENTS.find((e) => e.name === r.experiment);
    parts.push(`## ${exp?.title ?? r.experiment}`, '', `${r.createdAt} · ${r.host.cpuModel} × ${r.host.cpus} · Node ${r.host.nodeVersion}${r.quick ? ' · quick' : ''}`, '');
    if (exp) parts.push(exp.markdown(r), '');
    parts.push(checksMarkdown(r), '');
  }
  const path = join(outDir, 'REPORT.md');
  await writeFile(path, parts.join('\n'));
  return [path];
}
