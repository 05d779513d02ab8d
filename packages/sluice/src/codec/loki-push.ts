/**
 * Loki push (`POST /loki/api/v1/push`): the JSON body, and the snappy-compressed protobuf
 * `logproto.PushRequest`, mapped to generic records (docs/serve.md, "Loki push").
 *
 * The protobuf schema is written for this project from Loki's push API
 * (pkg/push/push.proto: PushRequest, StreamAdapter, EntryAdapter, LabelPairAdapter, with a
 * google.protobuf.Timestamp): names and field numbers as there. Snappy is the block format
 * (not framed), decoded with snappyjs — after its declared length is checked against the cap.
 */
import protobuf from 'protobufjs';
import * as snappy from 'snappyjs';
import { ErrorCode, SluiceError } from '../core/errors.js';

const LOKI_PUSH_PROTO = `
syntax = "proto3";
package sluice.loki;
message Timestamp { int64 seconds = 1; int32 nanos = 2; }
message PushRequest { repeated StreamAdapter streams = 1; }
message StreamAdapter {
  string labels = 1;
  repeated EntryAdapter entries = 2;
  uint64 hash = 3;
}
message EntryAdapter {
  Timestamp timestamp = 1;
  string line = 2;
  repeated LabelPairAdapter structuredMetadata = 3;
}
message LabelPairAdapter { string name = 1; string value = 2; }
`;

const root = protobuf.parse(LOKI_PUSH_PROTO, { keepCase: true }).root;
export const LokiPushRequest = root.lookupType('sluice.loki.PushRequest');

/** Thrown for a body that is not a push request (HTTP 400). */
export class LokiDecodeError extends Error {}

/**
 * The uncompressed length a snappy block declares (its leading varint, at most 32 bits), or
 * -1 when the varint is malformed. Read before decompressing, so a block that claims more than
 * the cap is refused without allocating its output.
 */
export function snappyDeclaredLength(block: Uint8Array): number {
  let result = 0;
  for (let i = 0, shift = 0; i < 5 && i < block.length; i++, shift += 7) {
    const b = block[i];
    result += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return result;
  }
  return -1;
}

/**
 * Decompresses a snappy block whose declared length is at most `maxBytes`; over it, throws
 * SLUICE_DECOMPRESSED_TOO_LARGE (413) without decompressing. The declared length is also the
 * most the decoder writes: snappyjs allocates exactly it and fails a block that would write
 * past it (a block that lies about its length is a 400, never a larger buffer).
 */
export function snappyBlockDecode(block: Uint8Array, maxBytes: number): Buffer {
  const n = snappyDeclaredLength(block);
  if (n < 0) throw new SluiceError(ErrorCode.MalformedInput, 'corrupt snappy block: bad length', { details: { reason: 'corrupt', coding: 'snappy' } });
  if (n > maxBytes)
    throw new SluiceError(ErrorCode.DecompressedTooLarge, `snappy block declares ${n} bytes, more than ${maxBytes} once decompressed`, {
      details: { cap: 'decompressed-bytes', limit: maxBytes, read: 0, declared: n },
    });
  try {
    return Buffer.from(snappy.uncompress(block, maxBytes) as Uint8Array);
  } catch (e) {
    throw new SluiceError(ErrorCode.MalformedInput, `corrupt snappy block: ${(e as Error).message}`, { details: { reason: 'corrupt', coding: 'snappy' } });
  }
}

/** One Loki entry as a record: `{ ts, line, labels, metadata? }` (ts: nanoseconds since the epoch, decimal string). */
export interface LokiEntry {
  ts: string;
  line: string;
  labels: Record<string, string>;
  metadata?: Record<string, string>;
}

/**
 * Parses a Prometheus label set as Loki's protobuf carries it: `{a="x", b="y\\"z"}`. Values
 * are Go-quoted strings (\\", \\\\, \\n, \\t, \\r, \\xHH, \\uHHHH escapes); throws on anything else.
 */
