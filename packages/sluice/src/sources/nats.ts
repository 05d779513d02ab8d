/**
 * NATS connection and JetStream set-up shared by the JetStream source, producer and
 * dead-letter store. An unreachable server fails at start-up with one coded error naming
 * the endpoint, not with a stack trace at the first message.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { performance } from 'node:perf_hooks';
import { ErrorCode, SluiceError } from '../core/errors.js';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';

/** `nats://host:port[/stream[/consumer]]` → its parts (the path names the stream and consumer). */
export function parseNatsUrl(url: string): { servers: string; stream?: string; consumer?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new SluiceError(ErrorCode.InvalidOption, `invalid NATS URL ${JSON.stringify(url)}: expected nats://host:port[/stream[/consumer]]`);
  }
  if (u.protocol !== 'nats:') throw new SluiceError(ErrorCode.InvalidOption, `invalid NATS URL ${JSON.stringify(url)}: expected the nats:// scheme`);
  const [stream, consumer] = u.pathname.split('/').filter(Boolean);
  return { servers: `${u.hostname}:${u.port || '4222'}`, stream, consumer };
}

/** A connection status change worth one log line: the broker went away, or came back after `outageMs`. */
export type NatsStatusEvent = { type: 'down'; servers: string; atEpochMs: number } | { type: 'up'; servers: string; outageMs: number };

/** The default status reporter: one JSON line on stderr per transition. */
export function logNatsStatus(e: NatsStatusEvent): void {
  const line =
    e.type === 'down'
      ? { level: 'warn', msg: `NATS at ${e.servers} went down; reconnecting with backoff until it is back`, servers: e.servers }
      : { level: 'info', msg: `NATS at ${e.servers} came back after ${(e.outageMs / 1000).toFixed(1)} s`, servers: e.servers, outageMs: Math.round(e.outageMs) };
  process.stderr.write(JSON.stringify(line) + '\n');
}

/**
 * `--nats` server list: comma-separated `nats://host:port` or `host:port` entries → `host:port`
 * strings. Every entry is validated like a URL; an empty list is refused.
 */
export function parseNatsServers(list: string): string[] {
  const out: string[] = [];
  for (const raw of list.split(',').map((s) => s.trim())) {
    if (!raw) continue;
    const url = raw.includes('://') ? raw : `nats://${raw}`;
    const { servers, stream } = parseNatsUrl(url);
    if (stream !== undefined) throw new SluiceError(ErrorCode.InvalidOption, `invalid --nats entry ${JSON.stringify(raw)}: a server (nats://host:port), without a path`);
    if (!out.includes(servers)) out.push(servers);
  }
  if (out.length === 0) throw new SluiceError(ErrorCode.InvalidOption, `invalid --nats ${JSON.stringify(list)}: expected nats://host:port[,nats://host:port…]`);
  return out;
}

/** Reconnect pacing shared by every Sluice connection (see connectNats). */
export const NATS_RECONNECT = Object.freeze({
  /** Wait before retrying a server already tried (ms). Another server of the list is tried at once. */
  reconnectTimeWait: 1_000,
  /** Random 0..jitter ms added to each wait, so that many clients do not retry in lockstep. */
  reconnectJitter: 500,
});

/**
 * Connects once (an unreachable server at start-up is one coded error), then reconnects for
 * ever through an outage of any length (issue 19: with the client's default of 10 attempts it
 * gave up after about 30 s, the consumer's iterator never settled and `sluice run` exited with
 * code 13). Reconnect waits `reconnectTimeWait` ± jitter so that many clients do not retry in
 * lockstep. `onStatus` hears once per outage that the broker went down and once that it came
 * back, with the outage length. @default onStatus logNatsStatus (stderr)
 *
 * `moreServers` (the `--nats` list, docs/scale.md): the servers tried besides the URL's own
 * host, in a random order, at start-up and on every reconnect, so losing one node of a
 * cluster moves the connection to another; the client also learns the cluster's other
 * nodes from the server it reached.
 */
