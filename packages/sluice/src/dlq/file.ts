/**
 * The embedded dead-letter store: one JSON object per line, appended and fdatasync'ed
 * before `append()` resolves. Appends are serialized (batches finish concurrently when
 * `maxInFlight > 1`), so lines never interleave.
 */
import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, SluiceError } from '../core/errors.js';
import { parseEntry, type DeadLetterEntry, type DeadLetterStore } from './store.js';

export class FileDeadLetterStore implements DeadLetterStore {
  readonly describe: string;
  private fh: FileHandle | null = null;
  private tail: Promise<void> = Promise.resolve();
  private appended = 0;

  constructor(readonly path: string) {
    this.describe = `file:${path}`;
  }

  async open(): Promise<this> {
    if (!this.fh) {
      await mkdir(dirname(this.path), { recursive: true });
      this.fh = await open(this.path, 'a');
    }
    return this;
  }

  append(entries: readonly DeadLetterEntry[]): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    const buf = Buffer.from(entries.map((e) => JSON.stringify(e) + '\n').join(''));
    const next = this.tail.then(async () => {
      const fh = (await this.open()).fh!;
      let off = 0;
      while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
      await fh.datasync();
      this.appended += entries.length;
    });
    this.tail = next.catch(() => {});
    return next;
  }

  /** Entries appended through this handle. */
  appendedCount(): number {
    return this.appended;
  }

  async list(): Promise<DeadLetterEntry[]> {
    await this.tail;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: DeadLetterEntry[] = [];
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] === '') continue;
      let v: unknown;
      try {
        v = JSON.parse(lines[i]);
      } catch (cause) {
        throw new SluiceError(ErrorCode.Corrupt, `${this.path}:${i + 1}: not valid JSON`, { cause, details: { line: i + 1 } });
      }
      out.push(parseEntry(v, `${this.path}:${i + 1}`));
    }
    return out;
  }

  async count(): Promise<number> {
    return (await this.list()).length;
  }

  async close(): Promise<void> {
    await this.tail;
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close();
  }
}
