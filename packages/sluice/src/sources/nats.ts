/**
 * NATS connection and JetStream set-up shared by the JetStream source, producer and
 * dead-letter store. An unreachable server fails at start-up with one coded error naming
 * the endpoint, not with a stack trace at the first message.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
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

export async function connectNats(url: string, timeoutMs = 3_000): Promise<NatsConnection> {
  const { servers } = parseNatsUrl(url);
  try {
    return await connect({ servers, timeout: timeoutMs, name: 'sluice' });
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
