/**
 * The front doors that speak the shippers' own protocols (docs/serve.md): Elasticsearch
 * `_bulk` (+ the `GET /` version probe), OTLP/HTTP logs and Loki push. Each maps its body to
 * generic records and goes through what `/ingest` uses (src/sources/http.ts): the concurrency
 * gate, the caps on the body as sent and decoded, per-item validation (size, depth, schema),
 * the id rule, the same pipeline, queue and backpressure, and the per-request ticket that
 * waits for commit.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ItemValidator } from '../../codec/validate.js';
import type { RecordIdRule } from '../../codec/record-id.js';
import type { SluiceError } from '../../core/errors.js';
import type { Envelope, Sink } from '../../core/types.js';
import type client from 'prom-client';
import type { AckMode, ServeLimits, Ticket } from '../http.js';
import { esBulk, esRefresh, esRoot, isBulkPath, isRefreshPath } from './es-bulk.js';
import { otlpLogs } from './otlp.js';
import { lokiPush } from './loki.js';

/** What a door gets from the server (built once in startServer). */
export interface DoorContext {
  limits: ServeLimits;
  validator: ItemValidator;
  idRule: RecordIdRule;
  sink: Sink<unknown>;
  ack: AckMode;
  retryAfter: string;
  maxErrorsListed: number;
  send(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void;
  sendBody(req: IncomingMessage, res: ServerResponse, status: number, body: string | Uint8Array, contentType: string, headers?: Record<string, string>): void;
  refuse(req: IncomingMessage, res: ServerResponse, e: SluiceError, extra?: Record<string, unknown>): void;
  readBody(
    req: IncomingMessage,
    res: ServerResponse,
    target: { push(chunk: Buffer): void; end?(): void },
    onRefuse?: (e: SluiceError, extra: Record<string, unknown>) => void,
  ): Promise<boolean>;
  enqueueStaged(staged: readonly Envelope<unknown>[], ticket: Ticket): Promise<{ accepted: number; refused: SluiceError | null }>;
  requestsRejected: client.Counter<'reason'>;
  itemsRejected: client.Counter<'reason'>;
  /** When the request arrived (performance.now() when its headers were parsed): its records' intendedAtMs. */
  arrivedAt(req: IncomingMessage): number;
}

export interface Door {
  /** Behind the concurrency gate and the shutdown check (body-carrying routes). */
  gated: boolean;
  handle(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void>;
}

const ES_ROOT: Door = { gated: false, handle: esRoot };
const ES_REFRESH: Door = { gated: false, handle: esRefresh };
const ES_BULK: Door = { gated: true, handle: esBulk };
const OTLP: Door = { gated: true, handle: otlpLogs };
const LOKI: Door = { gated: true, handle: lokiPush };

/** The door for a request, `'method'` for a door's path with the wrong method, or null (not a door). */
export function matchDoor(method: string, path: string): Door | 'method' | null {
  if (path === '/') return method === 'GET' || method === 'HEAD' ? ES_ROOT : null;
  if (isRefreshPath(path)) return method === 'POST' || method === 'GET' ? ES_REFRESH : 'method';
  const door = path === '/v1/logs' ? OTLP : path === '/loki/api/v1/push' ? LOKI : isBulkPath(path) ? ES_BULK : null;
  if (!door) return null;
  // Elasticsearch also takes PUT for _bulk.
  if (method === 'POST' || (door === ES_BULK && method === 'PUT')) return door;
  return 'method';
}
