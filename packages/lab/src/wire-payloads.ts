/**
 * Record payloads for the wire experiments: real telemetry from ../shared/data when it is
 * present (Zeek dns and ssl NDJSON, Apache access-log lines), the synthetic RecordFactory
 * otherwise. Every dataset is a list of serialized NDJSON lines (no newline); items cycle
 * through it, so record `i` is the same bytes in every variant of a run.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { envelope, type Envelope } from 'sluice';
import { RecordFactory } from './records/records.js';

export interface PayloadSet {
  /** `zeek-dns`, `zeek-ssl`, `apache-access`, or `synthetic`. */
  name: string;
  /** Where the bytes came from: the shared file, or `synthetic (RecordFactory)`. */
  payloadSource: string;
  lines: Buffer[];
  meanBytes: number;
}

function firstLines(text: string, max: number): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  while (out.length < max && start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, end).trim();
    if (line.length > 0) out.push(Buffer.from(line));
    start = end + 1;
  }
  return out;
}

function finish(name: string, payloadSource: string, lines: Buffer[]): PayloadSet {
  return { name, payloadSource, lines, meanBytes: lines.reduce((s, b) => s + b.length, 0) / Math.max(1, lines.length) };
}

/**
 * The real datasets found under `sharedDataDir` (up to `maxLines` records each), or the
 * synthetic set when none is there. Apache lines are not JSON: each becomes
 * `{"message":"<line>"}`, the way log shippers send them.
 */
export function loadWirePayloads(sharedDataDir: string | null, maxLines: number, forceSynthetic = false): PayloadSet[] {
  const sets: PayloadSet[] = [];
  if (sharedDataDir && !forceSynthetic) {
    for (const kind of ['dns', 'ssl'] as const) {
      const rel = `payloads/zeek-wrccdc/${kind}.json.gz`;
      const p = join(sharedDataDir, rel);
      if (existsSync(p)) sets.push(finish(`zeek-${kind}`, `shared/data/${rel}`, firstLines(gunzipSync(readFileSync(p)).toString('utf8'), maxLines)));
    }
    const rel = 'payloads/apache-access/apache_logs';
    const p = join(sharedDataDir, rel);
    if (existsSync(p))
      sets.push(
        finish(
          'apache-access',
          `shared/data/${rel} (each line as {"message": line})`,
          firstLines(readFileSync(p, 'utf8'), maxLines).map((l) => Buffer.from(JSON.stringify({ message: l.toString('utf8') }))),
        ),
      );
  }
  if (sets.length === 0) {
    const f = new RecordFactory({ seed: 21 });
    const lines = Array.from({ length: Math.min(maxLines, 4096) }, (_, i) => f.make(i, 0).raw!);
    sets.push(finish('synthetic', 'synthetic (RecordFactory, ~400 B JSON)', lines));
  }
  return sets;
}

/** Item `i` of a payload set, stamped with its intended arrival time. */
export function payloadItem(set: PayloadSet, i: number, intendedAtMs: number): Envelope<string> {
  const raw = set.lines[i % set.lines.length];
  return envelope<string>('', { bytes: raw.length, intendedAtMs, raw, id: `${set.name}-${i}` });
}
