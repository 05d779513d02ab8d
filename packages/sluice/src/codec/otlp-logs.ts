/**
 * OTLP logs (OpenTelemetry Protocol, opentelemetry-proto v1): the protobuf schema, decoding a
 * `ExportLogsServiceRequest` (protobuf or OTLP/JSON), and its mapping to generic records
 * (docs/serve.md, "OTLP/HTTP logs").
 *
 * The schema below is written for this project from the OTLP specification
 * (opentelemetry/proto/{common,resource,logs}/v1 and collector/logs/v1, plus google.rpc.Status
 * for error bodies): message names and field numbers as in the specification, one package here
 * (package names do not travel on the wire). Decoding uses protobufjs.
 */
import protobuf from 'protobufjs';

const OTLP_LOGS_PROTO = `
syntax = "proto3";
package sluice.otlp;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
message Resource {
  repeated KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
message ExportLogsServiceRequest { repeated ResourceLogs resource_logs = 1; }
message ResourceLogs {
  Resource resource = 1;
  repeated ScopeLogs scope_logs = 2;
  string schema_url = 3;
}
message ScopeLogs {
  InstrumentationScope scope = 1;
  repeated LogRecord log_records = 2;
  string schema_url = 3;
}
message LogRecord {
  fixed64 time_unix_nano = 1;
  fixed64 observed_time_unix_nano = 11;
  int32 severity_number = 2;
  string severity_text = 3;
  AnyValue body = 5;
  repeated KeyValue attributes = 6;
  uint32 dropped_attributes_count = 7;
  fixed32 flags = 8;
  bytes trace_id = 9;
  bytes span_id = 10;
  string event_name = 12;
}
message ExportLogsServiceResponse { ExportLogsPartialSuccess partial_success = 1; }
message ExportLogsPartialSuccess {
  int64 rejected_log_records = 1;
  string error_message = 2;
}
message Status {
  int32 code = 1;
  string message = 2;
}
`;

const root = protobuf.parse(OTLP_LOGS_PROTO, { keepCase: false }).root;
export const OtlpTypes = {
  request: root.lookupType('sluice.otlp.ExportLogsServiceRequest'),
  response: root.lookupType('sluice.otlp.ExportLogsServiceResponse'),
  status: root.lookupType('sluice.otlp.Status'),
};

/** One OTLP log record as a generic record (docs/serve.md lists the fields). */
export interface OtlpLogItem {
  /** The record, or why it is refused (attribute nesting deeper than the depth cap). */
  value: Record<string, unknown> | null;
  error?: string;
}

/** Thrown for a body that is not an ExportLogsServiceRequest (HTTP 400, not retried). */
export class OtlpDecodeError extends Error {}

/**
 * Decodes a protobuf body. A length prefix that points past the end of the buffer (a length
 * that lies), a wrong wire type or a nesting deep enough to exhaust the stack all end here as
 * OtlpDecodeError: protobufjs never reads past the buffer it is given, and the buffer is
 * already capped by the request's decompressed cap.
 */
export function decodeOtlpProto(body: Uint8Array): unknown {
  try {
    const msg = OtlpTypes.request.decode(body);
    return OtlpTypes.request.toObject(msg, { longs: String, enums: Number, bytes: Array, defaults: false, arrays: true, oneofs: false });
  } catch (e) {
    throw new OtlpDecodeError(`not an OTLP ExportLogsServiceRequest: ${(e as Error)?.message ?? e}`);
  }
}

/** Parses an OTLP/JSON body (the OTLP JSON mapping: lowerCamelCase keys, hex trace ids, int64 as string or number). */
export function decodeOtlpJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new OtlpDecodeError(`not OTLP/JSON: ${(e as Error).message}`);
  }
}

function hex(v: unknown): string | undefined {
  if (typeof v === 'string') return v.length > 0 ? v.toLowerCase() : undefined;
  if (Array.isArray(v) || v instanceof Uint8Array) return v.length > 0 ? Buffer.from(v as number[]).toString('hex') : undefined;
  return undefined;
}

class TooDeep extends Error {}

