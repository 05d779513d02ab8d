/**
 * The real-service harness for integration tests. Each test asks for a service; the
 * harness checks that it answers and hands back a URL plus a unique name for the test's
 * own table or stream. Outside CI a missing service skips the test with one line saying
 * what is missing; with CI=true it fails the test instead.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';

export const DEFAULT_DATABASE_URL = 'postgres://root@127.0.0.1:5432/test';
export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';

export const inCI = process.env.CI === 'true' || process.env.CI === '1';

function tcpReachable(host: string, port: number, timeoutMs = 1500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

async function require(t: TestContext, what: string, url: string, defaultPort: number): Promise<string | null> {
  const u = new URL(url);
  const ok = await tcpReachable(u.hostname, Number(u.port || defaultPort));
  if (ok) return url;
  const msg = `${what} not reachable at ${u.host} (set ${what === 'PostgreSQL' ? 'DATABASE_URL' : 'NATS_URL'})`;
  if (inCI) throw new Error(`${msg}: required in CI`);
  t.skip(msg);
  return null;
}

/** PostgreSQL URL, or null after skipping the test (outside CI). */
export function requirePostgres(t: TestContext): Promise<string | null> {
  return require(t, 'PostgreSQL', process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL, 5432);
}

/** NATS URL, or null after skipping the test (outside CI). */
export function requireNats(t: TestContext): Promise<string | null> {
  return require(t, 'NATS', process.env.NATS_URL ?? DEFAULT_NATS_URL, 4222);
}

/** A name unique to this test run: `sluice_t_<prefix>_<random>` (valid as a table or stream name). */
export function uniqueName(prefix: string): string {
  return `sluice_t_${prefix.replace(/[^a-zA-Z0-9_]/g, '_')}_${randomBytes(4).toString('hex')}`;
}
