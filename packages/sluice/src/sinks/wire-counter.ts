/**
 * Bytes on the wire, read at the socket: `socket.bytesWritten` / `socket.bytesRead` count
 * every byte handed to / read from the kernel on that connection (HTTP request line,
 * headers, chunk framing and body alike), never a figure estimated from payload sizes.
 *
 * A counter follows every socket it is shown; bytes of sockets that have closed are kept,
 * so the totals are exact at any quiescent point whatever the keep-alive pool did.
 */
import type { Socket } from 'node:net';

export interface WireBytes {
  /** Bytes written to sockets (what this side put on the wire). */
  out: number;
  /** Bytes read from sockets. */
  in: number;
  /** Distinct connections seen. */
  connections: number;
}

export class SocketByteCounter {
  private readonly live = new Set<Socket>();
  private closedOut = 0;
  private closedIn = 0;
  private connections = 0;

  /** Starts following `socket` (idempotent). */
  track(socket: Socket): void {
    if (this.live.has(socket)) return;
    this.live.add(socket);
    this.connections++;
    socket.once('close', () => {
      if (!this.live.delete(socket)) return;
      this.closedOut += socket.bytesWritten;
      this.closedIn += socket.bytesRead;
    });
  }

  totals(): WireBytes {
    let out = this.closedOut;
    let inb = this.closedIn;
    for (const s of this.live) {
      out += s.bytesWritten;
      inb += s.bytesRead;
    }
    return { out, in: inb, connections: this.connections };
  }
}
