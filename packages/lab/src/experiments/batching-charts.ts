/**
 * The `batching` experiment's charts, built from its result file alone: throughput and p99
 * against offered load for the unbatched and batched pipelines, and the fixed-cost
 * operations each item paid.
 */
import { colorScale, logChannel, SLO_COLOR } from '../charts.js';
import type { ChartSpec, ResultEnvelope } from '../types.js';
import type { BatchingRun } from './batching.js';

const VARIANTS = ['unbatched', 'batched'] as const;

interface Row {
  variant: string;
  load: string;
  offered: number;
  throughput: number;
  p99: number;
  opsPerItem: number;
}


const COLOR = {
  field: 'variant',
  type: 'nominal',
  title: null,
  scale: colorScale(VARIANTS),
  sort: [...VARIANTS],
} as const;

/** Lines with a point per measured load, one colour per variant. */
function seriesLayers(x: Record<string, unknown>, y: Record<string, unknown>): Record<string, unknown>[] {
  const encoding = { x, y, color: COLOR };
  return [
    { mark: { type: 'line' }, encoding },
    { mark: { type: 'point' }, encoding },
  ];
}

export function batchingCharts(r: ResultEnvelope): ChartSpec[] {
  const runs = (r.runs as BatchingRun[] | undefined) ?? [];
  if (runs.length === 0) return [];
  const cal = r.calibration as { fixedCostMs?: number; unbatchedCapacityPerSec?: number } | undefined;
  const c1 = cal?.unbatchedCapacityPerSec;
  const rows: Row[] = runs.map((x) => ({
    variant: x.variant,
    load: `${x.loadMultiple}×C1`,
    offered: x.offeredPerSec,
    throughput: x.throughputPerSec,
    p99: x.latencyMs.p99,
    opsPerItem: x.fixedCostOpsPerItem,
  }));
  const top = Math.max(...runs.map((x) => x.loadMultiple));
  const topOf = (v: string) => rows.find((x) => x.variant === v && x.load === `${top}×C1`);
  const ub = topOf('unbatched');
  const b = topOf('batched');
  const offered = rows.map((x) => x.offered);
  const lo = Math.min(...offered);
  const hi = Math.max(...offered);
  const kind = runs[0]?.fixedCostKind ?? 'fixed-cost';
  const X_OFFERED = { field: 'offered', ...logChannel(offered, 'offered load (items/s, log scale)') };
  const charts: ChartSpec[] = [];

  // 1. Throughput: the unbatched line flattens at C1, the batched one follows the diagonal.
  const tputLayers: Record<string, unknown>[] = [
    {
      data: { values: [{ offered: lo, throughput: lo }, { offered: hi, throughput: hi }] },
      mark: { type: 'line', color: '#afb8c1', strokeDash: [4, 4], strokeWidth: 1.2 },
      encoding: { x: X_OFFERED, y: { field: 'throughput', type: 'quantitative' } },
    },
    ...seriesLayers(X_OFFERED, { field: 'throughput', ...logChannel([...offered, ...rows.map((x) => x.throughput), c1 ?? hi], 'committed throughput (items/s, log scale)') }),
  ];
  if (c1 !== undefined) {
    tputLayers.push({
      data: { values: [{ throughput: c1, label: `C1 = ${c1.toLocaleString('en-US')}/s (1 ÷ fixed cost)` }] },
      mark: { type: 'rule', color: '#8c959f', strokeDash: [2, 3] },
      encoding: { y: { field: 'throughput', type: 'quantitative' } },
    });
    tputLayers.push({
      data: { values: [{ throughput: c1, offered: hi, label: `C1 = ${c1.toLocaleString('en-US')}/s (1 ÷ fixed cost)` }] },
      mark: { type: 'text', align: 'right', baseline: 'top', dy: 5, color: '#57606a' },
      encoding: { x: { field: 'offered', type: 'quantitative' }, y: { field: 'throughput', type: 'quantitative' }, text: { field: 'label' } },
    });
  }
  if (ub && b && ub.throughput > 0) {
    tputLayers.push({
      data: { values: [{ offered: b.offered, throughput: b.throughput, label: `×${(b.throughput / ub.throughput).toFixed(1)}` }] },
      mark: { type: 'text', align: 'right', dx: -10, dy: -10, fontWeight: 'bold', fontSize: 13, color: '#4c78a8' },
      encoding: { x: { field: 'offered', type: 'quantitative' }, y: { field: 'throughput', type: 'quantitative' }, text: { field: 'label' } },
    });
  }
  charts.push({
    id: 'batching-throughput',
    title: 'Throughput vs offered load',
    caption:
      c1 !== undefined
        ? `Unbatched throughput flattens at the fixed-cost ceiling C1 ≈ ${c1.toLocaleString('en-US')} items/s; batched throughput follows the offered load (dashed diagonal) to the top of the ladder.`
        : 'Committed throughput against offered load; the dashed diagonal is throughput = offered.',
    spec: { data: { values: rows }, layer: tputLayers },
  });

  // 2. p99 against the SLO: the SLO is a rule, so a breach is a point above the red line.
  const p99Layers: Record<string, unknown>[] = [
    ...seriesLayers(X_OFFERED, { field: 'p99', ...logChannel([...rows.map((x) => x.p99), r.sloMs], 'p99 end-to-end latency (ms, log scale)', '~g') }),
    {
      data: { values: [{ p99: r.sloMs, offered: lo, label: `SLO ${r.sloMs} ms` }] },
      layer: [
        { mark: { type: 'rule', color: SLO_COLOR, strokeDash: [6, 4] }, encoding: { y: { field: 'p99', type: 'quantitative' } } },
        {
          mark: { type: 'text', align: 'left', baseline: 'bottom', dy: -4, color: SLO_COLOR, fontWeight: 'bold' },
          encoding: { x: { field: 'offered', type: 'quantitative' }, y: { field: 'p99', type: 'quantitative' }, text: { field: 'label' } },
        },
      ],
    },
  ];
  charts.push({
    id: 'batching-p99',
    title: 'p99 latency vs offered load',
    caption: `p99 from each item's intended arrival time (no coordinated omission); the red rule is the ${r.sloMs} ms SLO — unbatched breaches it once load passes C1, batched stays under it.`,
    spec: { data: { values: rows }, layer: p99Layers },
  });

  // 3. Fixed-cost operations per item: 1 without a window, ≈ 1 / batch size with one.
  charts.push({
    id: 'batching-fixed-cost',
    title: `Fixed-cost operations (${kind}) per item vs offered load`,
    caption: `Unbatched pays one ${kind} per item whatever the load; batched pays one per batch, so the cost per item falls as load fills the window${b ? ` (${b.opsPerItem.toPrecision(2)} per item at ${top}×C1)` : ''}.`,
    spec: {
      data: { values: rows },
      layer: [
        ...seriesLayers(X_OFFERED, { field: 'opsPerItem', ...logChannel(rows.map((x) => x.opsPerItem), `${kind} operations per item (log scale)`, '~g') }),
        {
          transform: [{ filter: "datum.variant !== 'unbatched'" }],
          mark: { type: 'text', align: 'left', dx: 8, dy: -8, fontSize: 10, color: '#57606a' },
          encoding: { x: X_OFFERED, y: { field: 'opsPerItem', type: 'quantitative' }, text: { field: 'opsPerItem', type: 'quantitative', format: '.2~g' } },
        },
      ],
    },
  });
  return charts;
}
