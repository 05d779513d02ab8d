import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Type } from '@sinclair/typebox';
import { ANY_JSON_SCHEMA, ItemValidator, jsonDepthExceeds, openingBracketsAtMost } from '../../packages/sluice/src/codec/validate.js';
import { compileJsonSchema } from '../../packages/sluice/src/codec/json-schema.js';
import { NdjsonFramer } from '../../packages/sluice/src/codec/ndjson.js';
import { ErrorCode, SluiceError } from '../../packages/sluice/src/core/errors.js';

const SHARED = process.env.SLUICE_SHARED_DATA ?? resolve(process.cwd(), '../shared/data');
const SUITE = join(SHARED, 'poison/jsontestsuite/test_parsing');
const BLNS = join(SHARED, 'poison/blns/blns.json');

test('JSONTestSuite: every n_* rejected, every y_* accepted (raw bytes, fatal UTF-8)', (t) => {
  if (!existsSync(SUITE)) return t.skip(`${SUITE} not present`);
  const v = new ItemValidator({ schema: ANY_JSON_SCHEMA, maxItemBytes: 16 * 2 ** 20 });
  const files = readdirSync(SUITE);
  const n = files.filter((f) => f.startsWith('n_'));
  const y = files.filter((f) => f.startsWith('y_'));
  assert.ok(n.length >= 180 && y.length >= 90, `suite incomplete: ${n.length} n_, ${y.length} y_`);
  const wronglyAccepted = n.filter((f) => v.validate(readFileSync(join(SUITE, f))).ok);
  const wronglyRejected = y.filter((f) => !v.validate(readFileSync(join(SUITE, f))).ok);
  assert.deepEqual(wronglyAccepted, []);
  assert.deepEqual(wronglyRejected, []);
  // The deepest cases are refused by the depth scan, not by the parser's recursion.
  const deep = v.validate(readFileSync(join(SUITE, 'n_structure_100000_opening_arrays.json')));
  assert.equal(deep.ok ? 'ok' : deep.reason, 'too-deep');
  // Invalid UTF-8 is refused by the fatal decoder.
  const utf8 = n.filter((f) => {
    const r = v.validate(readFileSync(join(SUITE, f)));
    return !r.ok && r.reason === 'invalid-utf8';
  });
  assert.ok(utf8.length >= 10, `only ${utf8.length} cases refused as invalid UTF-8`);
});

test('blns strings pass through unchanged (value and bytes)', (t) => {
  if (!existsSync(BLNS)) return t.skip(`${BLNS} not present`);
  const strings = JSON.parse(readFileSync(BLNS, 'utf8')) as string[];
  assert.ok(strings.length > 500);
  const v = new ItemValidator();
  const lines: Buffer[] = [];
  const framer = new NdjsonFramer((l) => lines.push(Buffer.from(l)));
  const body = Buffer.from(strings.map((s, i) => JSON.stringify({ i, s })).join('\n') + '\n');
  framer.push(body);
  framer.end();
  assert.equal(lines.length, strings.length);
  for (let i = 0; i < strings.length; i++) {
    const r = v.validate(lines[i]);
    assert.ok(r.ok, `blns #${i} rejected`);
    assert.equal((r.value as { s: string }).s, strings[i]);
    assert.ok(lines[i].equals(Buffer.from(JSON.stringify({ i, s: strings[i] }))));
  }
});

