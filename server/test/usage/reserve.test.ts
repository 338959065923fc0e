import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { duration, UsageService, type Limits, type UsageServiceOptions } from '../../src/modules/usage/usage.service.js';
import { AppError } from '../../src/platform/errors.js';
import { createLogger } from '../../src/platform/logger.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { spawnKeel } from '../helpers/process.js';
import { testConfig } from '../helpers/server.js';
import { apiKeyOf, insertUser, outcome, sessionOf } from './fixtures.js';

const WORKER = fileURLToPath(new URL('./reserve-worker.ts', import.meta.url));
const meta = { requestId: 'req-test' };

/** The AppError a promise rejects with (fails the test when it resolves or rejects with something else). */
async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof AppError)) throw new Error(`expected an AppError, got ${String(err)}`);
  return err;
}

describe('limit names', () => {
  it('durations read like "3 h 12 min"', () => {
    expect([duration(1), duration(59), duration(60), duration(725), duration(3600), duration(11_520), duration(86_400 * 9 + 3600 * 4 + 5)]).toEqual(['1 s', '59 s', '1 min', '12 min 5 s', '1 h', '3 h 12 min', '9 d 4 h']);
  });
});

describeEachDatabase('usage reservations', (db) => {
  let database: Database;
  beforeAll(async () => {
    database = openDatabase(testConfig(db()).database, createLogger({ logLevel: 'silent' }));
    await migrateToLatest(database.db);
  });
  afterAll(() => database?.close());

  const service = (user: Limits, apiKey: Limits = {}, options: UsageServiceOptions = {}) => new UsageService(database.db, { user, apiKey }, database.dialect, options);
  const counters = (userId: string) => database.db.selectFrom('usage_counters').selectAll().where('user_id', '=', userId).orderBy('key').execute();
  const events = (userId: string) => database.db.selectFrom('usage_events').selectAll().where('user_id', '=', userId).execute();
  const dayCounter = async (userId: string) => (await counters(userId)).find((c) => c.key.startsWith(`user:${userId}:day:`));

  it('20 concurrent reservations against requests_per_day: 5 let exactly 5 through', async () => {
    const usage = service({ requests_per_day: 5 });
    const userId = await insertUser(database.db);
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => usage.reserve(sessionOf(userId), { tokens: 10, costUsd: 0 }, meta)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as AppError] : []));
    expect(refused).toHaveLength(15);
    expect(refused.every((e) => e instanceof AppError && e.code === 'limit_exceeded' && e.statusCode === 429)).toBe(true);
    expect(await dayCounter(userId)).toMatchObject({ requests: 5, tokens_reserved: 50 });
  });

  it('20 concurrent reservations against a tokens_per_day budget of 5 × the estimate: exactly 5 through', async () => {
    const usage = service({ tokens_per_day: 5 * 300 });
    const userId = await insertUser(database.db);
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => usage.reserve(sessionOf(userId), { tokens: 300, costUsd: 0 }, meta)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
    expect(await dayCounter(userId)).toMatchObject({ requests: 5, tokens_reserved: 1500, tokens_used: 0 });
  });

  it('a cost budget is reserved the same way', async () => {
    const usage = service({ cost_usd_per_day: 0.01 });
    const userId = await insertUser(database.db);
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => usage.reserve(sessionOf(userId), { tokens: 1, costUsd: 0.004 }, meta)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    const err = results.find((r) => r.status === 'rejected')!.reason as AppError;
    expect(err.message).toMatch(/^Daily spending budget reached \(cost_usd_per_day: 0\.01\); resets in /);
  });

  it('separate connection pools (as separate processes have) are held to the limit together', async ({ skip }) => {
    // SQLite allows one connection per process here (better-sqlite3 blocks the event loop); its cross-process case is the next test.
    if (database.dialect.name !== 'postgres') skip();
    const other = openDatabase(testConfig(db()).database, createLogger({ logLevel: 'silent' }));
    try {
      const limits = { user: { requests_per_day: 7, tokens_per_day: 10_000 }, apiKey: {} };
      const a = new UsageService(database.db, limits, database.dialect);
      const b = new UsageService(other.db, limits, other.dialect);
      const userId = await insertUser(database.db);
      const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).reserve(sessionOf(userId), { tokens: 100, costUsd: 0 }, meta)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(7);
      expect(results.filter((r) => r.status === 'rejected').every((r) => (r.reason as AppError).code === 'limit_exceeded')).toBe(true);
    } finally {
      await other.close();
    }
  });

  it('separate processes are held to the limit together (the database is the arbiter)', async () => {
    const userId = await insertUser(database.db);
    const env = {
      KEEL_TEST_DATABASE: JSON.stringify(testConfig(db()).database),
      RESERVE_NOW: new Date().toISOString(),
      RESERVE_USER: userId,
      RESERVE_LIMITS: JSON.stringify({ requests_per_day: 30 }),
      RESERVE_COUNT: '25',
      // Time enough for every worker to start (tsx compiles on the way), so that they all race.
      RESERVE_START_AT: String(Date.now() + 5000),
    };
    const workers = Array.from({ length: 4 }, () => spawnKeel([], env, WORKER));
    const codes = await Promise.all(workers.map((w) => w.exited));
    expect(codes, workers.map((w) => w.stderr()).join('\n')).toEqual([0, 0, 0, 0]);
    const reports = workers.map((w) => JSON.parse(w.stdout().trim()) as { granted: number; refused: number; failed: string[] });
    expect(reports.flatMap((r) => r.failed)).toEqual([]);
    expect(reports.reduce((n, r) => n + r.granted, 0)).toBe(30);
    expect(reports.reduce((n, r) => n + r.refused, 0)).toBe(100 - 30);
    expect(await dayCounter(userId)).toMatchObject({ requests: 30, tokens_reserved: 300 });
  }, 60_000);

  it('limits beyond what the counters can hold act as practically unlimited', async () => {
    const usage = service({ requests_per_day: 1e12, requests_per_minute: 5e9, tokens_per_day: 1e20, cost_usd_per_day: 1e300 });
    const userId = await insertUser(database.db);
    await usage.reserve(sessionOf(userId), { tokens: 1e6, costUsd: 1e6 }, meta);
    expect(await dayCounter(userId)).toMatchObject({ requests: 1, tokens_reserved: 1e6, cost_reserved: 1e6 });
  });

  it('a refusal leaves nothing reserved, not even on the counters checked before the one that refused', async () => {
    // The day counter is updated before the month counter (key order), and it is the month budget that refuses.
    const usage = service({ tokens_per_day: 10_000, tokens_per_month: 150, requests_per_day: 100 });
    const userId = await insertUser(database.db);
    await usage.reserve(sessionOf(userId), { tokens: 100, costUsd: 0.5 }, meta);
    const before = await counters(userId);
    const err = await refusal(usage.reserve(sessionOf(userId), { tokens: 100, costUsd: 0.5 }, meta));
    expect(err.message).toMatch(/^Monthly token budget reached \(tokens_per_month: 150\); resets in /);
    expect(await counters(userId)).toEqual(before);
    expect(before.map((c) => [c.requests, c.tokens_reserved, c.cost_reserved])).toEqual([[1, 100, 0.5], [1, 100, 0.5]]);
    expect(await events(userId)).toEqual([]);
  });

  it('settle writes one usage row, however often it is called (also concurrently)', async () => {
    const usage = service({ tokens_per_day: 1_000_000 });
    const principal = sessionOf(await insertUser(database.db));
    const reservation = await usage.reserve(principal, { tokens: 100, costUsd: 0.01 }, { requestId: 'req-settle' });
    await Promise.all([reservation.settle(outcome({ status: 'aborted', errorCode: 'client_closed' })), reservation.settle(outcome())]);
    await reservation.settle(outcome());
    const rows = await events(principal.userId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      user_id: principal.userId, api_key_id: null, device_id: principal.deviceId, request_id: 'req-settle',
      endpoint: '/v1/chat/completions', provider: 'openai', model: 'gpt-4o-mini', prompt_tokens: 10, completion_tokens: 20, total_tokens: 30,
      estimated: 0, cost_usd: 0.001, latency_ms: 120, ttft_ms: 40, status: 'aborted', error_code: 'client_closed', message_id: null,
    });
    expect(await dayCounter(principal.userId)).toMatchObject({ requests: 1, tokens_reserved: 0, tokens_used: 30, cost_reserved: 0, cost_used: 0.001 });
  });

  it('settle moves the reservation to use: the budget grows back when a call used less than estimated', async () => {
    const usage = service({ tokens_per_day: 1000 });
    const principal = sessionOf(await insertUser(database.db));
    const first = await usage.reserve(principal, { tokens: 600, costUsd: 0 }, meta);
    expect((await usage.summary(principal, {})).limits.tokens_per_day).toMatchObject({ limit: 1000, used: 0, reserved: 600, remaining: 400 });
    // 600 are held: another 600 does not fit…
    expect((await refusal(usage.reserve(principal, { tokens: 600, costUsd: 0 }, meta))).code).toBe('limit_exceeded');
    await first.settle(outcome({ promptTokens: 100, completionTokens: 100, estimated: true }));
    expect((await usage.summary(principal, {})).limits.tokens_per_day).toMatchObject({ limit: 1000, used: 200, reserved: 0, remaining: 800 });
    // …and once the call settles at 200, it does.
    const second = await usage.reserve(principal, { tokens: 600, costUsd: 0 }, meta);
    await second.settle(outcome({ promptTokens: 500, completionTokens: 300 }));
    expect((await usage.summary(principal, {})).limits.tokens_per_day).toMatchObject({ used: 1000, reserved: 0, remaining: 0 });
    // Spent to the last token: even a request estimated at nothing is refused until the day ends.
    expect((await refusal(usage.reserve(principal, { tokens: 0, costUsd: 0 }, meta))).message).toMatch(/^Daily token budget reached/);
  });

  it('the user\'s overrides in users.limits beat the defaults (null lifts a limit)', async () => {
    const usage = service({ requests_per_day: 1, tokens_per_day: 50 });
    const userId = await insertUser(database.db, { requests_per_day: 3, tokens_per_day: null, unknown_limit: 1, requests_per_minute: 'ten' });
    for (let i = 0; i < 3; i++) await usage.reserve(sessionOf(userId), { tokens: 1000, costUsd: 0 }, meta);
    const err = await refusal(usage.reserve(sessionOf(userId), { tokens: 1, costUsd: 0 }, meta));
    expect(err.message).toMatch(/^Daily request limit reached \(requests_per_day: 3\);/);
    expect(Object.keys((await usage.summary(sessionOf(userId), {})).limits)).toEqual(['requests_per_day']);

    const stricter = await insertUser(database.db, { requests_per_day: 0 });
    expect((await refusal(usage.reserve(sessionOf(stricter), { tokens: 1, costUsd: 0 }, meta))).message).toMatch(/requests_per_day: 0/);
    // A user without overrides gets the defaults.
    const plain = await insertUser(database.db);
    await usage.reserve(sessionOf(plain), { tokens: 10, costUsd: 0 }, meta);
    expect((await refusal(usage.reserve(sessionOf(plain), { tokens: 10, costUsd: 0 }, meta))).message).toMatch(/requests_per_day: 1\)/);
  });

  it('an API-key caller is bound by the key\'s limits as well as the user\'s', async () => {
    const usage = service({ requests_per_day: 5 }, { requests_per_day: 2, tokens_per_month: 10_000 });
    const userId = await insertUser(database.db);
    const key = apiKeyOf(userId, 'key-1');
    await usage.reserve(key, { tokens: 10, costUsd: 0 }, meta);
    await usage.reserve(key, { tokens: 10, costUsd: 0 }, meta);
    const err = await refusal(usage.reserve(key, { tokens: 10, costUsd: 0 }, meta));
    expect(err.message).toMatch(/^Daily request limit of this API key reached \(requests_per_day: 2\); resets in /);
    expect(err.details).toEqual([expect.objectContaining({ limit: 'requests_per_day', scope: 'api_key', value: 2 })]);
    // Another key of the same user has its own allowance; the user's own limit still counts all of them.
    const other = apiKeyOf(userId, 'key-2');
    await usage.reserve(other, { tokens: 10, costUsd: 0 }, meta);
    await usage.reserve(sessionOf(userId), { tokens: 10, costUsd: 0 }, meta);
    await usage.reserve(sessionOf(userId), { tokens: 10, costUsd: 0 }, meta);
    const userErr = await refusal(usage.reserve(other, { tokens: 10, costUsd: 0 }, meta));
    expect(userErr.message).toMatch(/^Daily request limit reached \(requests_per_day: 5\)/);
    expect(userErr.details).toEqual([expect.objectContaining({ scope: 'user' })]);

    // What the key sees: the tighter of the two for each name.
    const seen = (await usage.summary(apiKeyOf(userId, 'key-1'), {})).limits;
    expect(seen.requests_per_day).toMatchObject({ limit: 2, used: 2, remaining: 0, scope: 'api_key' });
    expect(seen.tokens_per_month).toMatchObject({ limit: 10_000, used: 0, reserved: 20, remaining: 9980, scope: 'api_key' });
    const own = (await usage.summary(sessionOf(userId), {})).limits;
    expect(Object.keys(own)).toEqual(['requests_per_day']);
    expect(own.requests_per_day).toMatchObject({ limit: 5, used: 5, remaining: 0, scope: 'user' });
    // Settling a key's call releases the reservation on the key's counters too.
    const k3 = apiKeyOf(userId, 'key-3');
    const keyUsage = service({}, { tokens_per_month: 100 });
    const r = await keyUsage.reserve(k3, { tokens: 100, costUsd: 0 }, meta);
    await r.settle(outcome({ promptTokens: 5, completionTokens: 5 }));
    expect((await keyUsage.summary(k3, {})).limits.tokens_per_month).toMatchObject({ used: 10, reserved: 0, remaining: 90 });
    expect((await events(userId)).find((e) => e.api_key_id === 'key-3')).toMatchObject({ device_id: null, total_tokens: 10 });
  });

  it('429 names the limit and says when it resets, in the message and in Retry-After', async () => {
    const at = Date.parse('2026-11-22T20:48:00Z');
    const usage = service({ tokens_per_day: 100_000 }, {}, { now: () => at });
    const userId = await insertUser(database.db);
    const err = await refusal(usage.reserve(sessionOf(userId), { tokens: 100_001, costUsd: 0 }, meta));
    expect(err).toMatchObject({ code: 'limit_exceeded', statusCode: 429, headers: { 'retry-after': String(3 * 3600 + 12 * 60) } });
    expect(err.message).toBe('Daily token budget reached (tokens_per_day: 100000); resets in 3 h 12 min.');
    expect(err.details).toEqual([{ message: err.message, limit: 'tokens_per_day', value: 100_000, scope: 'user', resets_at: '2026-11-23T00:00:00.000Z' }]);

    const minute = service({ requests_per_minute: 2 }, {}, { now: () => Date.parse('2026-11-22T20:48:30.250Z') });
    await minute.reserve(sessionOf(userId), { tokens: 1, costUsd: 0 }, meta);
    await minute.reserve(sessionOf(userId), { tokens: 1, costUsd: 0 }, meta);
    const rate = await refusal(minute.reserve(sessionOf(userId), { tokens: 1, costUsd: 0 }, meta));
    expect(rate.message).toBe('Request rate limit reached (requests_per_minute: 2); resets in 30 s.');
    expect(rate.headers).toEqual({ 'retry-after': '30' });

    const month = service({ cost_usd_per_month: 1 }, {}, { now: () => Date.parse('2026-11-22T20:48:00Z') });
    const monthErr = await refusal(month.reserve(sessionOf(userId), { tokens: 1, costUsd: 2 }, meta));
    expect(monthErr.message).toBe('Monthly spending budget reached (cost_usd_per_month: 1); resets in 8 d 3 h.');
    expect(monthErr.headers).toEqual({ 'retry-after': String(8 * 86_400 + 3 * 3600 + 12 * 60) });
  });

  it('windows roll over at the UTC boundary; a call settles on the window it was reserved in', async () => {
    let now = Date.parse('2026-11-22T23:59:59Z');
    const usage = service({ requests_per_day: 1, requests_per_minute: 1 }, {}, { now: () => now });
    const principal = sessionOf(await insertUser(database.db));
    const late = await usage.reserve(principal, { tokens: 50, costUsd: 0 }, meta);
    expect((await refusal(usage.reserve(principal, { tokens: 50, costUsd: 0 }, meta))).code).toBe('limit_exceeded');
    now = Date.parse('2026-11-23T00:00:01Z');
    await usage.reserve(principal, { tokens: 50, costUsd: 0 }, meta);
    await late.settle(outcome({ promptTokens: 20, completionTokens: 0 }));
    const byKey = Object.fromEntries((await counters(principal.userId)).map((c) => [c.key.split(':').slice(2).join(':'), [c.requests, c.tokens_used, c.tokens_reserved]]));
    expect(byKey).toEqual({
      'day:2026-11-22': [1, 20, 0],
      'day:2026-11-23': [1, 0, 50],
      'minute:2026-11-22T23:59': [1, 0, 0],
      'minute:2026-11-23T00:00': [1, 0, 0],
    });
  });

  it('a caller without limits has no counters: one read before the call, the usage row after it', async () => {
    const usage = service({});
    const principal = sessionOf(await insertUser(database.db));
    const reservation = await usage.reserve(principal, () => {
      throw new Error('the estimate is not needed without a budget');
    }, meta);
    await reservation.settle(outcome());
    expect(await counters(principal.userId)).toEqual([]);
    expect(await events(principal.userId)).toHaveLength(1);
    expect((await usage.summary(principal, {})).limits).toEqual({});
  });

  it('a limit set in the middle of a window counts what the window already used', async () => {
    const at = Date.parse('2026-11-22T12:00:00Z');
    const principal = sessionOf(await insertUser(database.db));
    const free = service({}, {}, { now: () => at });
    for (let i = 0; i < 3; i++) await (await free.reserve(principal, { tokens: 0, costUsd: 0 }, meta)).settle(outcome({ promptTokens: 100, completionTokens: 100, costUsd: 0.25 }));
    // Yesterday's row is outside today's window.
    await (await service({}, {}, { now: () => at - 86_400_000 }).reserve(principal, { tokens: 0, costUsd: 0 }, meta)).settle(outcome());

    const limited = service({ requests_per_day: 4, tokens_per_day: 1000, cost_usd_per_month: 1 }, {}, { now: () => at });
    // Before any call was checked against them, GET /usage already counts the window's rows.
    const before = (await limited.summary(principal, {})).limits;
    expect(before.requests_per_day).toMatchObject({ used: 3, remaining: 1 });
    expect(before.tokens_per_day).toMatchObject({ used: 600, reserved: 0, remaining: 400 });
    expect(before.cost_usd_per_month).toMatchObject({ used: 0.75 + 0.001, remaining: 0.249 });
    await limited.reserve(principal, { tokens: 300, costUsd: 0.1 }, meta);
    expect((await refusal(limited.reserve(principal, { tokens: 10, costUsd: 0 }, meta))).message).toMatch(/^Daily request limit reached \(requests_per_day: 4\)/);
    expect(await dayCounter(principal.userId)).toMatchObject({ requests: 4, tokens_used: 600, tokens_reserved: 300, cost_used: 0.75 });
  });

  it('old per-minute counters are cleaned up as reservations go by', async () => {
    let now = Date.parse('2026-11-22T10:00:00Z');
    const usage = service({ requests_per_minute: 100 }, {}, { now: () => now, pruneEvery: 2 });
    const userId = await insertUser(database.db);
    await usage.reserve(sessionOf(userId), { tokens: 1, costUsd: 0 }, meta);
    now += 10 * 60_000;
    await usage.reserve(sessionOf(userId), { tokens: 1, costUsd: 0 }, meta);
    const minutes = (await counters(userId)).filter((c) => c.key.includes(':minute:')).map((c) => c.key.split(':minute:')[1]);
    expect(minutes).toEqual(['2026-11-22T10:10']);
  });
});
