/**
 * A record's content-hash id is stored: in the file sink's id index, in PostgreSQL's id column,
 * in dead-letter entries. It must not change with how it is computed (`sha256Hex` takes
 * `crypto.hash` when Node has it, docs/bench.md case 5), or a re-sent record would be stored twice.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { contentHashId, sha256Hex } from '../../packages/sluice/src/codec/record-id.js';
import { recordId } from '../../packages/sluice/src/sinks/postgres.js';
import { envelope } from '../../packages/sluice/src/core/types.js';

test('sha256Hex is the SHA-256 digest in hex, and contentHashId its first 32 digits', () => {
  // A fixed vector: the id a stored record carries must stay this exact string.
  assert.equal(contentHashId(Buffer.from('{"msg":"hello"}')), createHash('sha256').update('{"msg":"hello"}').digest('hex').slice(0, 32));
  assert.equal(sha256Hex(Buffer.alloc(0)), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
      const want = createHash('sha256').update(bytes).digest('hex');
      assert.equal(sha256Hex(bytes), want);
      assert.equal(contentHashId(bytes), want.slice(0, 32));
      assert.match(contentHashId(bytes), /^[0-9a-f]{32}$/);
    }),
  );
});

test("PostgresSink's recordId without an envelope id is the document's full SHA-256 hex", () => {
  const raw = Buffer.from('{"a":1}');
  assert.equal(recordId(envelope(null, { raw, bytes: raw.length })), createHash('sha256').update(raw).digest('hex'));
  assert.equal(recordId(envelope(null, { raw, bytes: raw.length, id: 'k1' })), 'k1');
});
