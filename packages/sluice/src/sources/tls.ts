/**
 * TLS for `sluice serve` (docs/serve.md, "Running it on a network"): the certificate and key
 * (PEM files), optionally a CA whose client certificates are required (mutual TLS). Files are
 * read at start and again on `reload` (SIGHUP in `sluice serve`): `setSecureContext` swaps the
 * context for new handshakes while connections already open keep theirs, so a renewed
 * certificate needs no restart and drops no request (test/integration/auth-tls.test.ts).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { invalidOption } from '../core/errors.js';

export interface TlsFiles {
  /** PEM certificate chain (leaf first). */
  cert: string;
  /** PEM private key. */
  key: string;
  /** PEM CA bundle: when given, clients must present a certificate it signed (mutual TLS). @default none */
  clientCa?: string;
}

function read(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw invalidOption(flag, path, `a readable PEM file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** The secure-context options from the files, checked by building a context (a key that does not match its certificate fails here). */
export function readTls(files: TlsFiles): tls.SecureContextOptions {
  const o: tls.SecureContextOptions = { cert: read('tls cert', files.cert), key: read('tls key', files.key) };
  if (files.clientCa !== undefined) o.ca = read('tls client CA', files.clientCa);
  try {
    tls.createSecureContext(o);
  } catch (e) {
    throw invalidOption('tls', `${files.cert}, ${files.key}${files.clientCa ? `, ${files.clientCa}` : ''}`, `a matching PEM certificate and key (${(e as Error).message})`);
  }
  return o;
}

/** An HTTP server, or an HTTPS one when `files` is given; both have the http.Server API the front door uses. */
export function createFrontDoorServer(files: TlsFiles | undefined, options: http.ServerOptions, handler: http.RequestListener): http.Server {
  if (!files) return http.createServer(options, handler);
  const secure = readTls(files);
  const server = https.createServer(
    {
      ...options,
      ...secure,
      // Mutual TLS: a client without a certificate the CA signed fails the handshake.
      requestCert: files.clientCa !== undefined,
      rejectUnauthorized: files.clientCa !== undefined,
      minVersion: 'TLSv1.2',
    },
    handler,
  );
  return server as unknown as http.Server;
}

/** Re-reads the files and swaps the context for new handshakes; on an error the old one stays and the error is thrown. */
export function reloadTls(server: http.Server, files: TlsFiles): void {
  (server as unknown as tls.Server).setSecureContext(readTls(files));
}
