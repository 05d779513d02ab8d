/**
 * The receiving end of the TCP request/response protocol (src/sinks/tcp-protocol.ts), for
 * the TCP sink's tests and the `nagle` experiment. For every complete request it answers
 * one 8-byte ack in a single write.
 *
 * `noDelay` (default true) is applied to every accepted socket. Node's `net` sockets start
 * with Nagle's algorithm on; see docs/wire.md for why it is turned off here by default.
 */
import net from 'node:net';
import { invalidOption } from '../core/errors.js';
import { AckStatus, ByteQueue, TCP_HEADER_BYTES, decodeHeader, encodeAck, type AckStatusValue, type RequestHeader } from './tcp-protocol.js';
import { SocketByteCounter } from './wire-counter.js';

export interface TcpReceivedBatch extends RequestHeader {
  body: Buffer;
}

export interface TcpReceiverOptions {
  host?: string;
  port?: number;
  /** `setNoDelay` on accepted sockets: true disables Nagle's algorithm. @default true */
  noDelay?: boolean;
  /** Largest body accepted; a larger frame closes the connection. @default 64 MiB */
  maxBodyBytes?: number;
  /** Ack status for a batch. @default committed */
  respond?: (batch: TcpReceivedBatch) => AckStatusValue;
  /** Keep every body (tests). @default false */
  keepBodies?: boolean;
}

export interface TcpReceiverStats {
  batches: number;
  /** Items in batches acked as committed. */
  items: number;
  bodyBytes: number;
  wireBytesIn: number;
  wireBytesOut: number;
  connections: number;
  protocolErrors: number;
}

export class TcpReceiver {
  readonly bodies: Buffer[] = [];
  readonly noDelay: boolean;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly counter = new SocketByteCounter();
  private readonly maxBodyBytes: number;
  private readonly s = { batches: 0, items: 0, bodyBytes: 0, protocolErrors: 0 };

  private constructor(private readonly opts: TcpReceiverOptions) {
    this.noDelay = opts.noDelay ?? true;
    this.maxBodyBytes = opts.maxBodyBytes ?? 64 * 1024 * 1024;
    if (!Number.isInteger(this.maxBodyBytes) || this.maxBodyBytes < 1) throw invalidOption('maxBodyBytes', opts.maxBodyBytes, 'an integer ≥ 1');
    this.server = net.createServer((socket) => this.accept(socket));
  }

  static async start(opts: TcpReceiverOptions = {}): Promise<TcpReceiver> {
    const r = new TcpReceiver(opts);
    await new Promise<void>((resolve, reject) => {
      r.server.once('error', reject);
      r.server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
    });
    void r.port;
    return r;
  }

  private bound: net.AddressInfo | null = null;

  /** The bound port (still readable after close). */
  get port(): number {
    this.bound ??= this.server.address() as net.AddressInfo;
    return this.bound.port;
  }

  get host(): string {
    this.bound ??= this.server.address() as net.AddressInfo;
    return this.bound.address;
  }

  private accept(socket: net.Socket): void {
    // Explicit either way: the default of an accepted socket is Nagle on.
    socket.setNoDelay(this.noDelay);
    this.sockets.add(socket);
    this.counter.track(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const q = new ByteQueue();
    let header: RequestHeader | null = null;
    socket.on('data', (chunk: Buffer) => {
      q.push(chunk);
      for (;;) {
        if (!header) {
          if (q.length < TCP_HEADER_BYTES) return;
          try {
            header = decodeHeader(q.take(TCP_HEADER_BYTES));
          } catch {
            this.s.protocolErrors++;
            socket.destroy();
            return;
          }
          if (header.bodyLength > this.maxBodyBytes) {
            this.s.protocolErrors++;
            socket.destroy();
            return;
          }
        }
        if (q.length < header.bodyLength) return;
        const body = q.take(header.bodyLength);
        const batch: TcpReceivedBatch = { ...header, body };
        header = null;
        const status = this.opts.respond?.(batch) ?? AckStatus.Committed;
        this.s.batches++;
        this.s.bodyBytes += body.length;
        if (status === AckStatus.Committed) {
          this.s.items += batch.itemCount;
          if (this.opts.keepBodies) this.bodies.push(Buffer.from(body));
        }
        socket.write(encodeAck(batch.seq, status));
      }
    });
  }

  stats(): TcpReceiverStats {
    const w = this.counter.totals();
    return { ...this.s, wireBytesIn: w.in, wireBytesOut: w.out, connections: w.connections };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
