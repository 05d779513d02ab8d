import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxAckPendingFor } from '../../packages/sluice/src/run/service.js';
import { resolveRunConfig } from '../../packages/sluice/src/run/config.js';
import { QUEUE_DEFAULTS, WINDOW_DEFAULTS } from '../../packages/sluice/src/core/options.js';

// The CLI passes every flag, given or not: an unset one is an undefined key.
const cliShaped = (extra: Record<string, unknown>) =>
  resolveRunConfig(undefined, {
    source: 'nats://127.0.0.1:4222/S/c',
    sink: '/tmp/sluice-sizing-sink',
    window: { maxItems: undefined, maxBytes: undefined, maxWaitMs: undefined, maxInFlight: undefined },
    queue: { policy: undefined, maxItems: undefined },
    workers: undefined,
    maxAckPending: undefined,
    ...extra,
  });

test('MaxAckPending is sized for M workers from the defaults when the window flags are unset', () => {
  const per = QUEUE_DEFAULTS.maxItems + WINDOW_DEFAULTS.maxInFlight * WINDOW_DEFAULTS.maxItems + 256;
  assert.equal(maxAckPendingFor(cliShaped({ workers: 3 })), 3 * per);
});

test('MaxAckPending follows the window and queue flags that are given', () => {
  const cfg = cliShaped({ workers: 2, window: { maxItems: 100, maxInFlight: 4 }, queue: { maxItems: 1000 } });
  assert.equal(maxAckPendingFor(cfg), 2 * (1000 + 4 * 100 + 256));
});

test('MaxAckPending: an explicit value wins; without workers the consumer keeps its own', () => {
  assert.equal(maxAckPendingFor(cliShaped({ workers: 3, maxAckPending: 777 })), 777);
  assert.equal(maxAckPendingFor(cliShaped({})), undefined);
});
