/**
 * Who may write (docs/serve.md, "Running it on a network"): bearer tokens from a tokens file,
 * each naming a tenant, the routes it may use and its rate (token buckets of records/s and
 * bytes/s). `startServer` (./http.ts) asks `authorize` before it reads or decodes any body
 * byte, so a client without a valid token costs the server a header parse, never a decode.
 *
 * The file holds only hashes: `sha256:<hex>` of the token. SHA-256 is enough here because the
 * tokens are not passwords: `sluice token new` draws 32 random bytes (256 bits), so guessing a
 * token from its hash is a 2^256 search whatever the hash costs; a slow hash (scrypt, argon2)
 * only helps against guessable secrets, and would cost every request milliseconds of CPU —
 * a lever for unauthenticated clients. `parseTokensFile` refuses nothing on entropy (it only
 * sees hashes); `sluice token hash` warns about a short token.
 *
 * Credentials accepted, as the shippers send them:
 * - `Authorization: Bearer <token>` (OTLP exporters' headers, curl, Prometheus);
 * - `Authorization: Basic base64(user:token)`: the password is the token, the user is ignored
 *   (Loki clients, Elasticsearch clients with username/password, rsyslog/syslog-ng);
 * - `Authorization: ApiKey base64(id:key)` (Elasticsearch clients' `apiKey`): the key is the
 *   token, the id is ignored; a value that does not decode to `id:key` is itself the token
 *   (a client given the token as its already-encoded `apiKey`).
 * Each candidate is hashed and compared against every entry's hash with `timingSafeEqual`,
 * without an early exit.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import client from 'prom-client';
import { invalidOption } from '../core/errors.js';
import { isBulkPath, isRefreshPath } from './doors/es-bulk.js';

/** What a token may be allowed to use. `bulk` covers every Elasticsearch path (`GET /`, `_bulk`, `_refresh`). */
export const ROUTES = ['ingest', 'bulk', 'otlp', 'loki', 'metrics', 'healthz'] as const;
export type Route = (typeof ROUTES)[number];

export interface TenantRate {
  /** Records per second, long-run. */
  recordsPerSec: number;
  /** Decoded body bytes per second, long-run. */
  bytesPerSec: number;
  /** Records the bucket holds when full. @default recordsPerSec (one second's worth) */
  burstRecords?: number;
  /** Bytes the bucket holds when full. @default bytesPerSec */
  burstBytes?: number;
}

export interface TokenEntry {
  /** The tenant: the label in /metrics and the log. Several tokens may share a name (rotation); they share its buckets. */
  name: string;
  /** `sha256:<64 hex>` of the token (`sluice token hash`). */
  hash: string;
  routes: Route[];
  /** @default no limit */
  rate?: TenantRate;
  /**
   * PostgreSQL sink: the table this tenant's records go to (made like `--table` when missing).
   * @default the server's `--table`
   */
  table?: string;
  /** JetStream sink: the stream this tenant's records go to. @default the server's stream */
  stream?: string;
}

/** A token's sink target (its `table` or `stream`), if it names one. */
export function targetOf(t: Pick<TokenEntry, 'table' | 'stream'>): string | undefined {
  return t.table ?? t.stream;
}

const HASH_RE = /^sha256:([0-9a-f]{64})$/;

