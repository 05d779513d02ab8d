import os from 'node:os';
import type { HostInfo } from './types.js';

export function hostInfo(): HostInfo {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    nodeVersion: process.version,
    platform: `${os.platform()} ${os.release()}`,
    totalMemMb: Math.round(os.totalmem() / 2 ** 20),
    hostname: os.hostname(),
  };
}
