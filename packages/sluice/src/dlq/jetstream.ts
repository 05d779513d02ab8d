/**
 * Dead letters in a JetStream stream (created if missing, file storage). Each entry is one
 * message on `<stream>.letters`, published with a message id (`<id>:<deadLetteredAt>`) so a
 * retried append is de-duplicated by the server; `append()` resolves after every PubAck,
 * i.e. once the stream has stored them.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { ensureStream, manager } from '../sources/nats.js';
import { parseEntry, type DeadLetterEntry, type DeadLetterStore } from './store.js';

export class JetStreamDeadLetterStore implements DeadLetterStore {
  readonly describe: string;
  readonly subject: string;
  private js: JetStreamClient;
  private jsm: JetStreamManager | null = null;

  constructor(
    private readonly nc: NatsConnection,
    readonly stream = 'SLUICE_DLQ',
  ) {
    this.describe = `jetstream:${stream}`;
    this.subject = `${stream}.letters`;
    this.js = jetstream(nc);
  }

  async open(): Promise<this> {
    if (!this.jsm) {
      this.jsm = await manager(this.nc);
      await ensureStream(this.jsm, this.stream, [this.subject]);
    }
    return this;
  }

  async append(entries: readonly DeadLetterEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.open();
    await Promise.all(entries.map((e) => this.js.publish(this.subject, JSON.stringify(e), { msgID: `${e.id}:${e.deadLetteredAt}:${e.attempts}` })));
  }

  async list(): Promise<DeadLetterEntry[]> {
    await this.open();
    const info = await this.jsm!.streams.info(this.stream);
    const out: DeadLetterEntry[] = [];
    if (info.state.messages === 0) return out;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await this.jsm!.streams.getMessage(this.stream, { seq });
      if (m) out.push(parseEntry(m.json(), `${this.stream} seq ${seq}`));
    }
    return out;
  }

  async count(): Promise<number> {
    await this.open();
    return (await this.jsm!.streams.info(this.stream)).state.messages;
  }

  async deleteStream(): Promise<void> {
    await this.open();
    await this.jsm!.streams.delete(this.stream);
  }

  /** The connection belongs to the caller. */
  async close(): Promise<void> {}
}
