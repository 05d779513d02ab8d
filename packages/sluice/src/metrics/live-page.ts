/**
 * The live page's HTML: one document with its CSS and JS inline (no build step, nothing
 * fetched but the event stream at `/live/events`). Charts are drawn on canvases by the
 * ≈150 lines below; each canvas carries `data-points` (samples drawn) and the body
 * `data-samples` (samples received), which the Chromium test reads.
 */

const CSS = `
:root { --bg:#fafafa; --fg:#1d1d1f; --muted:#6b7280; --card:#fff; --line:#e5e7eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px; border-bottom: 1px solid var(--line); background: var(--card); }
header h1 { font-size: 18px; margin: 0; }
header .sub { color: var(--muted); }
#status { margin-left: auto; color: var(--muted); }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; padding: 12px 20px 0; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.tile .k { color: var(--muted); font-size: 12px; }
.tile .v { font-size: 20px; font-variant-numeric: tabular-nums; }
.up { color: #15803d; } .down { color: #b91c1c; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; padding: 12px 20px 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.card h2 { font-size: 13px; font-weight: 600; margin: 0 0 4px; }
.legend { font-size: 12px; color: var(--muted); min-height: 16px; }
.legend span { margin-right: 12px; white-space: nowrap; }
.legend i { display: inline-block; width: 10px; height: 3px; margin-right: 4px; vertical-align: middle; }
canvas { width: 100%; height: 180px; display: block; }
.hidden { display: none; }
`;

