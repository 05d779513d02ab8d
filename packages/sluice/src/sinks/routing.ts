/**
 * Per-tenant sinks behind one pipeline (issue 26, docs/serve.md "Tokens and tenants"): a token
 * may name the table (PostgreSQL) or stream (JetStream) its tenant's records go to. The front
 * door stamps each record with that target (`attrs.sink`, see `SINK_TARGET_ATTR`); this sink
 * writes each batch's records to their target's sink, the rest to the default one.
 *
 * Why one pipeline and not one per tenant: the queue bound, the window, the ledger, the acks
 * (`--ack commit`) and the dead letters stay exactly those of a single-sink server; a tenant's
 * own table only changes where its rows land.
 *
 * A batch that mixes targets is written one target after the other, in one call: a failure
 * after an earlier target committed makes the whole batch fail, and its retry writes the
 * committed part again. That is safe only on idempotent sinks (PostgreSQL in every mode but
 * `append`, JetStream through its duplicate window), so `sluice serve` refuses per-token
 * targets with `--pg-mode append`. Each target is one fixed-cost operation per batch it
 * appears in.
 */
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';

/** The envelope attribute carrying a record's sink target (a table or stream name). */
export const SINK_TARGET_ATTR = 'sink';

export class TargetRoutingSink<T = unknown> implements Sink<T> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;

  constructor(
    private readonly base: Sink<T>,
    private readonly targets: ReadonlyMap<string, Sink<T>>,
  ) {
    this.name = base.name;
    this.fixedCostKind = base.fixedCostKind;
  }

  /** The sink a record with this target goes to (the default one for none). Throws for an unknown target. */
  sinkFor(target: string | undefined): Sink<T> {
    if (target === undefined) return this.base;
    const s = this.targets.get(target);
    if (!s) throw new Error(`no sink is open for target ${target}`);
    return s;
  }

  targetNames(): string[] {
    return [...this.targets.keys()];
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    let first: string | undefined;
    let mixed = false;
    for (let i = 0; i < batch.length; i++) {
      const t = batch[i].attrs?.[SINK_TARGET_ATTR];
      if (i === 0) first = t;
      else if (t !== first) {
        mixed = true;
        break;
      }
    }
    if (!mixed) return this.sinkFor(first).write(batch);
    const groups = new Map<string | undefined, Envelope<T>[]>();
    for (const e of batch) {
      const t = e.attrs?.[SINK_TARGET_ATTR];
      let g = groups.get(t);
      if (!g) groups.set(t, (g = []));
      g.push(e);
    }
    for (const [t, g] of groups) await this.sinkFor(t).write(g);
  }

  fixedCostOps(): number {
    let n = this.base.fixedCostOps();
    for (const s of this.targets.values()) n += s.fixedCostOps();
    return n;
  }

  async close(): Promise<void> {
    const results = await Promise.allSettled([this.base, ...this.targets.values()].map((s) => s.close()));
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
  }
}
