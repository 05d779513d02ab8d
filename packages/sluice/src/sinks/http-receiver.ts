/**
 * A minimal HTTP receiver for the HTTP sink's tests and the lab (not `sluice serve`): it
 * counts the bytes read at each accepted socket, decodes the body by its
 * `Content-Encoding`, counts NDJSON lines and answers 204 — or whatever `respond` says.
 * Binds 127.0.0.1 on port 0 unless told otherwise.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { codecForContentEncoding } from '../codec/compress.js';
import { SocketByteCounter } from './wire-counter.js';

export interface ReceivedBatch {
  contentEncoding: string | null;
  bodyBytes: number;
  decodedBytes: number;
  lines: number;
}

export interface HttpReceiverOptions {
  port?: number;
  host?: string;
  /** Status to answer for a batch (default 204). Called after the body was decoded. */
  respond?: (batch: ReceivedBatch, requestNo: number) => number;
  /** Decoded body cap per request. @default 64 MiB */
  maxDecodedBytes?: number;
  /** Keep every decoded body (tests). @default false */
  keepBodies?: boolean;
}

export interface HttpReceiverStats {
  requests: number;
  /** Lines (records) decoded from accepted (2xx) requests. */
  acceptedLines: number;
  bodyBytes: number;
  decodedBytes: number;
  /** Bytes read at the receiver's sockets: request lines, headers, bodies. */
  wireBytesIn: number;
  wireBytesOut: number;
  connections: number;
  badRequests: number;
}

export class HttpReceiver {
  readonly bodies: Buffer[] = [];
  private readonly server: http.Server;
  private readonly counter = new SocketByteCounter();
  private readonly s = { requests: 0, acceptedLines: 0, bodyBytes: 0, decodedBytes: 0, badRequests: 0 };

  private constructor(private readonly opts: HttpReceiverOptions) {
    this.server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => this.handle(req, res));
    this.server.on('connection', (socket) => this.counter.track(socket));
  }

  static async start(opts: HttpReceiverOptions = {}): Promise<HttpReceiver> {
    const r = new HttpReceiver(opts);
    await new Promise<void>((resolve, reject) => {
      r.server.once('error', reject);
      r.server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
    });
    return r;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `http://${a.address}:${a.port}/ingest`;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const requestNo = ++this.s.requests;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void this.finish(req, res, Buffer.concat(chunks), requestNo);
    });
  }

  private async finish(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, requestNo: number): Promise<void> {
    const enc = req.headers['content-encoding'] ?? null;
    const codec = codecForContentEncoding(enc ?? undefined);
    this.s.bodyBytes += body.length;
    if (!codec) {
      this.s.badRequests++;
      res.writeHead(415).end(`unsupported content-encoding ${enc}`);
      return;
    }
    let decoded: Buffer;
    try {
      decoded = await codec.decompress(body, this.opts.maxDecodedBytes ?? 64 * 1024 * 1024);
    } catch (e) {
      this.s.badRequests++;
      res.writeHead(400).end(`cannot decode: ${(e as Error).message}`);
      return;
    }
    let lines = 0;
    for (let i = 0; i < decoded.length; i++) if (decoded[i] === 0x0a) lines++;
    const batch: ReceivedBatch = { contentEncoding: enc, bodyBytes: body.length, decodedBytes: decoded.length, lines };
    const status = this.opts.respond?.(batch, requestNo) ?? 204;
    if (status >= 200 && status < 300) {
      this.s.acceptedLines += lines;
      this.s.decodedBytes += decoded.length;
      if (this.opts.keepBodies) this.bodies.push(decoded);
    }
    res.writeHead(status).end();
  }

  stats(): HttpReceiverStats {
    const w = this.counter.totals();
    return { ...this.s, wireBytesIn: w.in, wireBytesOut: w.out, connections: w.connections };
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
