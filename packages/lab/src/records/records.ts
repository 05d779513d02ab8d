/**
 * The lab's synthetic event record: a few hundred bytes of JSON shaped like web/telemetry
 * traffic (when the real telemetry in ../shared/data is present, experiments may use it
 * instead). Records are built from a pool of pre-serialized payloads so that making an
 * item costs a string concatenation, not a JSON.stringify.
 */
import { epochMsOf } from 'sluice';
import { seededRng, type Rng } from 'sluice';
import { envelope, type Envelope } from 'sluice';

export interface EventRecord {
  id: string;
  /** Epoch milliseconds of the intended arrival. */
  ts: number;
  source: string;
  kind: string;
  amount: number;
  note: string;
  payload: Record<string, unknown>;
}

const KINDS = ['page_view', 'api_call', 'login', 'purchase', 'search', 'logout'];
const PATHS = ['/', '/api/v1/orders', '/api/v1/items?page=2', '/search?q=shoes', '/login', '/checkout', '/static/app.js'];
const AGENTS = [
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
  'curl/8.5.0',
  'Go-http-client/2.0',
];

interface PoolEntry {
  source: string;
  kind: string;
  amount: number;
  note: string;
  payload: Record<string, unknown>;
  /** JSON of every field after id and ts, without the closing brace. */
  tail: string;
}

export class RecordFactory {
  private readonly pool: PoolEntry[];
  private readonly prefix: string;

  constructor(opts: { seed?: number; poolSize?: number; idPrefix?: string } = {}) {
    const rng = seededRng(opts.seed ?? 42);
    this.prefix = opts.idPrefix ?? 'e';
    this.pool = Array.from({ length: opts.poolSize ?? 1024 }, () => makeEntry(rng));
  }

  /** Record number `i`, intended to arrive at monotonic time `intendedAtMs`. */
  make(i: number, intendedAtMs: number): Envelope<EventRecord> {
    const p = this.pool[i % this.pool.length];
    const id = this.prefix + i;
    const ts = Math.round(epochMsOf(intendedAtMs));
    const raw = Buffer.from(`{"id":"${id}","ts":${ts},${p.tail}}`);
    const value: EventRecord = { id, ts, source: p.source, kind: p.kind, amount: p.amount, note: p.note, payload: p.payload };
    return envelope(value, { bytes: raw.length, intendedAtMs, id, raw });
  }

  /** Mean serialized size of a record, in bytes. */
  meanBytes(): number {
    let s = 0;
    for (let i = 0; i < this.pool.length; i++) s += this.make(i, 0).bytes;
    return s / this.pool.length;
  }
}

function makeEntry(rng: Rng): PoolEntry {
  const pick = <T>(xs: T[]) => xs[Math.floor(rng() * xs.length)];
  const octet = () => Math.floor(rng() * 256);
  const payload = {
    host: `web-${Math.floor(rng() * 40)}.eu-west-1.internal`,
    client_ip: `10.${octet()}.${octet()}.${octet()}`,
    method: rng() < 0.8 ? 'GET' : 'POST',
    path: pick(PATHS),
    status: rng() < 0.95 ? 200 : pick([301, 404, 500, 503]),
    bytes: Math.floor(rng() * 50_000),
    duration_ms: Math.round(rng() * 250 * 100) / 100,
    user_agent: pick(AGENTS),
  };
  const source = pick(['edge', 'api', 'worker']);
  const kind = pick(KINDS);
  const amount = Math.round(rng() * 10_000) / 100;
  const note = rng() < 0.5 ? '' : `session ${Math.floor(rng() * 1e9).toString(36)}`;
  const tail = `"source":${JSON.stringify(source)},"kind":${JSON.stringify(kind)},"amount":${amount},"note":${JSON.stringify(note)},"payload":${JSON.stringify(payload)}`;
  return { source, kind, amount, note, payload, tail };
}
