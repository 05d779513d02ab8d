/**
 * Input with poison at a fixed rate, for the `poison` experiment and the tests: every
 * `every`-th record (at a fixed phase) is poison, of a kind chosen in rotation; the rest are
 * the lab's EventRecords. Poison kinds:
 *
 * | kind            | what                                   | file sink (schema)  | PostgreSQL        |
 * |-----------------|----------------------------------------|---------------------|-------------------|
 * | negative-amount | `amount: -12.5`                        | amount ≥ 0          | CHECK → 23514     |
 * | kind-too-long   | `kind` of 40 characters                | ≤ 32 characters     | varchar(32) → 22001 |
 * | amount-string   | `amount: "12,50 €"`                    | number              | numeric → 22P02   |
 * | null-source     | `source: null`                         | string              | NOT NULL → 23502  |
 * | jsontestsuite   | a `n_*` case of nst/JSONTestSuite      | not UTF-8 / not JSON | (file sink only) |
 *
 * The jsontestsuite cases are read as bytes (12 of them are not valid UTF-8) from
 * `<sharedDataDir>/poison/jsontestsuite/test_parsing/` when present. Good records may carry a
 * string from the Big List of Naughty Strings as their `note` (file sink): they must commit.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { RecordFactory } from './records.js';
import type { LogRecord } from 'sluice';

export type PoisonSinkKind = 'file' | 'postgres';

export const POISON_KINDS = ['negative-amount', 'kind-too-long', 'amount-string', 'null-source', 'jsontestsuite'] as const;
export type PoisonKind = (typeof POISON_KINDS)[number];

export interface PoisonInputOptions {
  /** One poison record per `every` records. @default 5_000 */
  every?: number;
  sink: PoisonSinkKind;
  sharedDataDir?: string | null;
  seed?: number;
  /** Id prefix (unique per run when several runs share a table). @default 'e' */
  idPrefix?: string;
}

export interface MadeRecord {
  rec: LogRecord;
  poison: PoisonKind | null;
}

export class PoisonInput {
  readonly every: number;
  readonly kinds: PoisonKind[];
  readonly jsonRejects: { name: string; bytes: Buffer }[] = [];
  readonly naughty: string[] = [];
  private readonly factory: RecordFactory;
  private readonly prefix: string;
  private poisonCount = 0;

  constructor(readonly opts: PoisonInputOptions) {
    this.every = opts.every ?? 5_000;
    this.prefix = opts.idPrefix ?? 'e';
    this.factory = new RecordFactory({ seed: opts.seed ?? 5, idPrefix: this.prefix });
    const dir = opts.sharedDataDir ? join(opts.sharedDataDir, 'poison/jsontestsuite/test_parsing') : null;
    if (opts.sink === 'file' && dir && existsSync(dir))
      for (const f of readdirSync(dir).filter((n) => n.startsWith('n_')).sort()) this.jsonRejects.push({ name: f, bytes: readFileSync(join(dir, f)) });
    const blns = opts.sharedDataDir ? join(opts.sharedDataDir, 'poison/blns/blns.json') : null;
    if (opts.sink === 'file' && blns && existsSync(blns))
      for (const s of JSON.parse(readFileSync(blns, 'utf8')) as string[]) if ([...s].length <= 200) this.naughty.push(s);
    this.kinds = POISON_KINDS.filter((k) => k !== 'jsontestsuite' || this.jsonRejects.length > 0);
  }

  isPoison(i: number): boolean {
    return i % this.every === Math.floor(this.every / 2);
  }

  /** Record number `i`, intended at epoch ms `ts`. */
  make(i: number, ts: number): MadeRecord {
    const id = this.prefix + i;
    if (this.isPoison(i)) {
      const kind = this.kinds[this.poisonCount % this.kinds.length];
      const n = this.poisonCount++;
      return { rec: { id, ts, data: this.poisonBytes(kind, id, ts, n) }, poison: kind };
    }
    const env = this.factory.make(i, ts - performance.timeOrigin);
    let data = env.raw!;
    if (this.naughty.length > 0 && i % 97 === 0) {
      const o = JSON.parse(data.toString()) as Record<string, unknown>;
      o.note = this.naughty[(i / 97) % this.naughty.length];
      data = Buffer.from(JSON.stringify(o));
    }
    return { rec: { id, ts, data }, poison: null };
  }

  private poisonBytes(kind: PoisonKind, id: string, ts: number, n: number): Buffer {
    const base = { id, ts, source: 'edge', kind: 'purchase', amount: 12.5, note: `poison ${kind}`, payload: { poison: true } };
    switch (kind) {
      case 'negative-amount':
        return Buffer.from(JSON.stringify({ ...base, amount: -12.5 }));
      case 'kind-too-long':
        return Buffer.from(JSON.stringify({ ...base, kind: 'k'.repeat(40) }));
      case 'amount-string':
        return Buffer.from(JSON.stringify({ ...base, amount: '12,50 €' }));
      case 'null-source':
        return Buffer.from(JSON.stringify({ ...base, source: null }));
      case 'jsontestsuite':
        return this.jsonRejects[n % this.jsonRejects.length].bytes;
    }
  }
}
