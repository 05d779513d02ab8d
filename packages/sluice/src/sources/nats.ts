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
 * Connects once (an unreachable server at start-up is one coded error), then reconnects for
 * ever through an outage of any length (issue 19: with the client's default of 10 attempts it
 * gave up after about 30 s, the consumer's iterator never settled and `sluice run` exited with
 * code 13). Reconnect waits `reconnectTimeWait` ± jitter so that many clients do not retry in
 * lockstep. `onStatus` hears once per outage that the broker went down and once that it came
 * back, with the outage length. @default onStatus logNatsStatus (stderr)
 */
export async function connectNats(url: string, timeoutMs = 3_000, onStatus: ((e: NatsStatusEvent) => void) | null = logNatsStatus): Promise<NatsConnection> {
  const { servers } = parseNatsUrl(url);
  try {
    const nc = await connect({
      servers,
      timeout: timeoutMs,
      name: 'sluice',
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1_000,
      reconnectJitter: 500,
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

/** Creates the stream if missing (file storage: a PubAck means the message is on disk). */
export async function ensureStream(jsm: JetStreamManager, stream: string, subjects: string[]): Promise<void> {
  try {
    await jsm.streams.info(stream);
    return;
  } catch {
    // missing: create below
  }
  try {
    await jsm.streams.add({ name: stream, subjects, storage: 'file' as never });
  } catch (cause) {
    // Two workers racing to create it: fine if it now exists.
    try {
      await jsm.streams.info(stream);
    } catch {
      throw new SluiceError(ErrorCode.SourceUnavailable, `cannot create JetStream stream ${stream}: ${(cause as Error).message}`, { cause });
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
