/**
 * Who may write, driven by the shippers' own auth settings over TLS (certificates made here
 * with openssl, test/helpers/certs.ts): the Elasticsearch client with an API key, the OTLP
 * exporter with a bearer header, winston-loki with basic auth. A wrong or missing token is
 * refused and nothing from it reaches the sink (every record reconciled); a route the token
 * may not use is 403; /metrics needs a token of its own and names tenants, never tokens.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { Client, errors as esErrors } from '@elastic/elasticsearch';
import { LoggerProvider, BatchLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import winston from 'winston';
import LokiTransport from 'winston-loki';
import { doorServer, metricValue as metricExact, reconcile } from '../helpers/doors.js';
import { makePki, writeTokens, type Pki } from '../helpers/certs.js';
import type { RunningServer, ServeOptions } from '../../packages/sluice/src/sources/http.js';

/** A counter's value; `labels` as the server writes them, without its `pipeline` label. */
const metricValue = (srv: RunningServer, name: string, labels: string) => metricExact(srv, name, `${labels},pipeline="serve"`);

const N = 500;
const keys = (prefix: string, n = N) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
const T = {
  es: 'es-token-0123456789abcdef0123456789',
  otel: 'otel-token-0123456789abcdef01234567',
  loki: 'loki-token-0123456789abcdef01234567',
  ingest: 'ingest-token-0123456789abcdef012345',
  ops: 'ops-token-0123456789abcdef0123456789',
};

let pki: Pki;
let opts: Partial<ServeOptions>;
let ca: Buffer;

before(() => {
  pki = makePki();
  ca = readFileSync(pki.caCert);
  const server = pki.issue('server', 'server');
  const tokensFile = writeTokens(pki.dir, [
    { name: 'team-es', token: T.es, routes: ['bulk'] },
    { name: 'team-otel', token: T.otel, routes: ['otlp'] },
    { name: 'team-loki', token: T.loki, routes: ['loki'] },
    { name: 'team-ingest', token: T.ingest, routes: ['ingest'] },
    { name: 'ops', token: T.ops, routes: ['metrics', 'healthz'] },
  ]);
  opts = { tls: { cert: server.cert, key: server.key }, auth: { tokensFile } };
});
after(() => pki.remove());

/** One HTTPS request trusting the test CA; the answer's status, headers and body. */
function request(url: string, o: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: o.method ?? 'GET', headers: o.headers, ca, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

test('@elastic/elasticsearch with an API key over TLS: every doc once; a wrong key and no key are 401, nothing from them stored', async () => {
  const d = await doorServer(opts);
  try {
    assert.match(d.srv.url, /^https:/);
    const good = new Client({ node: d.srv.url, auth: { apiKey: { id: 'any-id', api_key: T.es } }, tls: { ca } });
    const stats = await good.helpers.bulk({
      datasource: keys('es').map((k) => ({ key: k })),
      onDocument: (doc) => ({ create: { _index: 'logs-es', _id: doc.key } }),
      flushBytes: 8 * 1024,
    });
    assert.equal(stats.successful, N);
    // The same token given as the client's already-encoded apiKey string is accepted too.
    const raw = new Client({ node: d.srv.url, auth: { apiKey: T.es }, tls: { ca } });
    const ok = await raw.bulk({ operations: [{ create: { _index: 'logs-es', _id: 'raw-1' } }, { key: 'raw-1' }] });
    assert.equal(ok.errors, false);

    for (const auth of [{ apiKey: { id: 'any-id', api_key: 'wrong-key' } }, undefined]) {
      const bad = new Client({ node: d.srv.url, ...(auth ? { auth } : {}), tls: { ca }, maxRetries: 0 });
      const e = await bad.bulk({ operations: [{ create: { _index: 'logs-es', _id: 'bad-1' } }, { key: 'bad-1' }] }).then(
        () => null,
        (x: unknown) => x,
      );
      assert.ok(e instanceof esErrors.ResponseError, `expected a ResponseError, got ${e}`);
      assert.equal(e.statusCode, 401);
      assert.equal((e.body as { error: { type: string } }).error.type, 'security_exception');
      assert.match(String(e.headers?.['www-authenticate']), /ApiKey/);
      await bad.close();
    }
    // A token for another route: 403.
    const other = new Client({ node: d.srv.url, auth: { apiKey: { id: 'x', api_key: T.ingest } }, tls: { ca }, maxRetries: 0 });
    const e403 = await other.bulk({ operations: [{ create: { _index: 'logs-es', _id: 'bad-2' } }, { key: 'bad-2' }] }).catch((x: esErrors.ResponseError) => x);
    assert.equal((e403 as esErrors.ResponseError).statusCode, 403);
    await Promise.all([good.close(), raw.close(), other.close()]);

    assert.equal(await metricValue(d.srv, 'sluice_auth_unauthenticated_total', 'reason="invalid"'), 1);
    assert.equal(await metricValue(d.srv, 'sluice_auth_unauthenticated_total', 'reason="missing"'), 1);
    assert.equal(await metricValue(d.srv, 'sluice_tenant_requests_total', 'tenant="team-ingest",outcome="forbidden"'), 1);
    assert.equal(await metricValue(d.srv, 'sluice_tenant_records_total', 'tenant="team-es"'), N + 1);
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, [...keys('es'), 'raw-1'], ledger);
  } finally {
    await d.finish();
  }
});

