import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ingest } from '../../packages/sluice/src/run/ingest.js';
import { MemorySink } from '../../packages/sluice/src/sinks/memory.js';
import { RecordIdRule } from '../../packages/sluice/src/codec/record-id.js';
import { envelope } from '../../packages/sluice/src/core/types.js';
import type { OffsetSource, PutTarget, SourceStats } from '../../packages/sluice/src/sources/embedded-log.js';

/** A source that offers three records and reports two redeliveries it absorbed itself. */
function scriptedSource(): OffsetSource<unknown> {
  const st: SourceStats = { delivered: 0, acked: 0, refused: 0 };
  return {
    name: 'scripted',
    async run(target: PutTarget<unknown>) {
      for (const n of [1, 2, 3]) {
        st.delivered++;
        await target.put(envelope({ n }, { raw: Buffer.from(JSON.stringify({ n })), id: `m${n}` }));
      }
      target.noteRedelivered?.(2);
    },
    stop() {},
    observer: () => ({ onCommitted: (b) => { st.acked += b.length; } }),
    lag: async () => st.delivered - st.acked,
    flushAcks: async () => {},
    stats: () => ({ ...st }),
    close: async () => {},
  };
}

for (const withRule of [false, true])
  test(`a redelivery the source absorbed reaches the ledger (${withRule ? 'with' : 'without'} an id rule)`, async () => {
    const sink = new MemorySink<unknown>();
    const ingest = new Ingest({
      source: scriptedSource(),
      sink,
      window: { maxItems: 10, maxWaitMs: 5 },
      ...(withRule ? { idRule: new RecordIdRule({ idField: 'n' }) } : {}),
    });
    await ingest.reading;
    const ledger = await ingest.stop();
    assert.equal(ledger.redelivered, 2);
    assert.equal(ledger.accepted, 3);
    assert.equal(ledger.accepted, ledger.committed + ledger.dropped + ledger.deadLettered + ledger.inFlight);
    if (withRule) assert.deepEqual(sink.all().map((e) => e.id).sort(), ['1', '2', '3']);
  });
