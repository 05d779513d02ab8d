/**
 * A loopback packet capture for the `nagle` experiment, with `tcpdump` when it is installed
 * (Debian package; the lab never installs it itself) and the process may capture (root or
 * CAP_NET_RAW). Everything here is optional: `startCapture` resolves to null with a reason
 * when a capture cannot run, and the experiment says so.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface Segment {
  /** Seconds (epoch, µs resolution). */
  t: number;
  srcPort: number;
  dstPort: number;
  flags: string;
  length: number;
}

export interface RunningCapture {
  file: string;
  stop(): Promise<Segment[]>;
}

function findTcpdump(): string | null {
  for (const p of ['/usr/bin/tcpdump', '/usr/sbin/tcpdump', '/sbin/tcpdump']) if (existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v tcpdump'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/** Starts `tcpdump -i lo` on one TCP port; null (with why) when it cannot. */
export async function startCapture(port: number, file: string, maxPackets = 20_000): Promise<{ capture: RunningCapture | null; reason: string | null }> {
  const bin = findTcpdump();
  if (!bin) return { capture: null, reason: 'tcpdump is not installed (apt-get install -y tcpdump)' };
  const child: ChildProcess = spawn(bin, ['-i', 'lo', '--immediate-mode', '-U', '-n', '-s', '128', '-c', String(maxPackets), '-w', file, 'tcp', 'port', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 5000);
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (stderr.includes('listening on')) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
    child.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (!ready) {
    if (child.exitCode === null) child.kill('SIGTERM');
    return { capture: null, reason: `tcpdump did not start: ${stderr.trim().split('\n').pop() ?? 'no output'}` };
  }
  const capture: RunningCapture = {
    file,
    async stop() {
      // Let the last packets reach the file (--immediate-mode delivers each packet at once, -U
      // writes it at once), then stop our own child.
      await new Promise((r) => setTimeout(r, 200));
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      return readCapture(bin, file);
    },
  };
  return { capture, reason: null };
}

const LINE = /^(\d+\.\d+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+): Flags \[([^\]]*)\].*length (\d+)/;

export function readCapture(bin: string, file: string): Segment[] {
  const r = spawnSync(bin, ['-r', file, '-n', '-tt'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const out: Segment[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = LINE.exec(line);
    if (m) out.push({ t: Number(m[1]), srcPort: Number(m[2]), dstPort: Number(m[3]), flags: m[4], length: Number(m[5]) });
  }
  return out;
}

export interface RequestTiming {
  /** Header segment (client → server, `headerBytes` long) to the first body byte on the wire, ms. */
  headerToBodyMs: number;
  /** Whether the receiver sent a pure ACK (no data) between the header and the body. */
  ackBeforeBody: boolean;
  /** Header to that pure ACK, ms (the receiver's delayed ACK), when there was one. */
  headerToAckMs: number | null;
}

/**
 * Walks the segments of one connection: for each request header sent by the client, when
 * did the body follow, and did a bare ACK from the receiver come first (the delayed ACK
 * that releases a body held back by Nagle)?
 */
export function requestTimings(segs: readonly Segment[], serverPort: number, headerBytes: number): RequestTiming[] {
  const out: RequestTiming[] = [];
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    if (s.dstPort !== serverPort || s.length !== headerBytes) continue;
    let ackAt: number | null = null;
    for (let j = i + 1; j < segs.length; j++) {
      const n = segs[j];
      if (n.srcPort === serverPort && n.length === 0 && ackAt === null) ackAt = n.t;
      if (n.dstPort === serverPort && n.length > 0) {
        out.push({
          headerToBodyMs: (n.t - s.t) * 1000,
          ackBeforeBody: ackAt !== null,
          headerToAckMs: ackAt === null ? null : (ackAt - s.t) * 1000,
        });
        break;
      }
      if (n.srcPort === serverPort && n.length > 0) break; // an answer before any body: not this shape
    }
  }
  return out;
}

/**
 * The segments of the `nth` request (0-based) of a capture, one line each, times relative
 * to its header: the readable proof of what the timings summarise.
 */
export function describeExchange(segs: readonly Segment[], serverPort: number, headerBytes: number, nth: number, ackBytes: number): string[] {
  let seen = -1;
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    if (s.dstPort !== serverPort || s.length !== headerBytes || ++seen !== nth) continue;
    const lines: string[] = [];
    for (let j = i; j < segs.length; j++) {
      const n = segs[j];
      const dir = n.dstPort === serverPort ? 'client → receiver' : 'receiver → client';
      const what =
        n.dstPort === serverPort
          ? n.length === headerBytes && j === i
            ? 'header'
            : n.length > 0
              ? 'body'
              : 'bare ACK'
          : n.length === ackBytes
            ? 'batch ack'
            : n.length === 0
              ? 'bare ACK'
              : 'data';
      lines.push(`+${((n.t - s.t) * 1000).toFixed(3).padStart(8)} ms  ${dir}  [${n.flags}] ${String(n.length).padStart(4)} B  ${what}`);
      if (n.srcPort === serverPort && n.length === ackBytes) break;
    }
    return lines;
  }
  return [];
}