/** `sha256:<hex>` of a token: the line a tokens file stores. */
export function hashToken(token: string): string {
  return 'sha256:' + createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A new token: 32 random bytes, base64url (43 characters), prefixed so it is recognisable in a leak scan. */
export function newToken(): string {
  return 'slk_' + randomBytes(32).toString('base64url');
}

/** Validates a tokens file's content (`{ "tokens": [TokenEntry…] }`); `where` names it in errors. */
export function parseTokensFile(text: string, where = 'tokens file'): TokenEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw invalidOption(where, '(unparsable)', `JSON: ${(e as Error).message}`);
  }
  const list = (doc as { tokens?: unknown })?.tokens;
  if (!Array.isArray(list)) throw invalidOption(where, typeof doc, 'an object { "tokens": [ … ] }');
  const rates = new Map<string, string>();
  const targets = new Map<string, string>();
  return list.map((raw, i) => {
    const at = `${where}: tokens[${i}]`;
    const e = raw as Partial<TokenEntry> & Record<string, unknown>;
    if (e === null || typeof e !== 'object') throw invalidOption(at, e, 'an object');
    for (const k of Object.keys(e))
      if (!['name', 'hash', 'routes', 'rate', 'table', 'stream', 'comment'].includes(k)) throw invalidOption(`${at}.${k}`, e[k], 'absent (known: name, hash, routes, rate, table, stream, comment)');
    if (typeof e.name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(e.name)) throw invalidOption(`${at}.name`, e.name, '1–64 of A–Z a–z 0–9 _ . -');
    if (typeof e.hash !== 'string' || !HASH_RE.test(e.hash)) throw invalidOption(`${at}.hash`, e.hash, 'sha256:<64 lower-case hex> (sluice token hash)');
    if (!Array.isArray(e.routes) || e.routes.length === 0 || e.routes.some((r) => !ROUTES.includes(r as Route)))
      throw invalidOption(`${at}.routes`, e.routes, `a non-empty list of ${ROUTES.join(', ')}`);
    let rate: TenantRate | undefined;
    if (e.rate !== undefined) {
      const r = e.rate as Partial<TenantRate> & Record<string, unknown>;
      if (r === null || typeof r !== 'object') throw invalidOption(`${at}.rate`, r, 'an object');
      for (const k of Object.keys(r)) if (!['recordsPerSec', 'bytesPerSec', 'burstRecords', 'burstBytes'].includes(k)) throw invalidOption(`${at}.rate.${k}`, r[k], 'absent');
      for (const k of ['recordsPerSec', 'bytesPerSec'] as const) if (typeof r[k] !== 'number' || !(r[k]! > 0)) throw invalidOption(`${at}.rate.${k}`, r[k], 'a number > 0');
      for (const k of ['burstRecords', 'burstBytes'] as const) if (r[k] !== undefined && (typeof r[k] !== 'number' || !(r[k]! > 0))) throw invalidOption(`${at}.rate.${k}`, r[k], 'a number > 0');
      rate = { recordsPerSec: r.recordsPerSec!, bytesPerSec: r.bytesPerSec!, burstRecords: r.burstRecords ?? r.recordsPerSec!, burstBytes: r.burstBytes ?? r.bytesPerSec! };
    }
    if (e.table !== undefined && (typeof e.table !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(e.table)))
      throw invalidOption(`${at}.table`, e.table, 'a table name: a letter or _, then letters, digits or _ (at most 63)');
    if (e.stream !== undefined && (typeof e.stream !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(e.stream)))
      throw invalidOption(`${at}.stream`, e.stream, 'a stream name: 1–64 of A–Z a–z 0–9 _ -');
    if (e.table !== undefined && e.stream !== undefined) throw invalidOption(`${at}.stream`, e.stream, 'absent when table is given (one sink target per token)');
    // Tokens of one tenant share its buckets and its target, so they must agree on both.
    const key = JSON.stringify(rate ?? null);
    if (rates.has(e.name) && rates.get(e.name) !== key) throw invalidOption(`${at}.rate`, e.rate, `the same rate as the other tokens of tenant "${e.name}"`);
    rates.set(e.name, key);
    const target = JSON.stringify([e.table ?? null, e.stream ?? null]);
    if (targets.has(e.name) && targets.get(e.name) !== target) {
      // Name the field this token set, else the one its tenant's other tokens set (this one lacks it).
      const field = e.table !== undefined ? 'table' : e.stream !== undefined ? 'stream' : (JSON.parse(targets.get(e.name)!) as (string | null)[])[0] !== null ? 'table' : 'stream';
      throw invalidOption(`${at}.${field}`, e.table ?? e.stream, `the same table/stream as the other tokens of tenant "${e.name}"`);
    }
    targets.set(e.name, target);
    return { name: e.name, hash: e.hash, routes: [...new Set(e.routes as Route[])], rate, ...(e.table !== undefined ? { table: e.table } : {}), ...(e.stream !== undefined ? { stream: e.stream } : {}) };
  });
}

