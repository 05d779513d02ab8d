/**
 * Progress for `sluice tune`: a one-line bar redrawn in place on a terminal, plain lines (one
 * per phase) in a pipe or a log. A few lines of our own: the product takes no dependency for it.
 */
export interface Progress {
  update(done: number, total: number, phase: string): void;
  end(): void;
}

export function progressFor(stream: NodeJS.WriteStream): Progress {
  if (stream.isTTY) {
    let last = '';
    return {
      update(done, total, phase) {
        const width = 30;
        const share = total > 0 ? Math.min(1, done / total) : 0;
        const fill = Math.round(share * width);
        const line = `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${String(Math.round(share * 100)).padStart(3)}% ${phase}`;
        if (line === last) return;
        last = line;
        stream.write(`\r${line.padEnd(Math.max(last.length, stream.columns ? Math.min(stream.columns - 1, 80) : 60))}`);
      },
      end() {
        if (last) stream.write('\n');
      },
    };
  }
  let phase = '';
  return {
    update(done, total, p) {
      if (p === phase) return;
      phase = p;
      stream.write(`sluice tune: ${p} (${done}/${total} steps)\n`);
    },
    end() {},
  };
}
