/**
 * Sluice's small request/response protocol over TCP, used by the TCP sink and receiver.
 *
 * request  = header (16 bytes) + body (NDJSON, `bodyLength` bytes)
 *   header = magic u16 0x534c ('SL') | version u8 (1) | reserved u8 (0)
 *          | seq u32 | itemCount u32 | bodyLength u32            (all big-endian)
 * response = ack (8 bytes) = seq u32 | status u8 | 3 reserved bytes
 *   status 0 = committed, 1 = rejected because of an item (split and retry),
 *          2 = transient failure (retry the whole batch)
 *
 * The client writes the header and then the body as two separate writes and waits for the
 * ack: the shape of many real protocols (a length prefix, then the payload) and exactly the
 * one that meets the Nagle + delayed-ACK stall when `noDelay` is off (docs/wire.md).
 */
export const TCP_MAGIC = 0x534c;
export const TCP_VERSION = 1;
export const TCP_HEADER_BYTES = 16;
export const TCP_ACK_BYTES = 8;

export const AckStatus = { Committed: 0, ItemRejected: 1, Transient: 2 } as const;
export type AckStatusValue = (typeof AckStatus)[keyof typeof AckStatus];

export interface RequestHeader {
  seq: number;
  itemCount: number;
  bodyLength: number;
}

export function encodeHeader(h: RequestHeader): Buffer {
  const b = Buffer.alloc(TCP_HEADER_BYTES);
  b.writeUInt16BE(TCP_MAGIC, 0);
  b.writeUInt8(TCP_VERSION, 2);
  b.writeUInt8(0, 3);
  b.writeUInt32BE(h.seq >>> 0, 4);
  b.writeUInt32BE(h.itemCount >>> 0, 8);
  b.writeUInt32BE(h.bodyLength >>> 0, 12);
  return b;
}

/** Parses a header; throws on a wrong magic or version (the peer is not speaking this protocol). */
export function decodeHeader(b: Buffer, offset = 0): RequestHeader {
  const magic = b.readUInt16BE(offset);
  const version = b.readUInt8(offset + 2);
  if (magic !== TCP_MAGIC || version !== TCP_VERSION) throw new Error(`bad frame header (magic 0x${magic.toString(16)}, version ${version})`);
  return { seq: b.readUInt32BE(offset + 4), itemCount: b.readUInt32BE(offset + 8), bodyLength: b.readUInt32BE(offset + 12) };
}

export function encodeAck(seq: number, status: AckStatusValue): Buffer {
  const b = Buffer.alloc(TCP_ACK_BYTES);
  b.writeUInt32BE(seq >>> 0, 0);
  b.writeUInt8(status, 4);
  return b;
}

export function decodeAck(b: Buffer, offset = 0): { seq: number; status: number } {
  return { seq: b.readUInt32BE(offset), status: b.readUInt8(offset + 4) };
}

/**
 * Accumulates stream chunks and hands out exact-length slices without re-concatenating
 * the whole backlog on every chunk.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  length = 0;

  push(c: Buffer): void {
    if (c.length === 0) return;
    this.chunks.push(c);
    this.length += c.length;
  }

  /** Removes and returns the first `n` bytes (caller checked `length >= n`). */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      this.length -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const k = Math.min(n - off, c.length - this.head);
      c.copy(out, off, this.head, this.head + k);
      off += k;
      this.head += k;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.length -= n;
    return out;
  }
}
