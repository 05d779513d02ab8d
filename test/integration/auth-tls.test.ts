/**
 * TLS on serve, with certificates made here by openssl (test/helpers/certs.ts): curl over
 * mutual TLS (a client without a certificate, or with one from another CA, never gets an HTTP
 * answer, and nothing of it is stored); a certificate reload under load drops no request and
 * new handshakes see the new certificate; `sluice serve` wires the flags and reloads on SIGHUP.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import { doorServer, reconcile } from '../helpers/doors.js';
import { makePki, writeTokens, type Pki } from '../helpers/certs.js';
import { hashToken } from '../../packages/sluice/src/sources/auth.js';

const TOKEN = 'mtls-writer-token-0123456789abcdef01';
let pki: Pki;
let other: Pki;
let tokensFile: string;
before(() => {
  pki = makePki();
  other = makePki();
  tokensFile = writeTokens(pki.dir, [{ name: 'writer', token: TOKEN, routes: ['ingest'] }]);
});
after(() => {
  pki.remove();
  other.remove();
});

function curl(args: string[]): Promise<{ code: number; status: number; out: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', '--max-time', '20', ...args], (err, stdout) => {
      const lines = stdout.trimEnd().split('\n');
      const status = Number(lines.pop());
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, status, out: lines.join('\n') });
    });
  });
}

test('curl over mutual TLS: a client certificate from the CA and a token write; no certificate, a foreign one, or no token do not', async () => {
  const server = pki.issue('mtls-server', 'server');
  const client = pki.issue('mtls-client', 'client');
  const foreign = other.issue('foreign-client', 'client');
  const d = await doorServer({ tls: { cert: server.cert, key: server.key, clientCa: pki.caCert }, auth: { tokensFile } });
  try {
    const body = join(pki.dir, 'body.ndjson');
    const send = (prefix: string, n: number) => {
      writeFileSync(body, Array.from({ length: n }, (_, i) => JSON.stringify({ key: `${prefix}-${i}` }) + '\n').join(''));
      return ['--cacert', pki.caCert, '-H', 'content-type: application/x-ndjson', '--data-binary', `@${body}`, `${d.srv.url}/ingest`];
    };
    const good = await curl(['--cert', client.cert, '--key', client.key, '-H', `authorization: Bearer ${TOKEN}`, ...send('ok', 100)]);
    assert.equal(good.code, 0);
    assert.equal(good.status, 200, good.out);
    // No client certificate, or one another CA signed: the handshake fails, no HTTP status at all.
    const noCert = await curl(['-H', `authorization: Bearer ${TOKEN}`, ...send('nocert', 10)]);
    assert.notEqual(noCert.code, 0);
    assert.equal(noCert.status, 0);
    const foreignCert = await curl(['--cert', foreign.cert, '--key', foreign.key, '-H', `authorization: Bearer ${TOKEN}`, ...send('foreign', 10)]);
    assert.notEqual(foreignCert.code, 0);
    assert.equal(foreignCert.status, 0);
    // The right certificate without a token: 401 (both are required when both are configured).
    const noToken = await curl(['--cert', client.cert, '--key', client.key, ...send('notoken', 10)]);
    assert.equal(noToken.status, 401);
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, Array.from({ length: 100 }, (_, i) => `ok-${i}`), ledger);
  } finally {
    await d.finish();
  }
});

test('a certificate reload under load drops no request; new handshakes get the new certificate', async () => {
  const a = pki.issue('reload-a', 'server');
  const b = pki.issue('reload-b', 'server');
  const live = { cert: join(pki.dir, 'live.crt'), key: join(pki.dir, 'live.key') };
  copyFileSync(a.cert, live.cert);
  copyFileSync(a.key, live.key);
  const d = await doorServer({ tls: live, auth: { tokensFile } });
  try {
    const ca = readFileSync(pki.caCert);
    const seen = new Map<string, number>();
    const statuses = new Map<number, number>();
    const sent: string[] = [];
    // One keep-alive agent (its connections span the reloads) and fresh connections (each a new handshake).
    const keepAlive = new https.Agent({ keepAlive: true, maxSockets: 2, ca });
    const one = (key: string, fresh: boolean) =>
      new Promise<void>((resolve, reject) => {
        const req = https.request(`${d.srv.url}/ingest`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-ndjson' },
          ...(fresh ? { agent: false, ca } : { agent: keepAlive }),
        });
        req.on('response', (res) => {
          const fp = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
          seen.set(fp, (seen.get(fp) ?? 0) + 1);
          statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1);
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', reject);
        req.end(JSON.stringify({ key }) + '\n');
      });
    let stop = false;
    const workers = Array.from({ length: 4 }, (_, w) =>
      (async () => {
        for (let i = 0; !stop || i < 20; i++) {
          const key = `w${w}-${i}`;
          sent.push(key);
          await one(key, w % 2 === 0);
        }
      })(),
    );
    // Swap the certificate 6 times while the load runs, each time once requests have gone through.
    for (let k = 0; k < 6; k++) {
      const before = sent.length;
      while (sent.length < before + 8) await new Promise((r) => setTimeout(r, 10));
      const next = k % 2 === 0 ? b : a;
      copyFileSync(next.cert, live.cert);
      copyFileSync(next.key, live.key);
      d.srv.reload();
    }
    stop = true;
    await Promise.all(workers);
    keepAlive.destroy();
    assert.deepEqual([...statuses.keys()], [200], `statuses ${JSON.stringify([...statuses])}`);
    assert.equal([...statuses.values()][0], sent.length);
    // Both certificates served: handshakes after a reload got the other one.
    assert.deepEqual(new Set(seen.keys()), new Set([pki.fingerprint(a.cert), pki.fingerprint(b.cert)]), `seen ${JSON.stringify([...seen])}`);
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, sent, ledger);
  } finally {
    await d.finish();
  }
});

test('sluice serve --tls-cert --tls-key --tokens: serves HTTPS, reloads the certificate on SIGHUP; sluice token hash matches', async () => {
  const a = pki.issue('cli-a', 'server');
  const b = pki.issue('cli-b', 'server');
  const live = { cert: join(pki.dir, 'cli-live.crt'), key: join(pki.dir, 'cli-live.key') };
  copyFileSync(a.cert, live.cert);
  copyFileSync(a.key, live.key);
  const data = mkdtempSync(join(tmpdir(), 'sluice-auth-cli-'));
  const cli = ['--import', 'tsx', 'packages/sluice/src/cli/main.ts'];
  const hashed = spawnSync(process.execPath, [...cli, 'token', 'hash'], { input: TOKEN + '\n', encoding: 'utf8' });
  assert.equal(hashed.status, 0, hashed.stderr);
  assert.equal(hashed.stdout.trim(), hashToken(TOKEN));
  const child = spawn(process.execPath, [...cli, 'serve', '--port', '0', '--data-dir', data, '--tls-cert', live.cert, '--tls-key', live.key, '--tokens', tokensFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (l) => {
        const m = /listening on (https:\/\/\S+)/.exec(l);
        if (m) resolve(m[1]);
      });
      child.once('exit', (c) => reject(new Error(`serve exited ${c}: ${stderr.join('\n')}`)));
    });
    const fingerprint = () =>
      new Promise<string>((resolve, reject) => {
        const req = https.request(`${url}/ingest`, { method: 'POST', agent: false, ca: readFileSync(pki.caCert), headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
          assert.equal(res.statusCode, 200);
          res.resume();
          resolve((res.socket as TLSSocket).getPeerCertificate().fingerprint256);
        });
        req.on('error', reject);
        req.end('{"key":"cli"}\n');
      });
    assert.equal(await fingerprint(), pki.fingerprint(a.cert));
    copyFileSync(b.cert, live.cert);
    copyFileSync(b.key, live.key);
    child.kill('SIGHUP');
    while (!stderr.some((l) => l.startsWith('reloaded:'))) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await fingerprint(), pki.fingerprint(b.cert));
    assert.ok(child.exitCode === null, 'SIGHUP ended the server');
    child.kill('SIGTERM');
    await once(child, 'exit');
    assert.ok(stderr.some((l) => l.startsWith('auth: 1 tenants')), stderr.join('\n'));
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(data, { recursive: true, force: true });
  }
});