test('a 100,000-deep array is refused before JSON.parse, without a stack overflow', () => {
  const v = new ItemValidator({ maxDepth: 64, maxItemBytes: 16 * 2 ** 20 });
  for (const text of ['['.repeat(100_000) + ']'.repeat(100_000), '{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000), '['.repeat(5_000_000)]) {
    const r = v.validate(Buffer.from(text));
    assert.equal(r.ok ? 'ok' : r.reason, 'too-deep');
  }
  // Brackets inside strings do not count; escaped quotes do not end a string.
  assert.equal(jsonDepthExceeds('{"a":"[[[[[[[[[[\\"[[[[["}', 2), false);
  assert.equal(jsonDepthExceeds('[[[1]]]', 3), false);
  assert.equal(jsonDepthExceeds('[[[[1]]]]', 3), true);
  assert.ok(new ItemValidator({ maxDepth: 3 }).validate(Buffer.from('{"a":{"b":[1]}}')).ok);
  assert.equal((new ItemValidator({ maxDepth: 3 }).validate(Buffer.from('{"a":{"b":[[1]]}}')) as { reason: string }).reason, 'too-deep');
});

test('the bracket count skips the depth scan only when the depth cannot exceed the limit', () => {
  assert.equal(openingBracketsAtMost(Buffer.from('{"a":[1,{"b":2}]}'), 3), true);
  assert.equal(openingBracketsAtMost(Buffer.from('{"a":[1,{"b":[2]}]}'), 3), false);
  assert.equal(openingBracketsAtMost(new Uint8Array(Buffer.from('[[1]]')), 2), true);
  assert.equal(openingBracketsAtMost(Buffer.from('{"a":"[[[["}'), 2), false); // in a string: counted, then the scan decides
  const v = new ItemValidator({ maxDepth: 3 });
  // Many brackets, shallow: the scan runs and accepts; few brackets: no scan needed.
  assert.ok(v.validate(Buffer.from(JSON.stringify({ a: Array.from({ length: 50 }, () => ({})) }))).ok);
  assert.ok(v.validate(Buffer.from('{"a":"[[[[[[[[[[["}')).ok);
  assert.equal((v.validate(Buffer.from('[{"a":[{"b":1}]}]')) as { reason: string }).reason, 'too-deep');
});

test('reasons: invalid UTF-8, malformed JSON, schema, size', () => {
  const v = new ItemValidator({ maxItemBytes: 64, schema: Type.Object({ id: Type.String() }) });
  const reason = (b: Buffer | string) => {
    const r = v.validate(typeof b === 'string' ? Buffer.from(b) : b);
    return r.ok ? 'ok' : r.reason;
  };
  assert.equal(reason('{"id":"x"}'), 'ok');
  assert.equal(reason(Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d])), 'invalid-utf8');
  assert.equal(reason('{"id":'), 'malformed-json');
  assert.equal(reason('{"id":1}'), 'schema');
  assert.equal(reason('[]'), 'schema');
  assert.equal(reason(`{"id":"${'x'.repeat(100)}"}`), 'too-large');
  // Default: a record is any JSON value.
  const d = new ItemValidator();
  assert.ok(d.validate(Buffer.from('{"anything":[1,{"x":null}]}')).ok);
  assert.ok(d.validate(Buffer.from('"str"')).ok);
  assert.ok(d.validate(Buffer.from('null')).ok);
  assert.equal((d.validate(Buffer.from('{"a":')) as { reason: string }).reason, 'malformed-json');
});

test('a JSON Schema file (--schema) checks records with Ajv; a bad schema is one clear error', () => {
  const check = compileJsonSchema({ type: 'object', required: ['msg'], properties: { msg: { type: 'string' }, level: { enum: ['info', 'warn', 'error'] } } });
  const v = new ItemValidator({ check });
  assert.ok(v.validate(Buffer.from('{"msg":"hello","level":"info"}')).ok);
  const r = v.validate(Buffer.from('{"msg":"hello","level":"loud"}')) as { reason: string; message: string };
  assert.equal(r.reason, 'schema');
  assert.match(r.message, /^\/level: /);
  assert.equal((v.validate(Buffer.from('{"level":"info"}')) as { reason: string }).reason, 'schema');
  assert.throws(() => compileJsonSchema({ type: 'no-such-type' }), /SLUICE_INVALID_OPTION|JSON Schema/);
  assert.throws(() => new ItemValidator({ check, schema: Type.Object({}) }), /one of schema/);
});

function frame(chunks: (string | Buffer)[], limits = {}) {
  const out: [string, number][] = [];
  const f = new NdjsonFramer((l, n) => out.push([l.toString(), n]), limits);
  for (const c of chunks) f.push(Buffer.from(c));
  f.end();
  return out;
}

test('NDJSON framing: lines across chunks, CRLF, blank lines numbered, last line without newline', () => {
  assert.deepEqual(frame(['{"a"', ':1}\r\n\n{"b":2}\n', '{"c"', ':3}']), [
    ['{"a":1}', 1],
    ['{"b":2}', 3],
    ['{"c":3}', 4],
  ]);
  assert.deepEqual(frame(['\n\n\n']), []);
});

test('NDJSON framing: a long line is refused after cap bytes, before its newline arrives', () => {
  const cap = 1024 * 1024;
  const f = new NdjsonFramer(() => assert.fail('no line expected'), { maxLineBytes: cap });
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let pushed = 0;
  // A "2 GiB line" streamed: the framer must give up after about cap bytes.
  assert.throws(
    () => {
      for (let i = 0; i < (2 * 2 ** 30) / chunk.length; i++) {
        pushed += chunk.length;
        f.push(chunk);
      }
    },
    (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.LineTooLarge && e.details.cap === 'line-bytes' && e.details.line === 1,
  );
  assert.ok(pushed <= cap + chunk.length, `pushed ${pushed}`);
  // Exactly at the cap is fine; one byte over is not (CR not counted).
  assert.equal(frame(['x'.repeat(10) + '\r\n'], { maxLineBytes: 10 }).length, 1);
  assert.throws(() => frame(['x'.repeat(11) + '\n'], { maxLineBytes: 10 }), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.LineTooLarge);
  assert.throws(() => frame(['x'.repeat(6), 'x'.repeat(6)], { maxLineBytes: 10 }), (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.LineTooLarge);
});

test('NDJSON framing: items-per-request cap', () => {
  assert.equal(frame(['{}\n'.repeat(5)], { maxItems: 5 }).length, 5);
  assert.throws(
    () => frame(['{}\n'.repeat(6)], { maxItems: 5 }),
    (e: unknown) => e instanceof SluiceError && e.code === ErrorCode.TooManyItems && e.details.cap === 'items' && e.details.line === 6,
  );
});
