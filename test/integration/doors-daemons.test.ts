/**
 * Real log shippers as daemons, each with its own config, ports, pid and work directory,
 * fed through its own syslog TCP input (never the system's /dev/log), delivering to a real
 * server over the Elasticsearch `_bulk` door, reconciled in the sink: 0 missing, 0 duplicated.
 * With CI=true a missing daemon fails; outside CI the test skips with one line.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { inCI } from '../helpers/services.js';
import { doorServer, reconcile } from '../helpers/doors.js';

const N = 2000;
const keys = (prefix: string) => Array.from({ length: N }, (_, i) => `${prefix}-${i}`);

function requireBinary(t: TestContext, path: string, what: string): boolean {
  if (existsSync(path)) return true;
  const msg = `${what} not installed (${path}; Debian packages in .ci/run)`;
  if (inCI) throw new Error(`${msg}: required in CI`);
  t.skip(msg);
  return false;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function waitForPort(port: number, daemon: ChildProcess, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (daemon.exitCode !== null) throw new Error(`daemon exited with ${daemon.exitCode}`);
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, '127.0.0.1', () => (c.destroy(), r(true)));
      c.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`port ${port} never opened`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sends RFC 3164 lines over TCP (newline framing), one per key. */
async function sendSyslog(port: number, lines: string[]): Promise<void> {
  const c = net.connect(port, '127.0.0.1');
  await new Promise<void>((r, j) => (c.once('connect', r), c.once('error', j)));
  for (const l of lines) if (!c.write(l + '\n')) await new Promise((r) => c.once('drain', r));
  await new Promise<void>((r) => c.end(r));
}

async function waitForRecords(path: string, n: number, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => '');
    if (text.split('\n').filter(Boolean).length >= n) return;
    if (Date.now() > until) throw new Error(`only ${text.split('\n').filter(Boolean).length} of ${n} records arrived`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

const keyOf = (r: unknown) => /key=([a-z]+-\d+)/.exec(String((r as { message?: unknown })?.message ?? ''))?.[1];

test('rsyslog omelasticsearch (bulkmode) → POST /_bulk: every line once', async (t) => {
  if (!requireBinary(t, '/usr/sbin/rsyslogd', 'rsyslogd') || !requireBinary(t, '/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so', 'rsyslog omelasticsearch')) return;
  const d = await doorServer();
  let daemon: ChildProcess | null = null;
  try {
    const work = join(d.dir, 'rsyslog');
    await mkdir(work, { recursive: true });
    const inPort = await freePort();
    const conf = join(work, 'rsyslog.conf');
    // The configuration docs/serve.md gives for rsyslog, with this test's ports and directories.
    await writeFile(
      conf,
      `global(workDirectory="${work}")
module(load="imtcp")
module(load="omelasticsearch")
input(type="imtcp" address="127.0.0.1" port="${inPort}" ruleset="to-sluice")
template(name="sluice-doc" type="list" option.jsonf="on") {
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="program" name="programname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}
ruleset(name="to-sluice") {
  action(type="omelasticsearch" server="127.0.0.1" serverport="${new URL(d.srv.url).port}" searchIndex="logs-rsyslog"
         template="sluice-doc" bulkmode="on" maxbytes="64k" esVersion.major="8"
         queue.type="linkedList" queue.size="20000" queue.dequeueBatchSize="500" action.resumeRetryCount="-1")
}
`,
    );
    daemon = spawn('/usr/sbin/rsyslogd', ['-n', '-f', conf, '-i', join(work, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    daemon.stdout!.on('data', (b) => (out += b));
    daemon.stderr!.on('data', (b) => (out += b));
    await waitForPort(inPort, daemon).catch((e) => assert.fail(`${e.message}: ${out}`));
    await sendSyslog(inPort, keys('rs').map((k) => `<14>May  1 12:00:00 doors-host app[1]: hello key=${k}`));
    await waitForRecords(d.path, N).catch((e) => assert.fail(`${e.message}: ${out}`));
    await stop(daemon);
    const { ledger, records } = await d.finish();
    reconcile(records, keyOf, keys('rs'), ledger);
    assert.equal((records[0] as { program: string }).program, 'app');
    assert.ok([...d.sink.indexOf.values()].every((ix) => ix === 'logs-rsyslog'));
  } finally {
    if (daemon) await stop(daemon);
    await d.finish();
  }
});

/**
 * syslog-ng conflicts with rsyslog in Debian (both provide system-log-daemon), so .ci/run
 * unpacks Debian's syslog-ng-core, syslog-ng-mod-http and syslog-ng-scl into a private prefix
 * (`dpkg-deb -x`, nothing installed system-wide) and the test runs that binary from there.
 */
const SYSLOG_NG_ROOT = process.env.SLUICE_SYSLOG_NG_ROOT ?? '/opt/sluice-test/syslog-ng';

test("syslog-ng elasticsearch-http() → POST /_bulk: every line once", async (t) => {
  const bin = join(SYSLOG_NG_ROOT, 'usr/sbin/syslog-ng');
  if (!requireBinary(t, bin, 'syslog-ng (unpacked by .ci/run)')) return;
  const d = await doorServer();
  let daemon: ChildProcess | null = null;
  try {
    const work = join(d.dir, 'syslog-ng');
    await mkdir(work, { recursive: true });
    const inPort = await freePort();
    const conf = join(work, 'syslog-ng.conf');
    // The configuration docs/serve.md gives for syslog-ng, with this test's ports and directories
    // (the SCL include is by absolute path because this binary lives in a private prefix).
    await writeFile(
      conf,
      `@version: 3.38
@include "${join(SYSLOG_NG_ROOT, 'usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf')}"
source s_in { network(ip("127.0.0.1") port(${inPort}) transport("tcp")); };
destination d_sluice {
  elasticsearch-http(url("${d.srv.url}/_bulk") index("logs-syslog-ng") type("") batch_lines(200) workers(1) timeout(10));
};
log { source(s_in); destination(d_sluice); };
`,
    );
    daemon = spawn(
      bin,
      ['-F', '-f', conf, `--module-path=${join(SYSLOG_NG_ROOT, 'usr/lib/syslog-ng/3.38')}`, '-R', join(work, 'persist'), '-c', join(work, 'ctl'), '-p', join(work, 'pid')],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LD_LIBRARY_PATH: join(SYSLOG_NG_ROOT, 'usr/lib/syslog-ng') } },
    );
    let out = '';
    daemon.stdout!.on('data', (b) => (out += b));
    daemon.stderr!.on('data', (b) => (out += b));
    await waitForPort(inPort, daemon).catch((e) => assert.fail(`${e.message}: ${out}`));
    await sendSyslog(inPort, keys('sg').map((k) => `<14>May  1 12:00:00 doors-host app[1]: hello key=${k}`));
    await waitForRecords(d.path, N).catch((e) => assert.fail(`${e.message}: ${out}`));
    await stop(daemon);
    const { ledger, records } = await d.finish();
    const keyOfSng = (r: unknown) => /key=([a-z]+-\d+)/.exec(String((r as { MESSAGE?: unknown })?.MESSAGE ?? ''))?.[1];
    reconcile(records, keyOfSng, keys('sg'), ledger);
    assert.equal((records[0] as { PROGRAM: string }).PROGRAM, 'app');
    assert.ok([...d.sink.indexOf.values()].every((ix) => ix === 'logs-syslog-ng'));
  } finally {
    if (daemon) await stop(daemon);
    await d.finish();
  }
});
