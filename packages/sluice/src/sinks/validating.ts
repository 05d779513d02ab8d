/**
 * A sink decorator that checks each record before the sink sees it (`--schema FILE` under
 * `sluice run`): the first record that fails makes the write throw an item-level SinkError
 * naming its index, so split-and-retry isolates exactly that record into the DLQ while the
 * rest of the batch commits. The check runs again on each split half: it is cheap (a compiled
 * validator), and the sink stays one write per batch.
 */
import { SinkError } from '../core/errors.js';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import type { RecordCheck } from '../codec/json-schema.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The record's JSON value: `value` when the source decoded it, else its raw bytes parsed. */
function valueOf(env: Envelope<unknown>): unknown {
  if (env.value !== undefined && env.value !== null) return env.value;
  if (!env.raw) return env.value;
  return JSON.parse(utf8.decode(env.raw));
}

export class ValidatingSink<T = unknown> implements Sink<T> {
  readonly name: string;
  readonly fixedCostKind: FixedCostKind;

  constructor(
    readonly inner: Sink<T>,
    private readonly check: RecordCheck,
  ) {
    this.name = inner.name;
    this.fixedCostKind = inner.fixedCostKind;
  }

  async write(batch: readonly Envelope<T>[]): Promise<void> {
    for (let i = 0; i < batch.length; i++) {
      let problem: string | null;
      try {
        problem = this.check(valueOf(batch[i] as Envelope<unknown>));
      } catch (e) {
        problem = `not JSON: ${(e as Error).message}`;
      }
      if (problem !== null)
        throw new SinkError('item', `record ${i} of the batch failed validation: ${problem}`, { sinkCode: 'VALIDATION', details: { index: i } });
    }
    return this.inner.write(batch);
  }

  fixedCostOps(): number {
    return this.inner.fixedCostOps();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
