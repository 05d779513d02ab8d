import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  CODEC_LEVELS,
  availableCodecs,
  codecForContentEncoding,
  compressMeasured,
  createCodec,
  zstdAvailability,
  type CodecName,
} from '../../packages/sluice/src/codec/compress.js';
import { isSluiceError } from '../../packages/sluice/src/core/errors.js';
import { RecordFactory } from '../../packages/lab/src/records/records.js';
import { ndjsonBatch } from '../../packages/sluice/src/sinks/serialize.js';

const factory = new RecordFactory({ seed: 3 });
const ndjson = ndjsonBatch(Array.from({ length: 500 }, (_, i) => factory.make(i, 0)));
const inputs: [string, Buffer][] = [
  ['empty', Buffer.alloc(0)],
  ['one byte', Buffer.from('x')],
  ['one record', ndjsonBatch([factory.make(1, 0)])],
  ['500 records', ndjson],
  // 8 MiB: incompressible random bytes, then the NDJSON repeated (several zlib chunks).
  ['large random', randomBytes(8 * 1024 * 1024)],
  ['large ndjson', Buffer.concat(Array.from({ length: 40 }, () => ndjson))],
];

for (const name of availableCodecs()) {
  const r = CODEC_LEVELS[name];
  const levels = name === 'none' ? [undefined] : [r.min, r.default!, r.max];
  for (const level of levels) {
    const codec = createCodec({ codec: name, level });
    test(`${codec.label} round-trips empty, small, large and incompressible buffers`, async () => {
      for (const [what, input] of inputs) {
        if (what === 'large random' && level === r.max && name !== 'none' && name !== 'gzip') continue; // slowest levels: spare the CPU
        const packed = await codec.compress(input);
        const back = await codec.decompress(packed);
        assert.ok(back.equals(input), `${codec.label} ${what}`);
      }
    });
  }
}

test('compression pays on a batch, hardly on one record (gzip)', async () => {
  const gz = createCodec('gzip');
  const one = ndjsonBatch([factory.make(7, 0)]);
  const r1 = one.length / (await gz.compress(one)).length;
  const r500 = ndjson.length / (await gz.compress(ndjson)).length;
  assert.ok(r1 < 1.6, `one record ratio ${r1}`);
  assert.ok(r500 > 3, `500 records ratio ${r500}`);
});

test('compressMeasured returns the compressed bytes and a CPU time', async () => {
  const m = await compressMeasured(createCodec({ codec: 'brotli', level: 9 }), Buffer.concat([ndjson, ndjson, ndjson, ndjson]));
  assert.ok(m.data.length < ndjson.length);
  assert.ok(m.cpuUs >= 0 && Number.isFinite(m.cpuUs));
  assert.ok(m.wallUs > 0);
});

test('decompress refuses to inflate past its cap', async () => {
  for (const name of availableCodecs()) {
    const c = createCodec(name);
    await assert.rejects(c.decompress(await c.compress(Buffer.alloc(100_000, 'a')), 10_000), (e) => isSluiceError(e, 'SLUICE_DECOMPRESSED_TOO_LARGE'), name);
  }
});

test('bad codec names and levels are refused with SLUICE_INVALID_OPTION', () => {
  const bad: [CodecName, number | undefined][] = [
    ['gzip', 0],
    ['gzip', 10],
    ['brotli', 12],
    ['zstd', 0],
    ['none', 3],
    ['gzip', 2.5],
  ];
  for (const [codec, level] of bad) assert.throws(() => createCodec({ codec, level }), (e) => isSluiceError(e, 'SLUICE_INVALID_OPTION'), `${codec} ${level}`);
  assert.throws(() => createCodec('lz4' as CodecName), (e) => isSluiceError(e, 'SLUICE_INVALID_OPTION'));
});

test('zstd is either usable or refused with the reason', () => {
  const z = zstdAvailability();
  if (z.available) assert.equal(createCodec('zstd').contentEncoding, 'zstd');
  else assert.throws(() => createCodec('zstd'), (e) => isSluiceError(e, 'SLUICE_CODEC_UNAVAILABLE'));
});

test('Content-Encoding values map to codecs', () => {
  assert.equal(codecForContentEncoding(undefined)?.name, 'none');
  assert.equal(codecForContentEncoding('identity')?.name, 'none');
  assert.equal(codecForContentEncoding('gzip')?.name, 'gzip');
  assert.equal(codecForContentEncoding('br')?.name, 'brotli');
  assert.equal(codecForContentEncoding('gzip, br'), null);
  assert.equal(codecForContentEncoding('compress'), null);
});
