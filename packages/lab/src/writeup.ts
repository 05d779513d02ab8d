/**
 * The report's closing write-up, generated from the result files: which fixed cost was
 * amortized and by how much, why this window, which overflow policy and why, and which
 * metric to alert on first.
 *
 * Every sentence is produced only when the figures it quotes exist in the results, and
 * every number in it is read from them: a missing experiment leaves its sentence out, it
 * never leaves a guess in. Claims of the form "X happened before/without Y" are made only
 * when the figures show it.
 */
import type { ResultEnvelope } from './types.js';

export interface WriteupParagraph {
  /** Short topic, shown in bold before the text. */
  topic: string;
  /** Markdown text (inline formatting only). */
  text: string;
}

type Obj = Record<string, unknown>;

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const arr = (x: unknown): Obj[] => (Array.isArray(x) ? x.filter(isObj) : []);

/** 12,345 for counts and rates. */
export function fmtInt(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}

/** Three significant digits, without exponent for everyday magnitudes: 0.387, 11.1, 2,105. */
export function fmtNum(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1000) return fmtInt(x);
  if (a >= 0.001) return String(Number(x.toPrecision(3)));
  return x.toExponential(2);
}

/** "a", "a and b", "a, b and c". */
export function listJoin(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

const pct = (part: number, whole: number) => `${fmtNum((100 * part) / whole)}%`;

/** The p99 of a latency summary, or a bare number. */
function p99Of(l: unknown): number | undefined {
  if (isNum(l)) return l;
  if (isObj(l) && isNum(l.p99)) return l.p99;
  return undefined;
}

const sentenceEnd = (s: string) => (/[.!?]$/.test(s.trim()) ? s.trim() : `${s.trim()}.`);

function find(results: ResultEnvelope[], name: string): ResultEnvelope | undefined {
  return results.find((r) => r.experiment === name);
}

/** What the sink is, without the scratch path or URL the description ends with. */
function sinkLabel(r: ResultEnvelope): string | undefined {
  const d = typeof r.sinkDescription === 'string' ? r.sinkDescription : typeof r.sink === 'string' ? r.sink : undefined;
  return d?.replace(/\s+(\/|[a-z]+:\/\/)\S*$/i, '').trim() || undefined;
}

export function amortizedParagraph(r: ResultEnvelope | undefined): WriteupParagraph | null {
  if (!r) return null;
  const cal = isObj(r.calibration) ? r.calibration : {};
  const runs = arr(r.runs);
  const fixedMs = cal.fixedCostMs;
  const c1 = cal.unbatchedCapacityPerSec;
  const loads = runs.map((x) => x.loadMultiple).filter(isNum);
  const top = loads.length ? Math.max(...loads) : undefined;
  const ub = runs.find((x) => x.variant === 'unbatched' && x.loadMultiple === top);
  const b = runs.find((x) => x.variant === 'batched' && x.loadMultiple === top);
  const kind = typeof (b ?? ub)?.fixedCostKind === 'string' ? ((b ?? ub)!.fixedCostKind as string) : 'fixed-cost operation';
  const label = sinkLabel(r);
  const parts: string[] = [];
  if (isNum(fixedMs)) {
    parts.push(
      `The fixed cost amortized is the ${kind} the sink pays on every write${label ? ` — ${label} sink` : ''}. Calibrated at ${fmtNum(fixedMs)} ms per operation` +
        (isNum(c1) ? `, it caps an item-at-a-time pipeline at C1 ≈ ${fmtInt(c1)} items/s.` : '.'),
    );
  }
  if (ub && b && isNum(top)) {
    const clauses: string[] = [];
    if (isNum(ub.fixedCostOpsPerItem) && isNum(b.fixedCostOpsPerItem) && b.fixedCostOpsPerItem > 0) {
      const mean = isObj(b.batchSize) && isNum(b.batchSize.mean) ? `, mean batch ${fmtNum(b.batchSize.mean)} items` : '';
      clauses.push(
        `cut ${kind} operations from ${fmtNum(ub.fixedCostOpsPerItem)} to ${fmtNum(b.fixedCostOpsPerItem)} per item (${fmtNum(ub.fixedCostOpsPerItem / b.fixedCostOpsPerItem)}× fewer${mean})`,
      );
    }
    if (isNum(ub.throughputPerSec) && isNum(b.throughputPerSec) && ub.throughputPerSec > 0) {
      clauses.push(
        `raised committed throughput from ${fmtInt(ub.throughputPerSec)} to ${fmtInt(b.throughputPerSec)} items/s (${fmtNum(b.throughputPerSec / ub.throughputPerSec)}×)`,
      );
    }
    const ubP = p99Of(ub.latencyMs);
    const bP = p99Of(b.latencyMs);
    if (isNum(ubP) && isNum(bP)) clauses.push(`took p99 from ${fmtNum(ubP)} ms to ${fmtNum(bP)} ms${isNum(r.sloMs) ? ` against a ${fmtNum(r.sloMs)} ms SLO` : ''}`);
    if (clauses.length > 0) {
      const offered = isNum(b.offeredPerSec) ? ` (offered ${fmtInt(b.offeredPerSec)} items/s)` : '';
      const last = clauses.pop()!;
      parts.push(`At ${fmtNum(top)}×C1${offered}, batching ${clauses.length ? `${clauses.join(', ')} and ${last}` : last}.`);
    }
  }
  return parts.length ? { topic: 'What was amortized', text: parts.join(' ') } : null;
}

export function windowParagraph(r: ResultEnvelope | undefined): WriteupParagraph | null {
  if (!r || !isObj(r.chosen)) return null;
  const c = r.chosen;
  if (!isNum(c.maxItems) || !isNum(c.maxWaitMs)) return null;
  const parts = [`The \`window\` experiment chose maxItems = ${fmtInt(c.maxItems)} and maxWaitMs = ${fmtNum(c.maxWaitMs)} ms${typeof c.reason === 'string' && c.reason.trim() ? `: ${sentenceEnd(c.reason)}` : '.'}`];
  const grid = arr(r.grid);
  // Since issue 20 the window is derived (often off the grid) and re-measured in repetitions:
  // the paragraph reads the real sink's validation run whose p99 is the median of its load.
  const val = arr(r.validation).filter((v) => v.sink === 'real');
  const medianRun = (load: string) => {
    const xs = val.filter((v) => v.load === load && isNum(p99Of(v.latencyMs))).sort((a, b) => p99Of(a.latencyMs)! - p99Of(b.latencyMs)!);
    return xs.length ? xs[Math.floor((xs.length - 1) / 2)] : undefined;
  };
  const cell = (load: string) => (val.length ? medianRun(load) : grid.find((g) => g.load === load && g.maxItems === c.maxItems && g.maxWaitMs === c.maxWaitMs));
  const low = cell('low');
  const peak = cell('peak');
  const lp = p99Of(low?.latencyMs);
  const pp = p99Of(peak?.latencyMs);
  const slo = isNum(r.sloMs) ? r.sloMs : undefined;
  const at = (g: Obj | undefined, name: string, p: number | undefined) =>
    isNum(p) ? `${fmtNum(p)} ms at ${name} load${g && isNum(g.offeredPerSec) ? ` (${fmtInt(g.offeredPerSec)} items/s)` : ''}` : null;
  const measured = [at(low, 'low', lp), at(peak, 'peak', pp)].filter((x): x is string => x !== null);
  if (measured.length) {
    const over = [
      ['low', lp],
      ['peak', pp],
    ].filter(([, p]) => isNum(p) && slo !== undefined && (p as number) > slo).map(([name]) => name as string);
    const verdict =
      slo === undefined ? '' : over.length === 0 ? `, inside the ${fmtNum(slo)} ms SLO` : `, over the ${fmtNum(slo)} ms SLO at ${listJoin(over)} load`;
    parts.push(`${val.length ? `Re-measured (median of ${val.filter((v) => v.load === 'low').length} runs per load)` : 'In the sweep'} its p99 was ${listJoin(measured)}${verdict}.`);
  }
  if (peak && isObj(peak.flushReasons)) {
    const fr = peak.flushReasons as Record<string, unknown>;
    const total = Object.values(fr).filter(isNum).reduce((s, x) => s + x, 0);
    const bySize = (isNum(fr.size) ? fr.size : 0) + (isNum(fr.bytes) ? fr.bytes : 0);
    const median = isObj(peak.batchSize) && isNum(peak.batchSize.p50) ? peak.batchSize.p50 : undefined;
    if (total > 0)
      parts.push(
        `At peak ${pct(bySize, total)} of flushes were by size${isNum(median) ? ` (median batch ${fmtInt(median)} of ${fmtInt(c.maxItems)})` : ''}, so ` +
          (bySize * 2 > total ? 'the size bound, not the timer, sets the cost there.' : 'the timer, not the size bound, closed most batches there.'),
      );
  }
  // One figure per trace: the run with the median p99 of its repetitions.
  const allReplays = arr(r.replays).filter((x) => isNum(p99Of(x.latencyMs)));
  const replays = [...new Set(allReplays.map((x) => x.trace))].map((t) => {
    const xs = allReplays.filter((x) => x.trace === t).sort((a, b) => p99Of(a.latencyMs)! - p99Of(b.latencyMs)!);
    return xs[Math.floor((xs.length - 1) / 2)];
  });
  if (replays.length) {
    const list = replays.map((x) => `${fmtNum(p99Of(x.latencyMs)!)} ms (${typeof x.trace === 'string' ? x.trace : typeof x.source === 'string' ? x.source : 'replay'})`);
    const worst = Math.max(...replays.map((x) => p99Of(x.latencyMs)!));
    const lost = replays.reduce((s, x) => s + (isNum(x.dropped) ? x.dropped : 0), 0);
    const lossKnown = replays.every((x) => isNum(x.dropped));
    parts.push(
      `On bursty replay p99 was ${listJoin(list)}${slo !== undefined ? ` — ${worst <= slo ? 'every replay inside' : 'at least one replay over'} the SLO` : ''}${lossKnown ? `, with ${fmtInt(lost)} items dropped` : ''}.`,
    );
  }
  return { topic: 'Why this window', text: parts.join(' ') };
}

export function adaptiveParagraph(r: ResultEnvelope | undefined): WriteupParagraph | null {
  if (!r) return null;
  const aimd = arr(r.aimd).filter((a) => typeof a.regime === 'string' && isNum(p99Of(a.latencyMs)) && isNum(a.fixedCostOpsPerItem));
  if (aimd.length === 0) return null;
  const statics = arr(r.statics);
  const best = isObj(r.bestStatic) && isNum(r.bestStatic.maxItems) && isNum(r.bestStatic.maxWaitMs) ? r.bestStatic : null;
  const parts: string[] = [];
  if (best) parts.push(`With hindsight, the best static window over both regimes was maxItems = ${fmtInt(best.maxItems as number)} and maxWaitMs = ${fmtNum(best.maxWaitMs as number)} ms.`);
  else if (r.bestStatic === null && statics.length) parts.push('No static window of the grid met the SLO in both regimes.');
  const wins: string[] = [];
  const staticBreaches: string[] = [];
  const clauses = aimd.map((a) => {
    const regime = a.regime as string;
    const ap = p99Of(a.latencyMs)!;
    const aOps = a.fixedCostOpsPerItem as number;
    const verdict = a.meetsSlo === true ? ', inside the SLO' : a.meetsSlo === false ? ', over the SLO' : '';
    // The best static re-measured as long as AIMD is (validatedStatics), else its grid cell.
    const isBest = (x: Record<string, unknown>) => best !== null && x.regime === regime && x.maxItems === best.maxItems && x.maxWaitMs === best.maxWaitMs;
    const st = arr(r.validatedStatics).find(isBest) ?? statics.find(isBest);
    const sp = p99Of(st?.latencyMs);
    const sOps = st && isNum(st.fixedCostOpsPerItem) ? st.fixedCostOpsPerItem : undefined;
    if (st && sOps !== undefined && sOps > 0 && a.meetsSlo === true && st.meetsSlo === true && aOps !== sOps)
      wins.push(aOps < sOps ? `AIMD spends ${pct(sOps - aOps, sOps)} fewer at ${regime} load` : `the static spends ${pct(aOps - sOps, aOps)} fewer at ${regime} load`);
    if (st && a.meetsSlo === true && st.meetsSlo === false) staticBreaches.push(`${regime} load`);
    return (
      `at ${regime} load p99 ${fmtNum(ap)} ms${verdict} with ${fmtNum(aOps)} fixed-cost ops per item` +
      (isNum(sp) && sOps !== undefined ? ` (the static: ${fmtNum(sp)} ms, ${fmtNum(sOps)})` : '')
    );
  });
  parts.push(`The AIMD controller, which needs no sweep, ran ${listJoin(clauses)}.`);
  if (wins.length) parts.push(`Where both meet the SLO, ${listJoin(wins)}.`);
  if (staticBreaches.length) parts.push(`At ${listJoin(staticBreaches)} the static, measured as long as AIMD, breaches the SLO that AIMD meets: AIMD wins there whatever either spends.`);
  return { topic: 'Static or adaptive window', text: parts.join(' ') };
}

interface PolicyFigures {
  policy: string;
  dropped?: number;
  accepted?: number;
  committed?: number;
  p99?: number;
  oom: boolean;
  exitCode?: number;
  exitSignal?: string;
  /** Ran to completion (the result's `survived`, or no OOM kill when it has none). */
  survived: boolean;
}

export function overflowParagraph(r: ResultEnvelope | undefined): WriteupParagraph | null {
  if (!r) return null;
  const vs: PolicyFigures[] = arr(r.variants)
    .filter((v) => typeof v.policy === 'string')
    .map((v) => ({
      policy: v.policy as string,
      dropped: isNum(v.dropped) ? v.dropped : undefined,
      accepted: isNum(v.accepted) ? v.accepted : undefined,
      committed: isNum(v.committed) ? v.committed : undefined,
      p99: p99Of(v.latencyMs),
      oom: v.oomKilled === true,
      exitCode: isNum(v.exitCode) ? v.exitCode : undefined,
      exitSignal: typeof v.exitSignal === 'string' ? v.exitSignal : undefined,
      survived: typeof v.survived === 'boolean' ? v.survived : v.oomKilled !== true,
    }));
  if (vs.length === 0) return null;
  const parts: string[] = [];
  const killed = vs.filter((v) => v.oom);
  const survivors = vs.filter((v) => !v.oom && v.survived);
  const crashed = vs.filter((v) => !v.oom && !v.survived);
  if (killed.length) {
    const how = (v: PolicyFigures) => [v.exitSignal, v.exitCode !== undefined ? `exit ${v.exitCode}` : undefined].filter(Boolean).join(', ');
    parts.push(
      `Offered more than the sink can take, ${listJoin(killed.map((v) => `\`${v.policy}\`${how(v) ? ` (${how(v)})` : ''}`))} ${killed.length > 1 ? 'were' : 'was'} OOM-killed` +
        (survivors.length ? ` while ${listJoin(survivors.map((v) => `\`${v.policy}\``))} ran to completion.` : '.'),
    );
  }
  if (crashed.length) parts.push(`${listJoin(crashed.map((v) => `\`${v.policy}\``))} failed without an OOM kill: its figures are left out.`);
  const described = survivors.filter((v) => v.dropped !== undefined);
  if (described.length) {
    const one = (v: PolicyFigures) =>
      `\`${v.policy}\` lost ${fmtInt(v.dropped!)}${v.accepted && v.dropped! > 0 ? ` (${pct(v.dropped!, v.accepted)} of accepted)` : ''}${v.p99 !== undefined ? ` at p99 ${fmtNum(v.p99)} ms` : ''}`;
    parts.push(`Lost items against latency: ${described.map(one).join('; ')}.`);
  }
  const lossless = described.filter((v) => v.dropped === 0);
  const byP99 = (a: PolicyFigures, b: PolicyFigures) => (a.p99 ?? Infinity) - (b.p99 ?? Infinity);
  let choice: PolicyFigures | undefined;
  if (lossless.length) {
    choice = [...lossless].sort(byP99)[0];
    const others = lossless.filter((v) => v !== choice && v.p99 !== undefined);
    parts.push(
      `Choose \`${choice.policy}\`: it lost nothing` +
        (others.length && choice.p99 !== undefined
          ? ` and had the lowest p99 of the lossless policies (${fmtNum(choice.p99)} ms against ${others.map((v) => `${fmtNum(v.p99!)} ms for \`${v.policy}\``).join(', ')})`
          : '') +
        '.',
    );
    const faster = described.filter((v) => v.dropped! > 0 && v.p99 !== undefined && choice!.p99 !== undefined && v.p99 < choice!.p99);
    if (faster.length) {
      const best = [...faster].sort(byP99)[0];
      parts.push(
        `\`${best.policy}\` kept p99 lower (${fmtNum(best.p99!)} ms) only by losing ${fmtInt(best.dropped!)} items: worth it only where fresh data matters more than complete data.`,
      );
    }
    if (isNum(r.sloMs) && choice.p99 !== undefined && choice.p99 > r.sloMs)
      parts.push(`Under this sustained overload no lossless policy met the ${fmtNum(r.sloMs)} ms SLO: overload is for backpressure to signal, not for the window to absorb.`);
  } else if (described.length) {
    choice = [...described].sort((a, b) => a.dropped! - b.dropped! || byP99(a, b))[0];
    parts.push(`No policy that survived was lossless; \`${choice.policy}\` lost the fewest items (${fmtInt(choice.dropped!)}).`);
  }
  return parts.length ? { topic: 'Which overflow policy', text: parts.join(' ') } : null;
}

