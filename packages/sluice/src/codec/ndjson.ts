/**
 * NDJSON framing with a per-line byte cap and an items-per-request cap.
 *
 * Push-based and synchronous (one callback per line, no promise per item). A line longer
 * than `maxLineBytes` throws SLUICE_LINE_TOO_LARGE as soon as the partial line crosses
 * the cap, before its newline arrives: a 2 GiB line costs `maxLineBytes` of memory, not
 * 2 GiB. Lines are views into the pushed chunks when they fit in one chunk (no copy).
 * A trailing `\r` is stripped (CRLF framing); blank lines are skipped but counted in the
 * 1-based line numbers that results report.
 */
import { ErrorCode, SluiceError, invalidOption } from '../core/errors.js';

export interface FramingLimits {
  /** Bytes per line (without its newline), at most. @default 1 MiB */
  maxLineBytes: number;
  /** Non-blank lines per request, at most. @default 100_000 */
  maxItems: number;
}

export const FRAMING_DEFAULTS: Readonly<FramingLimits> = Object.freeze({
  maxLineBytes: 2 ** 20,
  maxItems: 100_000,
});

export type OnLine = (line: Buffer, lineNo: number) => void;

const NL = 0x0a;
const CR = 0x0d;

export class NdjsonFramer {
  readonly limits: FramingLimits;
  private parts: Buffer[] = [];
  private partBytes = 0;
  private lineNo = 0;
  private items = 0;

  constructor(
    private readonly onLine: OnLine,
    limits: Partial<FramingLimits> = {},
  ) {
    const l = { ...FRAMING_DEFAULTS };
    if (limits.maxLineBytes !== undefined) l.maxLineBytes = limits.maxLineBytes;
    if (limits.maxItems !== undefined) l.maxItems = limits.maxItems;
    if (!Number.isInteger(l.maxLineBytes) || l.maxLineBytes < 1) throw invalidOption('maxLineBytes', l.maxLineBytes, 'an integer ≥ 1 (bytes)');
    if (!Number.isInteger(l.maxItems) || l.maxItems < 1) throw invalidOption('maxItems', l.maxItems, 'an integer ≥ 1');
    this.limits = l;
  }

  /** Non-blank lines framed so far. */
  itemCount(): number {
    return this.items;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NL, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      if (this.partBytes === 0) this.emit(piece);
      else {
        this.checkPartial(piece.length);
        this.parts.push(piece);
        const line = Buffer.concat(this.parts, this.partBytes + piece.length);
        this.parts = [];
        this.partBytes = 0;
        this.emit(line);
      }
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.checkPartial(rest.length);
      this.parts.push(rest);
      this.partBytes += rest.length;
    }
  }

  /** Ends the body: a last line without a newline is a line. */
  end(): void {
    if (this.partBytes > 0) {
      const line = Buffer.concat(this.parts, this.partBytes);
      this.parts = [];
      this.partBytes = 0;
      this.emit(line);
    }
  }

  private checkPartial(adding: number): void {
    // A trailing CR is not part of the line, so allow one byte for it before the newline.
    if (this.partBytes + adding > this.limits.maxLineBytes + 1) this.tooLarge(this.partBytes + adding);
  }

  private tooLarge(read: number): never {
    throw new SluiceError(ErrorCode.LineTooLarge, `line ${this.lineNo + 1} exceeds ${this.limits.maxLineBytes} bytes`, {
      details: { cap: 'line-bytes', limit: this.limits.maxLineBytes, line: this.lineNo + 1, read },
    });
  }

  private emit(line: Buffer): void {
    this.lineNo++;
    let len = line.length;
    if (len > 0 && line[len - 1] === CR) len--;
    if (len > this.limits.maxLineBytes) {
      this.lineNo--;
      this.tooLarge(len);
    }
    if (len === 0) return;
    if (++this.items > this.limits.maxItems)
      throw new SluiceError(ErrorCode.TooManyItems, `request holds more than ${this.limits.maxItems} items`, {
        details: { cap: 'items', limit: this.limits.maxItems, line: this.lineNo },
      });
    this.onLine(len === line.length ? line : line.subarray(0, len), this.lineNo);
  }
}