export async function connectNats(
  url: string,
  timeoutMs = 3_000,
  onStatus: ((e: NatsStatusEvent) => void) | null = logNatsStatus,
  moreServers: readonly string[] = [],
): Promise<NatsConnection> {
  const { servers: first } = parseNatsUrl(url);
  const list = [first, ...moreServers.filter((s) => s !== first)];
  const servers = list.join(',');
  try {
    const nc = await connect({
      servers: list,
      timeout: timeoutMs,
      name: 'sluice',
      maxReconnectAttempts: -1,
      ...NATS_RECONNECT,
    });
    if (onStatus) watchStatus(nc, servers, onStatus);
    return nc;
  } catch (cause) {
    throw new SluiceError(ErrorCode.SourceUnavailable, `cannot connect to NATS at ${servers} (${(cause as Error)?.message ?? cause})`, {
      cause,
      retryable: true,
      details: { servers },
    });
  }
}

export interface StreamSpec {
  /**
   * Copies of the stream in a JetStream cluster (1–5; 3 survives the loss of one node). Only
   * used when the stream is created: an existing stream is used as it is. @default 1
   */
  replicas?: number;
  /** Window in which JetStream drops a message whose Nats-Msg-Id it has seen (ms). @default the server's (2 min) */
  duplicateWindowMs?: number;
}

/** How long stream creation retries while a freshly started cluster has no meta leader yet. */
const CREATE_RETRY_MS = 15_000;

/**
 * Creates the stream if missing (file storage: a PubAck means the message is on disk).
 * Idempotent: an existing stream is left as it is (its replica count is not changed), and
 * two processes racing to create it both succeed. While a cluster is still electing its
 * meta leader, creation is retried for up to CREATE_RETRY_MS.
 */
export async function ensureStream(jsm: JetStreamManager, stream: string, subjects: string[], spec: StreamSpec = {}): Promise<void> {
  const replicas = spec.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) throw new SluiceError(ErrorCode.InvalidOption, `invalid replicas ${replicas}: an integer from 1 to 5`);
  const deadline = performance.now() + CREATE_RETRY_MS;
  for (;;) {
    try {
      await jsm.streams.info(stream);
      return;
    } catch {
      // missing (or no leader yet): create below
    }
    try {
      await jsm.streams.add({
        name: stream,
        subjects,
        storage: 'file' as never,
        num_replicas: replicas,
        ...(spec.duplicateWindowMs !== undefined ? { duplicate_window: spec.duplicateWindowMs * 1_000_000 } : {}),
      });
      return;
    } catch (cause) {
      // Two workers racing to create it: fine if it now exists.
      try {
        await jsm.streams.info(stream);
        return;
      } catch {
        const msg = (cause as Error).message ?? String(cause);
        const settling = /temporarily unavailable|no suitable peers|insufficient resources|timeout|TIMEOUT|503|no responders/i.test(msg);
        if (!settling || performance.now() > deadline)
          throw new SluiceError(ErrorCode.SourceUnavailable, `cannot create JetStream stream ${stream} (R${replicas}): ${msg}`, { cause });
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }
}

export async function manager(nc: NatsConnection): Promise<JetStreamManager> {
  return jetstreamManager(nc);
}

function watchStatus(nc: NatsConnection, servers: string, onStatus: (e: NatsStatusEvent) => void): void {
  let downAt: number | null = null;
  const emit = (e: NatsStatusEvent) => {
    try {
      onStatus(e);
    } catch {
      /* a reporter must not break the connection */
    }
  };
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' && downAt === null) {
        downAt = performance.now();
        emit({ type: 'down', servers, atEpochMs: Date.now() });
      } else if (s.type === 'reconnect' && downAt !== null) {
        emit({ type: 'up', servers, outageMs: performance.now() - downAt });
        downAt = null;
      }
    }
  })().catch(() => {});
}
