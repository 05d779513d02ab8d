/**
 * Chart rendering for the lab report: a Vega-Lite spec (data inlined) → SVG (vega, no
 * browser) → PNG (resvg). One theme for every chart, and one colour per variant name
 * across the whole report, so `batched` is the same blue in every figure.
 *
 * vega and resvg are loaded on first use: the CLI imports the report module at start-up
 * and most commands never draw (≈0.5 s and ≈140 MB for the first chart, per ECOSYSTEM.md).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChartSpec } from './types.js';

/** System font used by resvg here (Debian ships DejaVu); browsers fall back down the list. */
export const CHART_FONT = 'DejaVu Sans, Helvetica Neue, Helvetica, Arial, sans-serif';

/** Default plot size (px) when a spec says nothing: fits the report's 760 px column. */
export const CHART_WIDTH = 600;
export const CHART_HEIGHT = 300;

/** PNGs are drawn at 2× so they stay sharp on high-density screens. */
export const PNG_ZOOM = 2;

/** The colour of the SLO (and other limits) drawn as rules. */
export const SLO_COLOR = '#d62728';

/**
 * One colour per variant name, shared by every experiment. "Before"/contrast variants are
 * warm, the recommended ones cool; names not listed get a stable colour from their hash.
 */
const NAMED_COLORS: Record<string, string> = {
  // batching
  unbatched: '#e45756',
  batched: '#4c78a8',
  // overflow policies
  block: '#4c78a8',
  'drop-newest': '#f58518',
  'drop-oldest': '#eeca3b',
  spill: '#54a24b',
  unbounded: '#e45756',
  // poison strategies
  'split-and-retry': '#4c78a8',
  'abort-whole-batch': '#e45756',
  // window / adaptive
  low: '#72b7b2',
  peak: '#b279a2',
  static: '#9d755d',
  aimd: '#4c78a8',
  synthetic: '#79706e',
};

const FALLBACK = ['#4c78a8', '#f58518', '#54a24b', '#b279a2', '#72b7b2', '#ff9da6', '#9d755d', '#bab0ac', '#eeca3b', '#e45756'];

export function colorFor(name: string): string {
  const known = NAMED_COLORS[name];
  if (known) return known;
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return FALLBACK[h % FALLBACK.length];
}

/**
 * A Vega-Lite colour scale for these variant names in this order (use as
 * `encoding.color.scale`). Two names that share a colour keep it: charts rarely mix them.
 */
export function colorScale(names: readonly string[]): { domain: string[]; range: string[] } {
  const domain = [...new Set(names)];
  return { domain, range: domain.map(colorFor) };
}

/** The report's look: quiet grid, readable axis titles, legend on top, no view border. */
export const THEME: Record<string, unknown> = {
  font: CHART_FONT,
  background: '#ffffff',
  padding: { left: 8, right: 16, top: 8, bottom: 8 },
  view: { stroke: null, continuousWidth: CHART_WIDTH, continuousHeight: CHART_HEIGHT, discreteWidth: { step: 28 } },
  title: { fontSize: 14, fontWeight: 600, anchor: 'start', color: '#1f2328', offset: 12 },
  axis: {
    labelFontSize: 11,
    labelColor: '#57606a',
    titleFontSize: 12,
    titleFontWeight: 'normal',
    titleColor: '#24292f',
    titlePadding: 10,
    gridColor: '#eaeef2',
    domainColor: '#8c959f',
    tickColor: '#8c959f',
    labelOverlap: 'greedy',
  },
  axisY: { titleAngle: -90 },
  // Bucket labels (batch-size bounds, window names) read horizontally; overlapping ones are thinned.
  axisXDiscrete: { labelAngle: 0 },
  legend: {
    orient: 'top',
    direction: 'horizontal',
    labelFontSize: 12,
    titleFontSize: 12,
    titleFontWeight: 'normal',
    titleColor: '#57606a',
    labelColor: '#24292f',
    symbolStrokeWidth: 2.5,
    symbolSize: 120,
  },
  line: { strokeWidth: 2.2, point: false },
  point: { size: 55, filled: true, strokeWidth: 0, opacity: 1 },
  bar: { cornerRadiusEnd: 1 },
  rule: { strokeWidth: 1.5 },
  text: { fontSize: 11 },
  range: { category: FALLBACK },
};

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Deep merge where `over` wins; arrays are replaced, not merged. */
export function mergeDeep(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObject(v) && isObject(out[k]) ? mergeDeep(out[k] as Record<string, unknown>, v) : v;
  return out;
}

