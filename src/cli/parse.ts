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