/** AnyValue → plain JSON, at most `depth` levels (a bound on recursion, and the record's nesting cap). */
function anyValue(v: unknown, depth: number): unknown {
  if (v === null || typeof v !== 'object') return null;
  if (depth <= 0) throw new TooDeep();
  const a = v as Record<string, unknown>;
  if (a.stringValue !== undefined) return String(a.stringValue);
  if (a.boolValue !== undefined) return Boolean(a.boolValue);
  if (a.intValue !== undefined) {
    // int64: a number where exact, else the decimal string (OTLP/JSON sends strings).
    const n = Number(a.intValue);
    return Number.isSafeInteger(n) ? n : String(a.intValue);
  }
  if (a.doubleValue !== undefined) {
    const n = Number(a.doubleValue);
    return Number.isFinite(n) ? n : String(a.doubleValue);
  }
  if (a.bytesValue !== undefined) return typeof a.bytesValue === 'string' ? a.bytesValue : Buffer.from(a.bytesValue as number[]).toString('base64');
  if (a.arrayValue !== undefined) return arr((a.arrayValue as { values?: unknown[] })?.values).map((x) => anyValue(x, depth - 1));
  if (a.kvlistValue !== undefined) return attributes((a.kvlistValue as { values?: unknown[] })?.values, depth - 1);
  return null;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** KeyValue list → object (a repeated key: the last one wins, as in the OTLP data model). */
function attributes(list: unknown, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (depth <= 0) throw new TooDeep();
  for (const kv of arr(list)) {
    const k = (kv as { key?: unknown })?.key;
    if (typeof k !== 'string') continue;
    out[k] = anyValue((kv as { value?: unknown }).value, depth - 1);
  }
  return out;
}

function nanos(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  const s = String(v);
  return s === '0' || s === '' ? undefined : s;
}

function isoOf(ns: string | undefined): string | undefined {
  if (!ns || !/^\d+$/.test(ns)) return undefined;
  const ms = Number(BigInt(ns) / 1_000_000n);
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** Counts the log records of a decoded request without mapping them (for the items cap). */
export function countOtlpLogRecords(req: unknown): number {
  let n = 0;
  for (const rl of arr((req as { resourceLogs?: unknown })?.resourceLogs))
    for (const sl of arr((rl as { scopeLogs?: unknown })?.scopeLogs)) n += arr((sl as { logRecords?: unknown })?.logRecords).length;
  return n;
}

/**
 * One record per log record, in order:
 * `{ time, observedTime, timeUnixNano, observedTimeUnixNano, severityNumber, severityText,
 *    body, attributes, resource, scope: { name, version, attributes }, traceId, spanId, flags,
 *    eventName, droppedAttributesCount }` — fields absent in the log record are left out;
 * `resource` holds the resource's attributes as an object, `attributes` the record's own.
 * `maxDepth` bounds AnyValue nesting (the same cap /ingest applies to a line).
 */
export function otlpLogRecords(req: unknown, maxDepth: number): OtlpLogItem[] {
  const out: OtlpLogItem[] = [];
  for (const rl of arr((req as { resourceLogs?: unknown })?.resourceLogs)) {
    const r = rl as { resource?: { attributes?: unknown }; scopeLogs?: unknown };
    let resource: Record<string, unknown> | null = null;
    let resourceError: string | undefined;
    try {
      resource = attributes(r.resource?.attributes, maxDepth - 1);
    } catch (e) {
      if (!(e instanceof TooDeep)) throw e;
      resourceError = `resource attributes nest deeper than ${maxDepth}`;
    }
    for (const slRaw of arr(r.scopeLogs)) {
      const sl = slRaw as { scope?: { name?: string; version?: string; attributes?: unknown }; logRecords?: unknown };
      let scope: Record<string, unknown> | undefined;
      let scopeError = resourceError;
      try {
        if (sl.scope) {
          scope = {};
          if (sl.scope.name) scope.name = sl.scope.name;
          if (sl.scope.version) scope.version = sl.scope.version;
          const sa = attributes(sl.scope.attributes, maxDepth - 2);
          if (Object.keys(sa).length > 0) scope.attributes = sa;
        }
      } catch (e) {
        if (!(e instanceof TooDeep)) throw e;
        scopeError ??= `scope attributes nest deeper than ${maxDepth}`;
      }
      for (const lrRaw of arr(sl.logRecords)) {
        if (scopeError) {
          out.push({ value: null, error: scopeError });
          continue;
        }
        const lr = lrRaw as Record<string, unknown>;
        try {
          const v: Record<string, unknown> = {};
          const t = nanos(lr.timeUnixNano);
          const ot = nanos(lr.observedTimeUnixNano);
          if (t) v.time = isoOf(t);
          if (ot) v.observedTime = isoOf(ot);
          if (t) v.timeUnixNano = t;
          if (ot) v.observedTimeUnixNano = ot;
          if (lr.severityNumber !== undefined && Number(lr.severityNumber) !== 0) v.severityNumber = Number(lr.severityNumber);
          if (lr.severityText) v.severityText = String(lr.severityText);
          if (lr.body !== undefined) v.body = anyValue(lr.body, maxDepth - 1);
          const attrs = attributes(lr.attributes, maxDepth - 1);
          if (Object.keys(attrs).length > 0) v.attributes = attrs;
          if (Object.keys(resource!).length > 0) v.resource = resource;
          if (scope && Object.keys(scope).length > 0) v.scope = scope;
          const traceId = hex(lr.traceId);
          const spanId = hex(lr.spanId);
          if (traceId) v.traceId = traceId;
          if (spanId) v.spanId = spanId;
          if (lr.flags !== undefined && Number(lr.flags) !== 0) v.flags = Number(lr.flags);
          if (lr.eventName) v.eventName = String(lr.eventName);
          if (lr.droppedAttributesCount) v.droppedAttributesCount = Number(lr.droppedAttributesCount);
          out.push({ value: v });
        } catch (e) {
          if (!(e instanceof TooDeep)) throw e;
          out.push({ value: null, error: `log record nests deeper than ${maxDepth}` });
        }
      }
    }
  }
  return out;
}

/** The success answer: `partialSuccess` only when some records were refused (the OTLP specification). */
export function otlpResponse(json: boolean, rejected: number, errorMessage: string): string | Uint8Array {
  const body = rejected > 0 ? { partialSuccess: { rejectedLogRecords: rejected, errorMessage } } : {};
  if (json) return JSON.stringify(rejected > 0 ? { partialSuccess: { rejectedLogRecords: String(rejected), errorMessage } } : {});
  return OtlpTypes.response.encode(OtlpTypes.response.fromObject(body)).finish();
}

/** A google.rpc.Status error body, in the request's content type. */
export function otlpStatus(json: boolean, code: number, message: string): string | Uint8Array {
  if (json) return JSON.stringify({ code, message });
  return OtlpTypes.status.encode(OtlpTypes.status.fromObject({ code, message })).finish();
}