/** The spec as rendered: the author's config over the report theme. */
export function themed(spec: Record<string, unknown>): Record<string, unknown> {
  const config = isObject(spec.config) ? mergeDeep(THEME, spec.config) : THEME;
  // Single-view charts get the report's width even when their x is discrete (a bar per
  // bucket), so every figure lines up in the column; composed specs size themselves.
  const single = ('mark' in spec || 'layer' in spec) && !('width' in spec);
  return { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', ...(single ? { width: CHART_WIDTH } : {}), ...spec, config };
}

/** Vega-Lite spec → SVG text, without a browser. Throws on an invalid spec. */
export async function specToSvg(spec: Record<string, unknown>): Promise<string> {
  const vl = await import('vega-lite');
  const vega = await import('vega');
  const quiet = { level: () => quiet, error: () => quiet, warn: () => quiet, info: () => quiet, debug: () => quiet };
  const compiled = vl.compile(themed(spec) as never, { logger: quiet as never }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG text → PNG bytes at `zoom`×, text in the system's DejaVu Sans. */
export async function svgToPng(svg: string, zoom = PNG_ZOOM): Promise<Buffer> {
  const { Resvg } = await import('@resvg/resvg-js');
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: zoom },
    background: '#ffffff',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' },
    logLevel: 'off',
  });
  return r.render().asPng();
}

export interface RenderedChart {
  id: string;
  title: string;
  caption: string;
  /** Paths relative to the report directory, with forward slashes (usable in links). */
  svgFile: string;
  pngFile: string;
  /** Intrinsic size of the SVG (px). */
  width: number;
  height: number;
}

/**
 * Tick values for a log axis over [min, max]: 1-2-5 steps when the range spans at most
 * three decades, powers of ten beyond. Vega's own log ticks draw a line at every 1..9,
 * which buries the data under grid lines.
 */
export function logTicks(min: number, max: number): number[] {
  if (!(min > 0) || !(max > 0)) return [];
  const lo = Math.floor(Math.log10(Math.min(min, max)));
  const hi = Math.ceil(Math.log10(Math.max(min, max)));
  const steps = hi - lo <= 3 ? [1, 2, 5] : [1];
  const out: number[] = [];
  for (let e = lo; e <= hi; e++) for (const s of e === hi ? [1] : steps) out.push(Number((s * 10 ** e).toPrecision(12)));
  return out;
}

/** A log-scale domain [tick below min, tick above max] from `logTicks`, so the ends are labelled. */
export function logDomain(min: number, max: number): [number, number] {
  const ticks = logTicks(min, max);
  const below = ticks.filter((t) => t <= min);
  const above = ticks.filter((t) => t >= max);
  return [below.length ? below[below.length - 1] : min, above.length ? above[0] : max];
}

/** Scale and axis for a quantitative log channel over these values (non-positive values ignored). */
export function logChannel(values: number[], title: string, format = '~s'): Record<string, unknown> {
  const pos = values.filter((v) => v > 0 && Number.isFinite(v));
  if (pos.length === 0) return { type: 'quantitative', title, scale: { type: 'log' } };
  const domain = logDomain(Math.min(...pos), Math.max(...pos));
  const ticks = logTicks(domain[0], domain[1]).filter((t) => t >= domain[0] && t <= domain[1]);
  return { type: 'quantitative', title, scale: { type: 'log', domain, nice: false }, axis: { values: ticks, format } };
}

/** A chart id safe as a file stem: letters, digits, `-` and `_`. */
export function chartFileStem(id: string): string {
  return id.replace(/[^a-zA-Z0-9_-]+/g, '-').replace(/^-+|-+$/g, '') || 'chart';
}

/** Renders one chart to `DIR/charts/<id>.svg` and `.png`. */
export async function renderChart(chart: ChartSpec, outDir: string): Promise<RenderedChart> {
  const svg = await specToSvg(chart.spec);
  const png = await svgToPng(svg);
  const stem = chartFileStem(chart.id);
  const dir = join(outDir, 'charts');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${stem}.svg`), svg);
  await writeFile(join(dir, `${stem}.png`), png);
  const m = /<svg[^>]*\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"/.exec(svg);
  return {
    id: chart.id,
    title: chart.title,
    caption: chart.caption,
    svgFile: `charts/${stem}.svg`,
    pngFile: `charts/${stem}.png`,
    width: m ? Number(m[1]) : CHART_WIDTH,
    height: m ? Number(m[2]) : CHART_HEIGHT,
  };
}