export function alertParagraph(results: ResultEnvelope[]): WriteupParagraph | null {
  const parts: string[] = [];
  const poison = find(results, 'poison');
  const pv = arr(poison?.variants);
  const abort = pv.find((v) => v.strategy === 'abort-whole-batch');
  const split = pv.find((v) => v.strategy === 'split-and-retry');
  if (abort && isNum(abort.lagSlopePerSec) && isNum(abort.offeredPerSec) && abort.offeredPerSec > 0 && abort.lagSlopePerSec > 0.1 * abort.offeredPerSec) {
    const p = p99Of(abort.latencyMs);
    const slo = poison && isNum(poison.sloMs) ? poison.sloMs : undefined;
    const silent = isNum(p) && slo !== undefined && p <= slo;
    parts.push(
      `Alert first on consumer lag and its slope: in \`poison\`, abort-whole-batch's lag grew at ${fmtInt(abort.lagSlopePerSec)} items/s (${pct(abort.lagSlopePerSec, abort.offeredPerSec)} of the offered ${fmtInt(abort.offeredPerSec)}/s)` +
        (isNum(p) ? ` while the p99 of the items it did commit was ${fmtNum(p)} ms${silent ? ` — inside the ${fmtNum(slo!)} ms SLO, so a latency alert would have stayed silent while the partition stalled` : ''}` : '') +
        '.',
    );
    if (split && isNum(split.lagSlopePerSec)) parts.push(`With split-and-retry the slope was ${fmtNum(split.lagSlopePerSec)} items/s.`);
    parts.push('Latency is measured on items that commit; lag also counts the ones that do not.');
  }
  const batching = find(results, 'batching');
  const runs = arr(batching?.runs).filter((x) => isNum(x.producerBlockedMs) && isNum(p99Of(x.latencyMs)));
  if (batching && isNum(batching.sloMs) && runs.length) {
    const slo = batching.sloMs;
    const breached = runs.filter((x) => p99Of(x.latencyMs)! > slo);
    const blocked = runs.filter((x) => (x.producerBlockedMs as number) > 0);
    const same = breached.length > 0 && breached.length === blocked.length && breached.every((x) => blocked.includes(x));
    if (same) {
      const name = (x: Obj) => `${x.variant} at ${fmtNum(x.loadMultiple as number)}×C1`;
      const lead = parts.length ? 'Next, saturation' : 'Alert first on saturation';
      parts.push(
        `${lead} — producer block time and queue depth against its bound: in \`batching\`, the runs that breached the ${fmtNum(slo)} ms SLO (${listJoin(breached.map(name))}) are exactly the runs whose producer blocked (up to ${fmtInt(Math.max(...blocked.map((x) => x.producerBlockedMs as number)))} ms), and no run inside the SLO blocked at all. A full queue shows the moment it fills, while p99 moves only after enough items have waited through it.`,
      );
    }
  }
  return parts.length ? { topic: 'Which metric to alert on first', text: parts.join(' ') } : null;
}

