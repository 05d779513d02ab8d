/**
 * Certificates for the TLS tests, made at test time with the system's `openssl` in a temp
 * directory (never committed): a CA, server certificates for 127.0.0.1/localhost signed by
 * it, and a client certificate for mutual TLS.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Pki {
  dir: string;
  caCert: string;
  /** Makes a key + certificate signed by the CA; `server` adds the 127.0.0.1/localhost names. */
  issue(name: string, kind: 'server' | 'client'): { cert: string; key: string };
  /** SHA-256 fingerprint of a PEM certificate file, as Node's getPeerCertificate().fingerprint256 spells it. */
  fingerprint(certFile: string): string;
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-pki-'));
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=sluice test CA'], dir);
  let serial = 1;
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    issue(name, kind) {
      const ext = join(dir, `${name}.ext`);
      writeFileSync(
        ext,
        kind === 'server'
          ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
          : 'extendedKeyUsage=clientAuth\n',
      );
      openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
      openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', String(++serial), '-days', '2', '-extfile', ext, '-out', `${name}.crt`], dir);
      return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
    },
    fingerprint(certFile) {
      return new X509Certificate(readFileSync(certFile)).fingerprint256;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A tokens file in `dir` from [tenant, token, routes, rate?] rows; returns its path. */
export function writeTokens(dir: string, rows: { name: string; token: string; routes: string[]; rate?: Record<string, number>; table?: string; stream?: string }[], file = 'tokens.json'): string {
  const path = join(dir, file);
  const hash = (t: string) => 'sha256:' + createHash('sha256').update(t).digest('hex');
  writeFileSync(path, JSON.stringify({ tokens: rows.map((r) => ({ name: r.name, hash: hash(r.token), routes: r.routes, ...(r.rate ? { rate: r.rate } : {}), ...(r.table ? { table: r.table } : {}), ...(r.stream ? { stream: r.stream } : {}) })) }, null, 2));
  return path;
}