test('@opentelemetry/exporter-logs-otlp-http with a bearer header over TLS: every record once; a wrong bearer exports nothing', async () => {
  const d = await doorServer(opts);
  try {
    const emit = async (token: string, prefix: string) => {
      const results: number[] = [];
      const exporter = new OTLPLogExporter({ url: `${d.srv.url}/v1/logs`, headers: { Authorization: `Bearer ${token}` }, httpAgentOptions: { ca } });
      const origExport = exporter.export.bind(exporter);
      exporter.export = (logs, cb) => origExport(logs, (r) => (results.push(r.code), cb(r)));
      const provider = new LoggerProvider({ processors: [new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 100, scheduledDelayMillis: 20 })] });
      const logger = provider.getLogger('auth');
      for (const k of keys(prefix)) logger.emit({ body: `hello ${k}`, attributes: { key: k } });
      await provider.forceFlush();
      await provider.shutdown();
      return results;
    };
    const good = await emit(T.otel, 'otlp');
    assert.ok(good.length > 0 && good.every((c) => c === 0), `good export results ${good}`);
    const bad = await emit('not-a-token', 'intruder');
    assert.ok(bad.length > 0 && bad.every((c) => c !== 0), `a wrong bearer was exported: ${JSON.stringify(bad)}`);
    assert.ok((await metricValue(d.srv, 'sluice_auth_unauthenticated_total', 'reason="invalid"')) >= 1);
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { attributes?: { key?: string } }).attributes?.key, keys('otlp'), ledger);
  } finally {
    await d.finish();
  }
});

test('winston-loki with basic auth over TLS: every line once; a wrong password pushes nothing', async () => {
  const d = await doorServer(opts);
  try {
    const push = async (basicAuth: string, prefix: string) => {
      const errors: unknown[] = [];
      const transport = new LokiTransport({
        host: d.srv.url,
        basicAuth,
        labels: { app: 'auth' },
        json: false,
        batching: true,
        interval: 0.05,
        httpsAgent: new https.Agent({ ca }),
        onConnectionError: (e: unknown) => errors.push(e),
      });
      const log = winston.createLogger({ transports: [transport] });
      for (const k of keys(prefix)) log.info(`hello key=${k}`);
      await transport.flush();
      await transport.close();
      return errors;
    };
    assert.deepEqual(await push(`team-loki:${T.loki}`, 'loki'), []);
    const errs = await push('team-loki:wrong', 'intruder');
    assert.ok(errs.length > 0 && errs.every((e) => (e as { statusCode?: number }).statusCode === 401), `wrong password: ${errs}`);
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => /key=(loki-\d+)/.exec((r as { line?: string }).line ?? '')?.[1] ?? (r as { line?: string }).line, keys('loki'), ledger);
  } finally {
    await d.finish();
  }
});

test('each route names its challenge; /metrics and /healthz need a token of their own; tokens never appear in /metrics', async () => {
  const d = await doorServer(opts);
  try {
    const challenges: Record<string, string> = {};
    for (const [path, method] of [['/ingest', 'POST'], ['/_bulk', 'POST'], ['/v1/logs', 'POST'], ['/loki/api/v1/push', 'POST'], ['/metrics', 'GET'], ['/healthz', 'GET']] as const) {
      const r = await request(`${d.srv.url}${path}`, { method, body: method === 'POST' ? '{"a":1}\n' : undefined });
      assert.equal(r.status, 401, `${path} without a token`);
      challenges[path] = String(r.headers['www-authenticate']);
    }
    assert.match(challenges['/_bulk'], /ApiKey/);
    assert.match(challenges['/loki/api/v1/push'], /^Basic /);
    assert.match(challenges['/v1/logs'], /^Bearer /);
    assert.match(challenges['/ingest'], /^Bearer /);
    // A writer's token does not open /metrics; the ops token does not open /ingest.
    assert.equal((await request(`${d.srv.url}/metrics`, { headers: { authorization: `Bearer ${T.ingest}` } })).status, 403);
    assert.equal((await request(`${d.srv.url}/ingest`, { method: 'POST', headers: { authorization: `Bearer ${T.ops}` }, body: '{"a":1}\n' })).status, 403);
    assert.equal((await request(`${d.srv.url}/healthz`, { headers: { authorization: `Bearer ${T.ops}` } })).status, 200);
    const ing = await request(`${d.srv.url}/ingest`, { method: 'POST', headers: { authorization: `Bearer ${T.ingest}` }, body: '{"key":"i-1"}\n' });
    assert.equal(ing.status, 200, ing.body);
    const m = await request(`${d.srv.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from(`ops:${T.ops}`).toString('base64')}` } });
    assert.equal(m.status, 200);
    assert.match(m.body, /sluice_tenant_requests_total\{tenant="team-ingest",outcome="admitted"[^}]*\} 1\n/);
    for (const t of Object.values(T)) assert.ok(!m.body.includes(t), 'a token appears in /metrics');
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, ['i-1'], ledger);
  } finally {
    await d.finish();
  }
});
