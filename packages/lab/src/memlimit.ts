/**
 * A memory limit for a child process: a cgroup the lab creates when it can (cgroup v1
 * `memory` hierarchy, or cgroup v2 with the memory controller), otherwise V8's heap limit.
 *
 * With a cgroup, the kernel kills the child (SIGKILL, shell status 137) when it exceeds the
 * limit and counts it in `memory.oom_control` (v1) / `memory.events` (v2) as `oom_kill`.
 * Swap is disabled for the group (memsw limit / swap.max 0) so the limit is a real one.
 * Measured on the reference machine: see ../shared/ECOSYSTEM.md.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export type LimitMechanism = 'cgroup-v1' | 'cgroup-v2' | 'v8-heap' | 'none';

export interface MemoryLimit {
  mechanism: LimitMechanism;
  limitMb: number;
  /** Why a cgroup could not be used (when mechanism is v8-heap). */
  note?: string;
  /** Command and arguments that start `cmd args` inside the limit. */
  wrap(cmd: string, args: string[]): [string, string[]];
  /** Kernel OOM kills in the group so far (0 without a cgroup). */
  oomKills(): number;
  /** Peak memory the group was charged, page cache included (MB), when the kernel reports it. */
  maxUsageMb(): number | null;
  /** Removes the cgroup (retries while its last processes exit). */
  remove(): Promise<void>;
}

const V1_ROOT = '/sys/fs/cgroup/memory';
const V2_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

function readCounter(path: string, key: string): number {
  try {
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(readFileSync(path, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The shell puts itself into the group, then becomes the command: nothing runs outside it. */
function cgroupWrap(procsFile: string) {
  return (cmd: string, args: string[]): [string, string[]] => ['/bin/sh', ['-c', 'echo $$ > "$1" && shift && exec "$@"', 'sh', procsFile, cmd, ...args]];
}

async function removeDir(path: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(path);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      await sleep(100);
    }
  }
}

export function createMemoryLimit(name: string, limitMb: number): MemoryLimit {
  const bytes = String(limitMb * 2 ** 20);
  const errors: string[] = [];
  // cgroup v1
  if (existsSync(join(V1_ROOT, 'memory.limit_in_bytes'))) {
    const dir = join(V1_ROOT, name);
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'memory.limit_in_bytes'), bytes);
      // memsw must be ≥ the memory limit, so it is written second; absent without swap accounting.
      if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), bytes);
      try {
        writeFileSync(join(dir, 'memory.swappiness'), '0');
      } catch {
        /* not settable in every kernel: the memsw limit already rules swap out */
      }
      return {
        mechanism: 'cgroup-v1',
        limitMb,
        wrap: cgroupWrap(join(dir, 'cgroup.procs')),
        oomKills: () => readCounter(join(dir, 'memory.oom_control'), 'oom_kill'),
        maxUsageMb: () => {
          try {
            return Math.round((Number(readFileSync(join(dir, 'memory.max_usage_in_bytes'), 'utf8')) / 2 ** 20) * 10) / 10;
          } catch {
            return null;
          }
        },
        remove: () => removeDir(dir),
      };
    } catch (e) {
      errors.push(`cgroup v1: ${(e as Error).message}`);
      void removeDir(dir);
    }
  }
  // cgroup v2 (only where the memory controller is enabled for children)
  for (const root of V2_ROOTS) {
    try {
      if (!readFileSync(join(root, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory')) continue;
    } catch {
      continue;
    }
    const dir = join(root, name);
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'memory.max'), bytes);
      if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
      return {
        mechanism: 'cgroup-v2',
        limitMb,
        wrap: cgroupWrap(join(dir, 'cgroup.procs')),
        oomKills: () => readCounter(join(dir, 'memory.events'), 'oom_kill'),
        maxUsageMb: () => {
          try {
            return Math.round((Number(readFileSync(join(dir, 'memory.peak'), 'utf8')) / 2 ** 20) * 10) / 10;
          } catch {
            return null;
          }
        },
        remove: () => removeDir(dir),
      };
    } catch (e) {
      errors.push(`cgroup v2 ${root}: ${(e as Error).message}`);
      void removeDir(dir);
    }
  }
  // Fallback: V8's old-space limit. The runtime aborts ("heap out of memory") instead of the kernel killing.
  return {
    mechanism: 'v8-heap',
    limitMb,
    note: errors.length > 0 ? errors.join('; ') : 'no writable memory cgroup hierarchy',
    wrap: (cmd, args) => [cmd, [`--max-old-space-size=${limitMb}`, ...args]],
    oomKills: () => 0,
    maxUsageMb: () => null,
    remove: async () => {},
  };
}
