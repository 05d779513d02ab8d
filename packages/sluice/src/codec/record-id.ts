/**
 * Where a record's id — its idempotence key in the sinks and its key in reconciliation —
 * comes from (docs/records.md). In order:
 *
 *   1. `idField`, when configured and the record has it (a string, or a finite number
 *      written in decimal): the producer's own key. Two records with the same key are one
 *      record: the second is stored no more (re-sends and redeliveries are free).
 *   2. the source's message id: the `Sluice-Id` or `Nats-Msg-Id` header of a JetStream
 *      message, the id stored with an embedded-log record. A redelivery of the same message
 *      keeps its id; the same content published twice as two messages is two records.
 *   3. else a content hash of the bytes as received (SHA-256, 32 hex digits). A re-POST of
 *      the same line is de-duplicated, and so are two distinct events whose lines happen to be
 *      byte-identical (a log line without a timestamp, say): configure `idField` when that
 *      matters.
 */
import * as crypto from 'node:crypto';
import { invalidOption } from '../core/errors.js';

export interface RecordIdOptions {
  /**
   * Field holding the record's id: a name, or a dotted path into nested objects
   * (`event.id`). A record without it falls through to the next rule. @default none
   */
  idField?: string;
}

export type IdRule = 'field' | 'message' | 'hash';

/** Hex digits of SHA-256 kept: 128 bits, collision-free for any realistic volume. */
const HASH_HEX = 32;

/**
 * SHA-256 of `data` in hex, one shot. `crypto.hash` (Node ≥ 20.12) allocates no `Hash` object:
 * each of those is a native wrapper with a weak handle that every young-generation collection
 * must visit, so hashing every record with `createHash` made `sluice serve`'s scavenges 5–7 ms
 * apiece (docs/bench.md, case 5, "What lengthened the tail"). Older Node 20 falls back to it.
 */
export const sha256Hex: (data: Uint8Array) => string =
  typeof crypto.hash === 'function' ? (data) => crypto.hash('sha256', data, 'hex') : (data) => crypto.createHash('sha256').update(data).digest('hex');

export function contentHashId(raw: Uint8Array): string {
  return sha256Hex(raw).slice(0, HASH_HEX);
}

/** Splits `a.b.c` once; refuses an empty segment. */
export function parseFieldPath(flag: string, path: string): string[] {
  const parts = path.split('.');
  if (path.length === 0 || parts.some((p) => p.length === 0)) throw invalidOption(flag, path, 'a field name or dotted path such as event.id');
  return parts;
}

/** The value at `path` in a JSON value, or undefined. */
export function fieldAt(value: unknown, path: readonly string[]): unknown {
  let v = value;
  for (const k of path) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/** Applies the id rule; construct once per pipeline (the field path is parsed here). */
export class RecordIdRule {
  private readonly path: string[] | null;

  constructor(readonly options: RecordIdOptions = {}) {
    this.path = options.idField !== undefined ? parseFieldPath('idField', options.idField) : null;
  }

  /** Which rule decided, and the id. `messageId` is the source's, when it has one. */
  resolve(raw: Uint8Array, value: unknown, messageId?: string): { id: string; rule: IdRule } {
    if (this.path) {
      const v = fieldAt(value, this.path);
      if (typeof v === 'string' && v.length > 0) return { id: v, rule: 'field' };
      if (typeof v === 'number' && Number.isFinite(v)) return { id: String(v), rule: 'field' };
    }
    if (messageId !== undefined && messageId.length > 0) return { id: messageId, rule: 'message' };
    return { id: contentHashId(raw), rule: 'hash' };
  }

  id(raw: Uint8Array, value: unknown, messageId?: string): string {
    return this.resolve(raw, value, messageId).id;
  }
}
