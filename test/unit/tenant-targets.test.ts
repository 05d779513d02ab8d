/**
 * A token's own table or stream (issue 26, docs/serve.md "Tokens and tenants"): the tokens
 * file's `table`/`stream` fields are checked with one-line errors, and TargetRoutingSink puts
 * each record in its target's sink under split-and-retry — a mixed batch whose later target
 * fails is rewritten whole and absorbed by the idempotent sinks; a record one tenant's sink
 * refuses is dead-lettered alone, naming that target.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hashToken, parseTokensFile } from '../../packages/sluice/src/sources/auth.js';
import { SINK_TARGET_ATTR, TargetRoutingSink } from '../../packages/sluice/src/sinks/routing.js';
import { splitAndRetry } from '../../packages/sluice/src/core/reliability.js';
import { envelope, type Envelope } from '../../packages/sluice/src/core/types.js';
import { FlakySink, IdempotentMemorySink, PoisonedSink } from '../../packages/sluice/src/sinks/doubles.js';
import { deadLetterWriter, type DeadLetterEntry, type DeadLetterStore } from '../../packages/sluice/src/dlq/store.js';

const entry = (extra: Record<string, unknown>, name = 'team-a') => ({ name, hash: hashToken(`token-of-${name}-0123456789`), routes: ['ingest'], ...extra });
const file = (...tokens: Record<string, unknown>[]) => JSON.stringify({ tokens });

test('tokens file: a table or stream per token is read; a bad one is one line naming the field', () => {
  const ok = parseTokensFile(file(entry({ table: 'team_a_logs' }), entry({ stream: 'TEAM-B_1' }, 'team-b'), entry({}, 'team-c')), 't.json');
  assert.deepEqual(ok.map((t) => [t.name, t.table, t.stream]), [['team-a', 'team_a_logs', undefined], ['team-b', undefined, 'TEAM-B_1'], ['team-c', undefined, undefined]]);
  const refused: [string, RegExp][] = [
    [file(entry({ table: 'team-a logs' })), /t\.json: tokens\[0\]\.table="team-a logs": expected a table name/],
    [file(entry({ table: '1st' })), /tokens\[0\]\.table="1st"/],
    [file(entry({ table: 'x'.repeat(64) })), /tokens\[0\]\.table=.*at most 63/],
    [file(entry({ table: 42 })), /tokens\[0\]\.table=42/],
    [file(entry({ stream: 'a.b' })), /tokens\[0\]\.stream="a\.b": expected a stream name/],
    [file(entry({ table: 't', stream: 'S' })), /tokens\[0\]\.stream="S": expected absent when table is given/],
    [file(entry({ table: 't1' }), entry({ table: 't2' })), /tokens\[1\]\.table="t2": expected the same table\/stream as the other tokens of tenant "team-a"/],
    [file(entry({ table: 't1' }), entry({})), /missing option t\.json: tokens\[1\]\.table: expected the same table\/stream as the other tokens of tenant "team-a"/],
    [file(entry({}), entry({ stream: 'S' })), /tokens\[1\]\.stream="S": expected the same table\/stream/],
  ];
  for (const [text, re] of refused) {
    assert.throws(
      () => parseTokensFile(text, 't.json'),
      (e: Error) => {
        assert.match(e.message, re);
        assert.equal(e.message.split('\n').length, 1, e.message);
        return true;
      },
    );
  }
});

class MemoryStore implements DeadLetterStore {
  readonly describe = 'memory';
  readonly entries: DeadLetterEntry[] = [];
  async append(e: readonly DeadLetterEntry[]) {
    this.entries.push(...e);
  }
  async list() {
    return [...this.entries];
  }
  async count() {
    return this.entries.length;
  }
  async close() {}
}

const rec = (id: string, target?: string): Envelope<unknown> =>
  envelope({ id }, { bytes: 10, intendedAtMs: 0, id, ...(target !== undefined ? { attrs: { [SINK_TARGET_ATTR]: target } } : {}) });

test('routing sink: each record lands in its target’s sink only; a later target failing rewrites the batch, absorbed by the idempotent sinks', async () => {
  const base = new IdempotentMemorySink<unknown>();
  const a = new IdempotentMemorySink<unknown>();
  const b = new FlakySink<unknown>(new IdempotentMemorySink<unknown>(), 1);
  const sink = new TargetRoutingSink<unknown>(base, new Map<string, typeof base | typeof b>([['a', a], ['b', b]]));
  const store = new MemoryStore();
  const h = splitAndRetry(sink, { dlq: deadLetterWriter(store, { pipeline: 't', sink: sink.name, source: 'test' }), retry: { baseMs: 0, maxMs: 0, jitter: 0 } });
  // Interleaved tenants in one batch (group commit), the failing target last.
  const batch = [rec('p1'), rec('a1', 'a'), rec('p2'), rec('a2', 'a'), rec('b1', 'b'), rec('b2', 'b')];
  const out = await h.handle(batch);
  assert.equal(out.committed.length, 6);
  assert.equal(out.deadLettered.length + out.dropped.length, 0);
  assert.deepEqual(base.ids().sort(), ['p1', 'p2']);
  assert.deepEqual(a.ids().sort(), ['a1', 'a2']);
  assert.deepEqual((b.inner as IdempotentMemorySink<unknown>).ids().sort(), ['b1', 'b2']);
  // The first try committed base and a before b failed: the retry wrote them again, absorbed.
  assert.equal(base.duplicatesAbsorbed + a.duplicatesAbsorbed, 4);
  assert.equal(store.entries.length, 0);
  assert.throws(() => sink.sinkFor('nope'), /no sink is open for target nope/);
});

test('routing sink: a record only one tenant’s sink refuses is dead-lettered alone, its entry naming the target', async () => {
  const base = new IdempotentMemorySink<unknown>();
  const a = new PoisonedSink<unknown>(new Set(['x']));
  const sink = new TargetRoutingSink<unknown>(base, new Map([['team_a_logs', a]]));
  const store = new MemoryStore();
  const h = splitAndRetry(sink, { dlq: deadLetterWriter(store, { pipeline: 't', sink: 'postgres', source: 'test' }), retry: { baseMs: 0, maxMs: 0, jitter: 0 } });
  // The same id from the default tenant is fine in its own table.
  const out = await h.handle([rec('x'), rec('a1', 'team_a_logs'), rec('x', 'team_a_logs'), rec('a2', 'team_a_logs')]);
  assert.equal(out.committed.length, 3);
  assert.deepEqual(out.deadLettered.map((e) => e.id), ['x']);
  assert.deepEqual(base.ids(), ['x']);
  assert.deepEqual(a.ids().sort(), ['a1', 'a2']);
  assert.deepEqual(store.entries.map((e) => [e.id, e.sink]), [['x', 'postgres:team_a_logs']]);
});
