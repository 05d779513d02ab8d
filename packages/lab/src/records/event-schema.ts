/**
 * The schema the file sink validates EventRecords against (the poison experiment relies on
 * it): bytes → fatal UTF-8 decode → JSON.parse → shape. Mirrors the PostgreSQL table's
 * constraints (kind ≤ 32 characters, amount ≥ 0 with two decimals, NOT NULLs) so the same
 * record is poison for both sinks. Throws an Error whose message names the first problem.
 */
import type { Envelope } from 'sluice';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes per record, at most: a record larger than this is poison, not a reason to parse. */
export const MAX_RECORD_BYTES = 64 * 1024;

export function parseEventRecordBytes(raw: Uint8Array): Record<string, unknown> {
  if (raw.length > MAX_RECORD_BYTES) throw new Error(`record of ${raw.length} bytes exceeds ${MAX_RECORD_BYTES}`);
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw new Error('record is not valid UTF-8');
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`record is not JSON: ${(e as Error).message}`);
  }
  checkEventRecord(v);
  return v as Record<string, unknown>;
}

export function checkEventRecord(v: unknown): void {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('record is not a JSON object');
  const o = v as Record<string, unknown>;
  if (typeof o.id !== 'string' || o.id.length === 0) throw new Error('id: expected a non-empty string');
  if (typeof o.ts !== 'number' || !Number.isFinite(o.ts)) throw new Error('ts: expected a number');
  if (typeof o.source !== 'string') throw new Error('source: expected a string');
  if (typeof o.kind !== 'string' || [...o.kind].length > 32) throw new Error('kind: expected a string of at most 32 characters');
  if (typeof o.amount !== 'number' || !(o.amount >= 0) || o.amount >= 1e10) throw new Error('amount: expected a number in [0, 1e10)');
  if (o.note !== undefined && o.note !== null && (typeof o.note !== 'string' || [...o.note].length > 200)) throw new Error('note: expected a string of at most 200 characters');
  if (o.payload === null || typeof o.payload !== 'object') throw new Error('payload: expected an object');
}

/** FileSink `validate` option: the envelope's raw bytes (or its value's JSON) against the schema. */
export function validateEventEnvelope(env: Envelope<unknown>): void {
  if (env.raw) parseEventRecordBytes(env.raw);
  else checkEventRecord(env.value);
}

/**
 * The same rules as a JSON Schema, for the product's `--schema FILE` (the lab passes its record
 * shape in as any user would). `maxLength` counts code points in Ajv, as `checkEventRecord` does.
 */
export const EVENT_RECORD_JSON_SCHEMA = Object.freeze({
  type: 'object',
  required: ['id', 'ts', 'source', 'kind', 'amount', 'payload'],
  properties: {
    id: { type: 'string', minLength: 1 },
    ts: { type: 'number' },
    source: { type: 'string' },
    kind: { type: 'string', maxLength: 32 },
    amount: { type: 'number', minimum: 0, exclusiveMaximum: 1e10 },
    note: { type: ['string', 'null'], maxLength: 200 },
    payload: { type: 'object' },
  },
});
