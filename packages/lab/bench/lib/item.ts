/**
 * The one item every contender receives in cases 1, 2 and 4: an `Envelope` (what Sluice
 * takes) that also answers the two members OpenTelemetry's BatchSpanProcessor reads from a
 * span (`spanContext()`, `resource`). Both live on the prototype, so feeding OTel costs no
 * extra allocation and every contender gets the very same objects: one allocation per item.
 *
 * `raw` is a small pre-serialized NDJSON record (≈60 bytes) from a pool of 1,024, so the
 * file sink writes real bytes without a JSON.stringify per item. Small on purpose: case 2
 * is about the sink's fixed cost (fdatasync), not about disk bandwidth.
 */
import { performance } from 'node:perf_hooks';
import type { Envelope } from 'sluice';

const POOL_SIZE = 1024;
const KINDS = ['page_view', 'api_call', 'login', 'purchase', 'search', 'logout'];
const RAW: Buffer[] = Array.from({ length: POOL_SIZE }, (_, k) =>
  Buffer.from(`{"id":"e${k}","ts":${1_764_000_000_000 + k},"kind":"${KINDS[k % KINDS.length]}","amount":${(k % 997) / 10}}`),
);

/** The trace flags OTel checks: 1 = sampled (an unsampled span would be skipped, not batched). */
const SPAN_CONTEXT = Object.freeze({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 });
/** OTel waits for a resource's async attributes before exporting when this flag is set. */
const RESOURCE = Object.freeze({ asyncAttributesPending: false });

export class BenchItem implements Envelope<number> {
  value: number;
  bytes: number;
  intendedAtMs: number;
  id: string | undefined = undefined;
  raw: Buffer | undefined;
  offset: number | undefined = undefined;
  meta: unknown = undefined;
  acceptedAtMs = 0;
  seq = 0;
  /** When the contender took the item (case 4's enqueue-to-ack latency); see `stampEnqueued`. */
  enqueuedAtMs = 0;

  constructor(i: number, intendedAtMs: number) {
    const raw = RAW[i & (POOL_SIZE - 1)];
    this.value = i;
    this.raw = raw;
    this.bytes = raw.length;
    this.intendedAtMs = intendedAtMs;
  }

  // ReadableSpan surface, for OpenTelemetry's BatchSpanProcessor.
  spanContext(): typeof SPAN_CONTEXT {
    return SPAN_CONTEXT;
  }

  get resource(): typeof RESOURCE {
    return RESOURCE;
  }
}

export function meanRawBytes(): number {
  return RAW.reduce((s, b) => s + b.length, 0) / RAW.length;
}

/**
 * Case 4 measures enqueue-to-ack latency from the moment each contender took the item,
 * stamped the same way for all: one `performance.now()` per item into `enqueuedAtMs` (the
 * peers in their offer, Sluice in an `onAccepted` observer, so that an item it made wait
 * under back-pressure is stamped when it is admitted). Not `acceptedAtMs`: Sluice keeps its
 * own, a lower bound of the acceptance time, for its batch deadlines.
 */
export interface Enqueued {
  enqueuedAtMs: number;
}

export function stampEnqueued(item: object): void {
  (item as Enqueued).enqueuedAtMs = performance.now();
}
