/** Flag parsing helpers: one clear error naming the flag and what would be valid. */
import { invalidOption } from '../core/errors.js';

export function parsePositive(flag: string, v: unknown): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n <= 0) throw invalidOption(flag, v, 'a number > 0');
  return n;
}

export function parseNonNegative(flag: string, v: unknown): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < 0) throw invalidOption(flag, v, 'a number ≥ 0');
  return n;
}

export function parseIntAtLeast(flag: string, v: unknown, min: number): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < min) throw invalidOption(flag, v, `an integer ≥ ${min}`);
  return n;
}

/**
 * `--columns level=level,ts=time` (or a JSON object) → `{ level: 'level', ts: 'time' }`:
 * PostgreSQL columns filled from record fields (dotted paths).
 */
export function parseColumns(flag: string, v: string | undefined): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  const valid = 'column=field pairs, comma-separated (e.g. level=level,ts=time), or a JSON object';
  if (v.trim().startsWith('{')) {
    let o: unknown;
    try {
      o = JSON.parse(v);
    } catch {
      throw invalidOption(flag, v, valid);
    }
    if (o === null || typeof o !== 'object' || Array.isArray(o) || Object.values(o).some((x) => typeof x !== 'string' || x.length === 0))
      throw invalidOption(flag, v, valid);
    return o as Record<string, string>;
  }
  const out: Record<string, string> = {};
  for (const pair of v.split(',')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^=\s]+)\s*$/.exec(pair);
    if (!m) throw invalidOption(flag, v, valid);
    out[m[1]] = m[2];
  }
  return out;
}
