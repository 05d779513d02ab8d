/**
 * TCP request/response sink: one batch = a 16-byte header write, then a body write, then
 * wait for the receiver's 8-byte ack (protocol in src/sinks/tcp-protocol.ts). One request
 * is outstanding per connection; concurrent `write`s queue behind it.
 *
 * `noDelay` defaults to true. With Nagle's algorithm on (Node's default for `net.Socket`),
 * the body write is held back until the header is acknowledged, while the receiver — which
 * has nothing to answer until the body arrives — delays that ACK (Linux: 40 ms minimum).
 * Every round-trip then costs ≈ 40 ms instead of ≈ 0.05 ms: measured by `sluice lab nagle`,
 * explained in docs/wire.md.
 */
import net from 'node:net';
import { SinkError, invalidOption } from '../core/errors.js';
import type { Envelope, FixedCostKind, Sink } from '../core/types.js';
import { ndjsonBatch } from './serialize.js';
import { AckStatus, ByteQueue, TCP_ACK_BYTES, decodeAck, encodeHeader } from './tcp-protocol.js';
import { SocketByteCounter } from './wire-counter.js';

export interface TcpSinkOptions {
  host?: string;
  port: number;
  /** `setNoDelay` on the client socket: true disables Nagle's algorithm. @default true */
  noDelay?: boolean;
  /** Deadline for one request (connect + send + ack), ms. @default 10_000 */
  timeoutMs?: number;
}

export interface TcpSinkStats {
  /** Requests sent (header + body written); each is one round-trip. */
  requests: number;
  acks: number;
  items: number;
  bodyBytes: number;
  wireBytesOut: number;
  wireBytesIn: number;
  connections: number;
  /** Round-trip of the last acknowledged batch (first write → ack read), ms. */
  lastRoundTripMs: number;
}

interface Pending {
  seq: number;
  resolve: (status: number) => void;
  reject: (e: Error) => void;
}

export class TcpSink<T = unknown> implements Sink<T> {
  readonly name = 'tcp';
  readonly fixedCostKind: FixedCostKind = 'round-trip';
  readonly noDelay: boolean;
  private readonly host: string;
  private readonly port: number;
  private readonly timeoutMs: number;
  private readonly counter = new SocketByteCounter();
  private socket: net.Socket | null = null;
  private connecting: Promise<net.Socket> | null = null;
  private pending: Pending | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private closed = false;
  private readonly s = { requests: 0, acks: 0, items: 0, bodyBytes: 0, lastRoundTripMs: 0 };

  constructor(opts: TcpSinkOptions) {
    this.host = opts.host ?? '127.0.0.1';
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw invalidOption('port', opts.port, 'an integer in [1, 65535]');
    this.port = opts.port;
    this.noDelay = opts.noDelay ?? true;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    if (!(this.timeoutMs > 0)) throw invalidOption('timeoutMs', opts.timeoutMs, 'a number > 0');
  }

  write(batch: readonly Envelope<T>[]): Promise<void> {
    // One request outstanding per connection: chain behind the previous write.
    const run = this.tail.then(
      () => this.send(batch),
      () => this.send(batch),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async send(batch: readonly Envelope<T>[]): Promise<void> {
    if (this.closed) throw new SinkError('transient', 'tcp sink is closed', { sinkCode: 'CLOSED' });
    const body = ndjsonBatch(batch);
    const deadline = performance.now() + this.timeoutMs;
    const socket = await this.connect();
    const seq = (this.seq = (this.seq + 1) >>> 0);
    const t0 = performance.now();
    const acked = new Promise<number>((resolve, reject) => {
      this.pending = { seq, resolve, reject };
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const e = new SinkError('transient', `tcp sink: no ack within ${this.timeoutMs} ms`, { sinkCode: 'ETIMEDOUT' });
        this.drop(e);
        reject(e);
      }, Math.max(1, deadline - performance.now()));
    });
    // Two separate writes on purpose (see the file comment): never corked or concatenated.
    socket.write(encodeHeader({ seq, itemCount: batch.length, bodyLength: body.length }));
    socket.write(body);
    this.s.requests++;
    this.s.bodyBytes += body.length;
    let status: number;
    try {
      status = await Promise.race([acked, timeout]);
    } finally {
      clearTimeout(timer);
    }
    this.s.lastRoundTripMs = performance.now() - t0;
    this.s.acks++;
    if (status === AckStatus.Committed) {
      this.s.items += batch.length;
      return;
    }
    if (status === AckStatus.ItemRejected)
      throw new SinkError('item', `tcp sink: receiver rejected batch ${seq} because of an item`, { sinkCode: 'ACK_ITEM', details: { seq } });
    throw new SinkError('transient', `tcp sink: receiver answered status ${status} for batch ${seq}`, { sinkCode: `ACK_${status}`, details: { seq } });
  }

  private connect(): Promise<net.Socket> {
    if (this.socket) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port, noDelay: this.noDelay });
      const onConnectError = (e: Error & { code?: string }) => {
        this.connecting = null;
        socket.destroy();
        reject(new SinkError('transient', `tcp sink: cannot connect to ${this.host}:${this.port}: ${e.message}`, { cause: e, sinkCode: e.code ?? 'ECONN' }));
      };
      const connectTimer = setTimeout(() => onConnectError(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), this.timeoutMs);
      socket.once('error', onConnectError);
      socket.once('connect', () => {
        clearTimeout(connectTimer);
        socket.off('error', onConnectError);
        // Explicit either way; `net.connect`'s own default is Nagle on.
        socket.setNoDelay(this.noDelay);
        this.counter.track(socket);
        this.attach(socket);
        this.socket = socket;
        this.connecting = null;
        resolve(socket);
      });
    });
    return this.connecting;
  }

  private attach(socket: net.Socket): void {
    const q = new ByteQueue();
    socket.on('data', (chunk: Buffer) => {
      q.push(chunk);
      while (q.length >= TCP_ACK_BYTES) {
        const ack = decodeAck(q.take(TCP_ACK_BYTES));
        const p = this.pending;
        if (!p || p.seq !== ack.seq) {
          this.drop(new SinkError('transient', `tcp sink: unexpected ack ${ack.seq}`, { sinkCode: 'PROTOCOL' }));
          return;
        }
        this.pending = null;
        p.resolve(ack.status);
      }
    });
    const lost = (e?: Error & { code?: string }) => {
      if (this.socket !== socket) return;
      this.drop(new SinkError('transient', `tcp sink: connection lost${e ? `: ${e.message}` : ''}`, { cause: e, sinkCode: e?.code ?? 'ECONNRESET' }));
    };
    socket.on('error', lost);
    socket.on('close', () => lost());
  }

  /** Forgets the connection and fails the request in flight (its outcome is unknown: transient). */
  private drop(e: Error): void {
    const s = this.socket;
    this.socket = null;
    s?.destroy();
    const p = this.pending;
    this.pending = null;
    p?.reject(e);
  }

  fixedCostOps(): number {
    return this.s.requests;
  }

  stats(): TcpSinkStats {
    const w = this.counter.totals();
    return { ...this.s, wireBytesOut: w.out, wireBytesIn: w.in, connections: w.connections };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    const s = this.socket;
    this.socket = null;
    if (s) await new Promise<void>((resolve) => s.end(() => resolve()));
    s?.destroy();
  }
}