export function parseLabelSet(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  const ws = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const fail = (why: string): never => {
    throw new LokiDecodeError(`bad stream labels ${JSON.stringify(s.slice(0, 200))}: ${why}`);
  };
  ws();
  if (s[i] !== '{') fail('expected {');
  i++;
  ws();
  if (s[i] === '}') return out;
  for (;;) {
    ws();
    const m = /^[a-zA-Z_][a-zA-Z0-9_.]*/.exec(s.slice(i, i + 1024));
    if (!m) fail('expected a label name');
    const name = m![0];
    i += name.length;
    ws();
    if (s[i] !== '=') fail('expected =');
    i++;
    ws();
    if (s[i] !== '"') fail('expected a quoted value');
    i++;
    let v = '';
    for (;;) {
      if (i >= s.length) fail('unterminated value');
      const c = s[i++];
      if (c === '"') break;
      if (c !== '\\') {
        v += c;
        continue;
      }
      const e = s[i++];
      if (e === 'n') v += '\n';
      else if (e === 't') v += '\t';
      else if (e === 'r') v += '\r';
      else if (e === '"' || e === '\\' || e === "'") v += e;
      else if (e === 'x' || e === 'u') {
        const len = e === 'x' ? 2 : 4;
        const h = s.slice(i, i + len);
        if (!/^[0-9a-fA-F]+$/.test(h) || h.length !== len) fail('bad escape');
        v += String.fromCharCode(parseInt(h, 16));
        i += len;
      } else fail('bad escape');
    }
    out[name] = v;
    ws();
    if (s[i] === ',') {
      i++;
      continue;
    }
    if (s[i] === '}') return out;
    fail('expected , or }');
  }
}

function labelPairs(list: unknown): Record<string, string> | undefined {
  if (!Array.isArray(list) || list.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const p of list) out[String((p as { name?: unknown }).name ?? '')] = String((p as { value?: unknown }).value ?? '');
  return out;
}

/** Entries of a protobuf push body (already snappy-decoded), in order. */
export function lokiProtoEntries(body: Uint8Array): LokiEntry[] {
  let req: { streams?: { labels?: string; entries?: { timestamp?: { seconds?: string; nanos?: number }; line?: string; structuredMetadata?: unknown }[] }[] };
  try {
    req = LokiPushRequest.toObject(LokiPushRequest.decode(body), { longs: String, defaults: false, arrays: true }) as typeof req;
  } catch (e) {
    throw new LokiDecodeError(`not a Loki PushRequest: ${(e as Error)?.message ?? e}`);
  }
  const out: LokiEntry[] = [];
  for (const st of req.streams ?? []) {
    const labels = parseLabelSet(st.labels ?? '{}');
    for (const en of st.entries ?? []) {
      const ts = (BigInt(en.timestamp?.seconds ?? '0') * 1_000_000_000n + BigInt(en.timestamp?.nanos ?? 0)).toString();
      const e: LokiEntry = { ts, line: en.line ?? '', labels };
      const md = labelPairs(en.structuredMetadata);
      if (md) e.metadata = md;
      out.push(e);
    }
  }
  return out;
}

/**
 * Entries of a JSON push body: `{"streams":[{"stream":{labels},"values":[["<ns>","line",{metadata}?],…]}]}`.
 * A value that is not `[string, string, object?]` is an error for the whole body (400), as in Loki.
 */
export function lokiJsonEntries(body: Buffer): LokiEntry[] {
  let req: unknown;
  try {
    req = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new LokiDecodeError(`not JSON: ${(e as Error).message}`);
  }
  const streams = (req as { streams?: unknown })?.streams;
  if (!Array.isArray(streams)) throw new LokiDecodeError('no "streams" array');
  const out: LokiEntry[] = [];
  for (const st of streams) {
    const labelsIn = (st as { stream?: unknown })?.stream ?? {};
    if (typeof labelsIn !== 'object' || labelsIn === null || Array.isArray(labelsIn)) throw new LokiDecodeError('"stream" is not an object');
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(labelsIn)) labels[k] = String(v);
    const values = (st as { values?: unknown }).values;
    if (!Array.isArray(values)) throw new LokiDecodeError('"values" is not an array');
    for (const v of values) {
      if (!Array.isArray(v) || typeof v[0] !== 'string' || typeof v[1] !== 'string' || !/^\d+$/.test(v[0]))
        throw new LokiDecodeError('each value must be ["<unix ns>", "<line>", {metadata}?]');
      const e: LokiEntry = { ts: v[0], line: v[1], labels };
      if (v[2] !== undefined) {
        if (typeof v[2] !== 'object' || v[2] === null || Array.isArray(v[2])) throw new LokiDecodeError('structured metadata must be an object');
        const md: Record<string, string> = {};
        for (const [k, x] of Object.entries(v[2] as object)) md[k] = String(x);
        if (Object.keys(md).length > 0) e.metadata = md;
      }
      out.push(e);
    }
  }
  return out;
}
