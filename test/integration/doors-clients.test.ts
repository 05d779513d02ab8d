/**
 * The front doors driven by clients nobody here wrote, against a real server (startServer),
 * each record in the sink reconciled against what the client sent: 0 missing, 0 duplicated.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Client } from '@elastic/elasticsearch';
import pino from 'pino';
import pinoElastic from 'pino-elasticsearch';
import { LoggerProvider, BatchLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { OTLPLogExporter as OtlpHttpExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as OtlpProtoExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import winston from 'winston';
import LokiTransport from 'winston-loki';
import { doorServer, reconcile } from '../helpers/doors.js';

const N = 3000;
const keys = (prefix: string, n = N) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

test('@elastic/elasticsearch helpers.bulk: create with _id, gzip; every doc once with its _index', async () => {
  const d = await doorServer();
  try {
    const client = new Client({ node: d.srv.url, compression: true });
    const drops: unknown[] = [];
    const stats = await client.helpers.bulk({
      datasource: keys('es').map((k) => ({ key: k, message: `hello ${k}` })),
      onDocument: (doc) => ({ create: { _index: 'logs-es', _id: doc.key } }),
      flushBytes: 16 * 1024,
      concurrency: 3,
      onDrop: (x) => void drops.push(x),
    });
    assert.deepEqual(drops, []);
    assert.equal(stats.successful, N);
    assert.equal(stats.failed, 0);
    // A create of an id already stored: 409, the rest 201, the document not written twice.
    const again = await client.bulk({ operations: [{ create: { _index: 'logs-es', _id: 'es-7' } }, { key: 'es-7', message: 'again' }, { delete: { _index: 'logs-es', _id: 'es-8' } }] });
    assert.equal(again.errors, true);
    assert.equal(again.items[0].create!.status, 409);
    assert.equal(again.items[0].create!.error!.type, 'version_conflict_engine_exception');
    assert.equal(again.items[1].delete!.status, 400);
    await client.close();
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, keys('es'), ledger);
    assert.ok([...d.sink.indexOf.values()].every((ix) => ix === 'logs-es'));
    assert.equal(d.sink.indexOf.size, N);
  } finally {
    await d.finish();
  }
});

test('@elastic/elasticsearch helpers.bulk under a forced full queue: per-item 429s, the helper retries only those', async () => {
  // The first batch is held 300 ms: the 50-item queue behind it fills, and offers time out
  // after 20 ms, so items are refused per item while the rest of their request is accepted.
  const d = await doorServer({ queue: { maxItems: 50, blockTimeoutMs: 20 }, window: { maxItems: 50 } }, 300);
  try {
    const client = new Client({ node: d.srv.url });
    // Per-item 429s as the client received them (its own diagnostics, not the server's word).
    let answered429 = 0;
    client.diagnostic.on('response', (_err, result) => {
      for (const it of ((result?.body as { items?: Record<string, { status: number }>[] })?.items ?? []))
        if (Object.values(it)[0].status === 429) answered429++;
    });
    const drops: unknown[] = [];
    const stats = await client.helpers.bulk({
      datasource: keys('q', 2000).map((k) => ({ key: k })),
      onDocument: (doc) => ({ create: { _index: 'logs-q', _id: doc.key } }),
      flushBytes: 8 * 1024,
      concurrency: 2,
      retries: 1000,
      wait: 20,
      onDrop: (x) => void drops.push(x),
    });
    assert.ok(d.srv.pipeline.stats().ledger.rejected > 0, 'the queue never refused an offer: the test did not exercise per-item 429');
    assert.ok(answered429 > 0 && stats.retry > 0, `no per-item 429 retried (answered ${answered429}, stats ${JSON.stringify(stats)})`);
    // Only the refused items were retried: the helper resent exactly the items answered 429
    // (its stats.retry counts body lines, two per create: lib/helpers.js, `stats.retry += bulkBody.length`).
    assert.equal(stats.retry, 2 * answered429);
    assert.deepEqual(drops, []);
    assert.equal(stats.successful, 2000);
    await client.close();
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, keys('q', 2000), ledger);
  } finally {
    await d.finish();
  }
});

test('pino-elasticsearch: every log line once', async () => {
  const d = await doorServer();
  try {
    const stream = pinoElastic({ index: 'logs-pino', node: d.srv.url, esVersion: 8, flushBytes: 8 * 1024, flushInterval: 100 });
    const errors: unknown[] = [];
    stream.on('insertError', (e: unknown) => errors.push(e));
    stream.on('error', (e: unknown) => errors.push(e));
    const log = pino({ level: 'info' }, stream);
    for (const k of keys('pino')) log.info({ key: k }, 'hello');
    const inserted = once(stream, 'insert');
    stream.end();
    await inserted;
    assert.deepEqual(errors, []);
    const { ledger, records } = await d.finish();
    reconcile(records, (r) => (r as { key?: string }).key, keys('pino'), ledger);
    assert.ok([...d.sink.indexOf.values()].every((ix) => ix === 'logs-pino'));
  } finally {
    await d.finish();
  }
});

for (const [name, Exporter, extra] of [
  ['exporter-logs-otlp-http (JSON, gzip)', OtlpHttpExporter, { compression: 'gzip' }],
  ['exporter-logs-otlp-proto (protobuf)', OtlpProtoExporter, {}],
  ['exporter-logs-otlp-proto (protobuf, gzip)', OtlpProtoExporter, { compression: 'gzip' }],
] as const) {
  test(`@opentelemetry/${name} via sdk-logs: every log record once, resource and scope kept`, async () => {
    const d = await doorServer();
    try {
      const exporter = new Exporter({ url: `${d.srv.url}/v1/logs`, ...(extra as object) });
      const provider = new LoggerProvider({
        resource: resourceFromAttributes({ 'service.name': 'doors-test' }),
        processors: [new BatchLogRecordProcessor({ exporter, maxQueueSize: 2 * N, maxExportBatchSize: 256, scheduledDelayMillis: 20 })],
      });
      const logger = provider.getLogger('doors-scope', '1.2.3');
      for (const k of keys('otlp')) logger.emit({ severityNumber: 9, severityText: 'INFO', body: `hello ${k}`, attributes: { key: k, n: 1 } });
      await provider.forceFlush();
      await provider.shutdown();
      const { ledger, records } = await d.finish();
      reconcile(records, (r) => (r as { attributes?: { key?: string } }).attributes?.key, keys('otlp'), ledger);
      const r0 = records[0] as Record<string, any>;
      assert.equal(r0.resource['service.name'], 'doors-test');
      assert.deepEqual(r0.scope, { name: 'doors-scope', version: '1.2.3' });
      assert.equal(r0.severityText, 'INFO');
      assert.equal(r0.attributes.n, 1);
      assert.match(r0.body, /^hello otlp-\d+$/);
      assert.match(r0.timeUnixNano, /^\d{19}$/);
    } finally {
      await d.finish();
    }
  });
}

for (const json of [false, true]) {
  test(`winston-loki (${json ? 'JSON' : 'protobuf + snappy'}): every line once with its labels`, async () => {
    const d = await doorServer();
    try {
      const errors: unknown[] = [];
      const transport = new LokiTransport({ host: d.srv.url, labels: { app: 'doors' }, json, batching: true, interval: 0.05, onConnectionError: (e: unknown) => errors.push(e) });
      const log = winston.createLogger({ transports: [transport] });
      for (const k of keys('loki')) log.info(`hello key=${k}`);
      await transport.flush();
      await transport.close();
      assert.deepEqual(errors, []);
      const { ledger, records } = await d.finish();
      reconcile(records, (r) => /key=(loki-\d+)/.exec((r as { line?: string }).line ?? '')?.[1], keys('loki'), ledger);
      const r0 = records[0] as { labels: Record<string, string>; ts: string };
      assert.equal(r0.labels.app, 'doors');
      assert.equal(r0.labels.level, 'info');
      assert.match(r0.ts, /^\d{16,19}$/);
    } finally {
      await d.finish();
    }
  });
}