export interface Headline {
  /** The figure, formatted: "48.9×", "19.4 ms". */
  value: string;
  /** What it is, in a few words. */
  label: string;
  /** Whether it meets its target, when it has one (colours the card). */
  good?: boolean;
}

/** A handful of headline figures for the top of the report, each only when measured. */
export function headlines(results: ResultEnvelope[]): Headline[] {
  const out: Headline[] = [];
  const b = find(results, 'batching');
  const runs = arr(b?.runs);
  const loads = runs.map((x) => x.loadMultiple).filter(isNum);
  if (b && loads.length) {
    const top = Math.max(...loads);
    const ub = runs.find((x) => x.variant === 'unbatched' && x.loadMultiple === top);
    const bb = runs.find((x) => x.variant === 'batched' && x.loadMultiple === top);
    if (ub && bb && isNum(ub.throughputPerSec) && isNum(bb.throughputPerSec) && ub.throughputPerSec > 0)
      out.push({ value: `${fmtNum(bb.throughputPerSec / ub.throughputPerSec)}×`, label: `throughput, batched vs unbatched at ${fmtNum(top)}×C1` });
    if (ub && bb && isNum(ub.fixedCostOpsPerItem) && isNum(bb.fixedCostOpsPerItem) && bb.fixedCostOpsPerItem > 0) {
      const kind = typeof bb.fixedCostKind === 'string' ? bb.fixedCostKind : 'fixed-cost op';
      out.push({ value: `${fmtNum(ub.fixedCostOpsPerItem / bb.fixedCostOpsPerItem)}×`, label: `fewer ${kind}s per item at ${fmtNum(top)}×C1` });
    }
    const p = p99Of(bb?.latencyMs);
    if (isNum(p))
      out.push({ value: `${fmtNum(p)} ms`, label: `batched p99 at ${fmtNum(top)}×C1${isNum(b.sloMs) ? ` (SLO ${fmtNum(b.sloMs)} ms)` : ''}`, good: isNum(b.sloMs) ? p <= b.sloMs : undefined });
  }
  const w = find(results, 'window');
  if (w && isObj(w.chosen) && isNum(w.chosen.maxItems) && isNum(w.chosen.maxWaitMs))
    out.push({ value: `${fmtInt(w.chosen.maxItems)} / ${fmtNum(w.chosen.maxWaitMs)} ms`, label: 'chosen window (maxItems / maxWaitMs)' });
  return out;
}

/** The write-up's paragraphs, in order; empty when no result carries the figures. */
export function writeup(results: ResultEnvelope[]): WriteupParagraph[] {
  return [
    amortizedParagraph(find(results, 'batching')),
    windowParagraph(find(results, 'window')),
    adaptiveParagraph(find(results, 'adaptive')),
    overflowParagraph(find(results, 'overflow')),
    alertParagraph(results),
  ].filter((p): p is WriteupParagraph => p !== null);
}

/** Markdown of the write-up, one paragraph per topic. */
export function writeupMarkdown(paragraphs: WriteupParagraph[]): string {
  return paragraphs.map((p) => `**${p.topic}.** ${p.text}`).join('\n\n');
}