const JS = `
'use strict';
const COLORS = { in: '#2563eb', committed: '#16a34a', dropped: '#dc2626', dead: '#ea580c', p50: '#7c3aed', p99: '#db2777', slo: '#111827', queue: '#0891b2', inflight: '#64748b', batch: '#ca8a04', items: '#0d9488', wait: '#9333ea', lag: '#be123c' };
const CHARTS = {
  rates: { title: 'Items per second', series: [['in', 'in', s => s.inPerSec], ['committed', 'committed', s => s.committedPerSec], ['dropped', 'dropped', s => s.droppedPerSec], ['dead', 'dead-lettered', s => s.deadLetteredPerSec]] },
  latency: { title: 'End-to-end latency of the items committed each second (ms)', series: [['p50', 'p50', s => s.p50Ms], ['p99', 'p99', s => s.p99Ms]], slo: true },
  queue: { title: 'Queue depth (items)', series: [['queue', 'queued', s => s.queueItems], ['inflight', 'in flight (queued + spilled + being written)', s => s.inFlight]] },
  batch: { title: 'Batch size (mean items per batch cut that second)', series: [['batch', 'items / batch', s => s.batchMean]] },
  windowItems: { title: 'Window: maxItems', series: [['items', 'maxItems', s => s.window.maxItems]] },
  windowWait: { title: 'Window: maxWaitMs (ms)', series: [['wait', 'maxWaitMs', s => s.window.maxWaitMs]] },
  lag: { title: 'Source lag (records not yet acknowledged)', series: [['lag', 'lag', s => s.lag]], runOnly: true },
};
let hello = null;
let samples = [];
let received = 0;
const $ = id => document.getElementById(id);

function fmt(v, d) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + 'M';
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  return Number(v).toFixed(d === undefined ? (Number.isInteger(v) ? 0 : 1) : d);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function setup() {
  const grid = $('charts');
  for (const [id, c] of Object.entries(CHARTS)) {
    const card = document.createElement('div');
    card.className = 'card' + (c.runOnly && hello.kind !== 'run' ? ' hidden' : '');
    card.innerHTML = '<h2></h2><div class="legend"></div><canvas></canvas>';
    card.querySelector('h2').textContent = c.title;
    const legend = card.querySelector('.legend');
    for (const [key, label] of c.series) legend.insertAdjacentHTML('beforeend', '<span><i style="background:' + COLORS[key] + '"></i>' + label + '</span>');
    if (c.slo) legend.insertAdjacentHTML('beforeend', '<span><i style="background:' + COLORS.slo + '"></i>SLO ' + hello.sloMs + ' ms' + (hello.sloSource === 'lab-default' ? ' (lab default: none configured)' : '') + '</span>');
    const cv = card.querySelector('canvas');
    cv.id = 'chart-' + id;
    cv.dataset.points = '0';
    grid.appendChild(card);
    c.canvas = cv;
  }
}

function draw(c) {
  const cv = c.canvas;
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth, h = cv.clientHeight;
  if (cv.width !== Math.round(w * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
  const g = cv.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const L = 52, R = 8, T = 6, B = 20;
  const n = hello.historyPoints;
  const pts = samples.slice(-n);
  let max = 0;
  for (const s of pts) for (const [, , f] of c.series) { const v = f(s); if (v !== null && v > max) max = v; }
  if (c.slo) max = Math.max(max, hello.sloMs * 1.2);
  max = niceMax(max);
  const x = i => L + (w - L - R) * (i + (n - pts.length)) / Math.max(1, n - 1);
  const y = v => T + (h - T - B) * (1 - v / max);
  g.font = '11px system-ui, sans-serif';
  g.strokeStyle = '#e5e7eb'; g.fillStyle = '#6b7280'; g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = max * k / 4, yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(L, yy); g.lineTo(w - R, yy); g.stroke();
    g.textAlign = 'right'; g.textBaseline = 'middle'; g.fillText(fmt(v), L - 6, yy);
  }
  g.textAlign = 'center'; g.textBaseline = 'top';
  const span = Math.round(n * hello.intervalMs / 1000);
  for (let k = 0; k <= 5; k++) { const sec = Math.round(span * k / 5); g.textAlign = k === 0 ? 'right' : 'center'; g.fillText(sec === 0 ? 'now' : '−' + sec + ' s', w - R - (w - L - R) * k / 5, h - B + 4); }
  if (c.slo) {
    g.save(); g.setLineDash([6, 4]); g.strokeStyle = COLORS.slo; g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(L, y(hello.sloMs)); g.lineTo(w - R, y(hello.sloMs)); g.stroke(); g.restore();
  }
  let drawn = 0;
  for (const [key, , f] of c.series) {
    g.strokeStyle = COLORS[key]; g.lineWidth = 1.8; g.beginPath();
    let pen = false;
    pts.forEach((s, i) => {
      const v = f(s);
      if (v === null || v === undefined) { pen = false; return; }
      drawn++;
      if (pen) g.lineTo(x(i), y(v)); else g.moveTo(x(i), y(v));
      pen = true;
    });
    g.stroke();
  }
  cv.dataset.points = String(drawn);
  const last = pts[pts.length - 1];
  if (last) cv.dataset.last = JSON.stringify(c.series.map(([, , f]) => f(last)));
}

function tiles(s) {
  $('t-in').textContent = fmt(s.inPerSec);
  $('t-committed').textContent = fmt(s.committedPerSec);
  $('t-dropped').textContent = fmt(s.totals.dropped, 0);
  $('t-dead').textContent = fmt(s.totals.deadLettered, 0);
  $('t-queue').textContent = fmt(s.queueItems, 0);
  $('t-batch').textContent = fmt(s.batchMean);
  const p99 = $('t-p99');
  p99.textContent = s.p99Ms === null ? '–' : fmt(s.p99Ms, 2) + ' / ' + hello.sloMs + ' ms';
  p99.className = 'v ' + (s.p99Ms !== null && s.p99Ms > hello.sloMs ? 'down' : '');
  $('t-window').textContent = s.window.maxItems + ' / ' + fmt(s.window.maxWaitMs, 2) + ' ms' + (s.controller ? ' (' + s.controller.kind + ')' : '');
  const sink = $('t-sink');
  sink.textContent = s.sinkUp ? 'up' : 'DOWN';
  sink.className = 'v ' + (s.sinkUp ? 'up' : 'down');
  const led = $('t-ledger');
  led.textContent = s.balanced ? 'balanced' : 'UNBALANCED';
  led.className = 'v ' + (s.balanced ? 'up' : 'down');
  $('t-lag').textContent = fmt(s.lag, 0);
}

function render() {
  for (const c of Object.values(CHARTS)) if (!(c.runOnly && hello.kind !== 'run')) draw(c);
  if (samples.length) tiles(samples[samples.length - 1]);
  document.body.dataset.samples = String(received);
}

function connect() {
  const es = new EventSource('live/events');
  es.addEventListener('hello', ev => {
    const first = hello === null;
    hello = JSON.parse(ev.data);
    samples = hello.history.slice();
    if (first) {
      $('name').textContent = hello.name;
      $('kind').textContent = 'sluice ' + hello.kind;
      document.title = 'sluice ' + hello.kind + ' — ' + hello.name;
      if (hello.kind !== 'run') $('tile-lag').classList.add('hidden');
      setup();
    }
    render();
  });
  es.onmessage = ev => {
    samples.push(JSON.parse(ev.data));
    received++;
    if (samples.length > hello.historyPoints) samples.splice(0, samples.length - hello.historyPoints);
    $('status').textContent = 'live · updated ' + new Date().toLocaleTimeString();
    render();
  };
  es.onerror = () => { $('status').textContent = 'disconnected: retrying'; };
}
window.addEventListener('resize', () => hello && render());
connect();
`;

const TILES: [string, string][] = [
  ['t-in', 'in (items/s)'],
  ['t-committed', 'committed (items/s)'],
  ['t-dropped', 'dropped (total)'],
  ['t-dead', 'dead-lettered (total)'],
  ['t-queue', 'queue (items)'],
  ['t-batch', 'batch (items)'],
  ['t-p99', 'p99 / SLO'],
  ['t-window', 'window'],
  ['t-sink', 'sink'],
  ['t-ledger', 'ledger'],
  ['t-lag', 'source lag'],
];

export function livePageHtml(kind: 'serve' | 'run'): string {
  const tiles = TILES.map(([id, k]) => `<div class="tile"${id === 't-lag' ? ' id="tile-lag"' : ''}><div class="k">${k}</div><div class="v" id="${id}">–</div></div>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sluice ${kind}</title><style>${CSS}</style></head>
<body data-samples="0">
<header><h1 id="kind">sluice ${kind}</h1><span class="sub" id="name"></span><span id="status">connecting…</span></header>
<div class="tiles">${tiles}</div>
<div class="grid" id="charts"></div>
<script>${JS}</script>
</body></html>
`;
}