export function loadTokensFile(path: string): TokenEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw invalidOption('tokens file', path, `a readable file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseTokensFile(text, path);
}

/** The route a request is for, or null (not a known path: answered 404 without credentials). */
export function routeOf(path: string): Route | null {
  if (path === '/ingest') return 'ingest';
  if (path === '/v1/logs') return 'otlp';
  if (path === '/loki/api/v1/push') return 'loki';
  if (path === '/metrics') return 'metrics';
  if (path === '/healthz') return 'healthz';
  if (path === '/' || isBulkPath(path) || isRefreshPath(path)) return 'bulk';
  return null;
}

/**
 * The token candidates a request presents (see the module comment): null without an
 * Authorization header, [] for one we cannot use (unknown scheme, malformed).
 */
export function credentialsOf(headers: IncomingHttpHeaders): string[] | null {
  const h = headers.authorization;
  if (typeof h !== 'string') return null;
  const sp = h.indexOf(' ');
  if (sp <= 0) return [];
  const scheme = h.slice(0, sp).toLowerCase();
  const value = h.slice(sp + 1).trim();
  if (value.length === 0 || value.length > 4096) return [];
  if (scheme === 'bearer') return [value];
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (scheme === 'basic') return colon >= 0 ? [decoded.slice(colon + 1)] : [];
  if (scheme === 'apikey') return colon > 0 && !decoded.includes('\ufffd') ? [decoded.slice(colon + 1), value] : [value];
  return [];
}

/**
 * A token bucket that may go into debt: a request is admitted while the level is above 0 and
 * then charged in full (its records are only counted once its body is decoded), so one request
 * may take the level below 0; the tenant is then refused until the refill repays the debt.
 * Long-run, at most `rate` per second get through, plus the burst and what the requests
 * admitted at once (up to the server's concurrency) carry.
 */
export class DebtBucket {
  private level: number;
  private last: number;
  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.level = burst;
    this.last = now;
  }
  private refill(now: number): void {
    if (now > this.last) this.level = Math.min(this.burst, this.level + ((now - this.last) / 1000) * this.rate);
    this.last = Math.max(this.last, now);
  }
  /** 0 when a request may go; else the seconds until it may. */
  waitSeconds(now: number): number {
    this.refill(now);
    return this.level > 0 ? 0 : (-this.level + 1e-9) / this.rate;
  }
  charge(n: number, now: number): void {
    this.refill(now);
    this.level -= n;
  }
}

interface Tenant {
  name: string;
  records: DebtBucket | null;
  bytes: DebtBucket | null;
  /** Refused for its rate since it was last admitted (for the log's start/stop lines). */
  limitedRefusals: number;
  /** Where its records go (a table or stream name); none: the server's sink. */
  target: string | undefined;
}

export interface Principal {
  readonly tenant: string;
  readonly route: Route;
  /** The tenant's sink target (TokenEntry table/stream), if any. */
  readonly target?: string;
}

interface Entry {
  digest: Buffer;
  routes: ReadonlySet<Route>;
  tenant: Tenant;
}

export type Verdict =
  | { ok: true; principal: Principal }
  | { ok: false; status: 401 | 403 | 429; reason: 'unauthenticated' | 'forbidden' | 'tenant-rate'; body: string; contentType: string; headers: Record<string, string> };

/** The challenge a client of the route's protocol understands (RFC 9110 §11.6.1; RFC 6750 for Bearer). */
function challenge(route: Route, presented: boolean): string {
  const err = presented ? ', error="invalid_token"' : '';
  switch (route) {
    case 'bulk':
      // What Elasticsearch itself answers (its security realm's three schemes).
      return `Basic realm="sluice", charset="UTF-8", Bearer realm="sluice"${err}, ApiKey`;
    case 'loki':
      return 'Basic realm="sluice", charset="UTF-8"';
    default:
      return `Bearer realm="sluice"${err}, Basic realm="sluice", charset="UTF-8"`;
  }
}

/** A refusal's body in the route's dialect: Elasticsearch's `security_exception` for its clients, Sluice's JSON otherwise. */
function refusalBody(route: Route, status: number, code: string, message: string, extra: Record<string, unknown> = {}): string {
  if (route === 'bulk') {
    const type = status === 429 ? 'es_rejected_execution_exception' : 'security_exception';
    return JSON.stringify({ error: { root_cause: [{ type, reason: message }], type, reason: message }, status }) + '\n';
  }
  return JSON.stringify({ error: code, message, ...extra }) + '\n';
}

export interface AuthenticatorOptions {
  tokens: TokenEntry[];
  /** Where the per-tenant counters go (the server's /metrics registry). */
  registry: client.Registry;
  log?: (line: string) => void;
  /** @default performance.now */
  now?: () => number;
}

export class Authenticator {
  private entries: Entry[] = [];
  private tenants = new Map<string, Tenant>();
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly forbiddenLogged = new Set<string>();
  private readonly refused: client.Counter<'reason'>;
  private readonly tenantRequests: client.Counter<'tenant' | 'outcome'>;
  private readonly tenantRecords: client.Counter<'tenant'>;
  private readonly tenantBytes: client.Counter<'tenant'>;

  constructor(o: AuthenticatorOptions) {
    this.log = o.log ?? (() => {});
    this.now = o.now ?? (() => performance.now());
    const registers = [o.registry];
    this.refused = new client.Counter({ name: 'sluice_auth_unauthenticated_total', help: 'Requests answered 401, by reason (missing: no credentials we read; invalid: no token matched).', labelNames: ['reason'], registers });
    this.tenantRequests = new client.Counter({
      name: 'sluice_tenant_requests_total',
      help: 'Authenticated requests per tenant, by outcome (admitted, forbidden: 403, rate-limited: 429).',
      labelNames: ['tenant', 'outcome'],
      registers,
    });
    this.tenantRecords = new client.Counter({ name: 'sluice_tenant_records_total', help: 'Records charged to each tenant (offered to the pipeline).', labelNames: ['tenant'], registers });
    this.tenantBytes = new client.Counter({ name: 'sluice_tenant_bytes_total', help: "Decoded body bytes charged to each tenant.", labelNames: ['tenant'], registers });
    this.replace(o.tokens);
  }

  /** Swaps the token list (SIGHUP); buckets of tenants still present keep their level. */
  replace(tokens: TokenEntry[]): void {
    const now = this.now();
    const tenants = new Map<string, Tenant>();
    const entries: Entry[] = [];
    for (const t of tokens) {
      let tenant = tenants.get(t.name);
      if (!tenant) {
        const old = this.tenants.get(t.name);
        const sameRate = old && JSON.stringify([old.records?.rate, old.records?.burst, old.bytes?.rate, old.bytes?.burst]) === JSON.stringify([t.rate?.recordsPerSec, t.rate?.burstRecords, t.rate?.bytesPerSec, t.rate?.burstBytes]);
        tenant = sameRate
          ? { ...old!, target: targetOf(t) }
          : {
              name: t.name,
              records: t.rate ? new DebtBucket(t.rate.recordsPerSec, t.rate.burstRecords ?? t.rate.recordsPerSec, now) : null,
              bytes: t.rate ? new DebtBucket(t.rate.bytesPerSec, t.rate.burstBytes ?? t.rate.bytesPerSec, now) : null,
              limitedRefusals: 0,
              target: targetOf(t),
            };
        tenants.set(t.name, tenant);
      }
      entries.push({ digest: Buffer.from(HASH_RE.exec(t.hash)![1], 'hex'), routes: new Set(t.routes), tenant });
    }
    this.entries = entries;
    this.tenants = tenants;
  }

  tenantNames(): string[] {
    return [...this.tenants.keys()];
  }

  /** The tenants for the log: `team-a → team_a_logs, ops` (the arrow: its own table or stream). */
  describeTenants(): string {
    return [...this.tenants.values()].map((t) => (t.target !== undefined ? `${t.name} → ${t.target}` : t.name)).join(', ');
  }

  /** The tenant whose token matches, comparing against every entry in constant time per entry. */
  private match(candidates: readonly string[]): Entry[] {
    const found: Entry[] = [];
    for (const c of candidates) {
      const d = createHash('sha256').update(c, 'utf8').digest();
      for (const e of this.entries) if (timingSafeEqual(d, e.digest)) found.push(e);
    }
    return found;
  }

  /** Decides a request from its headers alone: admitted (with its principal), 401, 403 or 429. */
  authorize(headers: IncomingHttpHeaders, route: Route): Verdict {
    const candidates = credentialsOf(headers);
    const matched = candidates ? this.match(candidates) : [];
    if (matched.length === 0) {
      const reason = candidates ? 'invalid' : 'missing';
      this.refused.inc({ reason });
      const message = candidates ? 'the credentials match no token' : `missing credentials for ${route}: send Authorization: Bearer <token> (or Basic / ApiKey; docs/serve.md)`;
      return {
        ok: false,
        status: 401,
        reason: 'unauthenticated',
        body: refusalBody(route, 401, 'SLUICE_UNAUTHENTICATED', message, { reason }),
        contentType: 'application/json',
        headers: { 'www-authenticate': challenge(route, candidates !== null) },
      };
    }
    // Several entries may match the same token (one per route set of a tenant): any that allows the route.
    const entry = matched.find((e) => e.routes.has(route)) ?? matched[0];
    const tenant = entry.tenant;
    if (!entry.routes.has(route)) {
      this.tenantRequests.inc({ tenant: tenant.name, outcome: 'forbidden' });
      const k = `${tenant.name}\0${route}`;
      if (!this.forbiddenLogged.has(k)) {
        this.forbiddenLogged.add(k);
        this.log(`auth: tenant ${tenant.name} tried route ${route}, which its token does not allow (403; logged once per tenant and route)`);
      }
      return {
        ok: false,
        status: 403,
        reason: 'forbidden',
        body: refusalBody(route, 403, 'SLUICE_FORBIDDEN', `tenant ${tenant.name} may not use ${route}`, { tenant: tenant.name, route, allowed: [...entry.routes] }),
        contentType: 'application/json',
        headers: {},
      };
    }
    const now = this.now();
    const wait = Math.max(tenant.records?.waitSeconds(now) ?? 0, tenant.bytes?.waitSeconds(now) ?? 0);
    if (wait > 0 && (route !== 'metrics' && route !== 'healthz')) {
      this.tenantRequests.inc({ tenant: tenant.name, outcome: 'rate-limited' });
      if (tenant.limitedRefusals++ === 0) this.log(`auth: tenant ${tenant.name} is over its rate: answering 429 until it is back under (counted in sluice_tenant_requests_total{outcome="rate-limited"})`);
      const retryAfter = Math.max(1, Math.ceil(wait));
      return {
        ok: false,
        status: 429,
        reason: 'tenant-rate',
        body: refusalBody(route, 429, 'SLUICE_TENANT_RATE', `tenant ${tenant.name} is over its rate; retry in ${retryAfter} s`, { reason: 'tenant-rate', tenant: tenant.name }),
        contentType: 'application/json',
        headers: { 'retry-after': String(retryAfter) },
      };
    }
    if (tenant.limitedRefusals > 0) {
      this.log(`auth: tenant ${tenant.name} is back under its rate after ${tenant.limitedRefusals} refused requests`);
      tenant.limitedRefusals = 0;
    }
    this.tenantRequests.inc({ tenant: tenant.name, outcome: 'admitted' });
    return { ok: true, principal: tenant.target !== undefined ? { tenant: tenant.name, route, target: tenant.target } : { tenant: tenant.name, route } };
  }

  /** Charges decoded bytes to a tenant (as its body is decoded, accepted or not). */
  chargeBytes(p: Principal, bytes: number): void {
    if (bytes <= 0) return;
    this.tenantBytes.inc({ tenant: p.tenant }, bytes);
    this.tenants.get(p.tenant)?.bytes?.charge(bytes, this.now());
  }

  /** Charges records offered to the pipeline to a tenant. */
  chargeRecords(p: Principal, records: number): void {
    if (records <= 0) return;
    this.tenantRecords.inc({ tenant: p.tenant }, records);
    this.tenants.get(p.tenant)?.records?.charge(records, this.now());
  }
}
