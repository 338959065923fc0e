import { afterAll, beforeAll, expect, it } from 'vitest';
import { UsageService, type LimitStatus, type Outcome, type UsageLogView, type UsageSummary } from '../../src/modules/usage/usage.service.js';
import type { Principal } from '../../src/platform/auth.js';
import { createApiKey } from '../helpers/access-matrix.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, promoteToAdmin, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { apiKeyOf, outcome, sessionOf } from './fixtures.js';

type Page<T> = { items: T[]; next_cursor: string | null };
type Summary = UsageSummary;

const LOG_FIELDS = ['api_key_id', 'completion_tokens', 'cost_usd', 'created_at', 'device_id', 'endpoint', 'error_code', 'estimated', 'id', 'latency_ms', 'message_id', 'model', 'prompt_tokens', 'provider', 'request_id', 'status', 'total_tokens', 'ttft_ms'];

/** The limits the server is configured with (as the LLM configuration reads them from the environment). */
const LIMITS_ENV = { LIMIT_REQUESTS_PER_DAY: '100', LIMIT_TOKENS_PER_DAY: '100000', API_KEY_LIMIT_REQUESTS_PER_DAY: '50' };

describeEachDatabase('usage routes', (db) => {
  let s: TestServer;
  let usage: UsageService;
  let admin: TestUser;

  beforeAll(async () => {
    s = await startServer(db(), LIMITS_ENV);
    // Rows are written as the gateway writes them, by a service over the server's own database.
    const { database, config } = s.server.keel.context;
    usage = new UsageService(database.db, config.llm.limits, database.dialect);
    admin = await signUp(s, { name: 'Admin' });
    await promoteToAdmin(s, admin.id);
  });
  afterAll(() => s?.close());

  /** Meters one call for `principal` the way the gateway does: reserve, then settle. */
  const meter = async (principal: Principal, changes: Partial<Outcome> = {}, requestId = 'req-route'): Promise<void> => {
    const reservation = await usage.reserve(principal, { tokens: 500, costUsd: 0.01 }, { requestId });
    await reservation.settle(outcome(changes));
  };
  const get = <T>(path: string, user: TestUser) => request<T>(`${s.url}${path}`, { headers: bearer(user.access_token) });
  const today = () => new Date().toISOString().slice(0, 10);

  it('GET /usage: the caller\'s totals, a day-by-day series of the last 30 days, and their limits', async () => {
    const user = await signUp(s);
    const other = await signUp(s);
    const principal = sessionOf(user.id, user.device_id);
    await meter(principal, { promptTokens: 100, completionTokens: 50, costUsd: 0.002 });
    await meter(principal, { promptTokens: 10, completionTokens: 5, costUsd: 0.0001, model: 'claude-sonnet-4-5', provider: 'anthropic' });
    await meter(sessionOf(other.id), { promptTokens: 9999, completionTokens: 9999 });

    const res = await get<Summary>('/usage', user);
    expect(res.status).toBe(200);
    expect(res.body.totals).toEqual({ requests: 2, prompt_tokens: 110, completion_tokens: 55, cost_usd: 0.0021 });
    expect(res.body.group_by).toBe('day');
    expect(res.body.series).toHaveLength(30);
    expect(res.body.series.at(-1)).toEqual({ group: today(), requests: 2, prompt_tokens: 110, completion_tokens: 55, cost_usd: 0.0021 });
    expect(res.body.series.slice(0, -1).every((d) => d.requests === 0 && d.cost_usd === 0)).toBe(true);
    expect(res.body.series.map((d) => d.group)).toEqual([...res.body.series.map((d) => d.group)].sort());
    expect(Date.parse(res.body.to) - Date.parse(res.body.from)).toBe(30 * 86_400_000);
    const tomorrow = new Date(Date.parse(`${today()}T00:00:00Z`) + 86_400_000).toISOString();
    expect(res.body.limits).toEqual({
      requests_per_day: { limit: 100, used: 2, reserved: 0, remaining: 98, resets_at: tomorrow, scope: 'user' },
      tokens_per_day: { limit: 100_000, used: 165, reserved: 0, remaining: 99_835, resets_at: tomorrow, scope: 'user' },
    });
  });

  it('GET /usage groups by model or endpoint, costliest first, and takes a date range', async () => {
    const user = await signUp(s);
    const principal = sessionOf(user.id, user.device_id);
    await meter(principal, { model: 'cheap', costUsd: 0.001, endpoint: '/llm/code' });
    await meter(principal, { model: 'dear', costUsd: 0.05, endpoint: '/llm/code' });
    await meter(principal, { model: 'dear', costUsd: 0.05, endpoint: '/v1/chat/completions' });

    const byModel = await get<Summary>('/usage?group_by=model', user);
    expect(byModel.body.series.map((r) => [r.group, r.requests, r.cost_usd])).toEqual([['dear', 2, 0.1], ['cheap', 1, 0.001]]);
    const byEndpoint = await get<Summary>('/usage?group_by=endpoint', user);
    expect(byEndpoint.body.series.map((r) => [r.group, r.requests, r.cost_usd])).toEqual([['/llm/code', 2, 0.051], ['/v1/chat/completions', 1, 0.05]]);

    // A date `to` includes that whole day; `from` is inclusive.
    const onlyToday = await get<Summary>(`/usage?from=${today()}&to=${today()}`, user);
    expect(onlyToday.body).toMatchObject({ from: `${today()}T00:00:00.000Z`, totals: { requests: 3 }, series: [{ group: today(), requests: 3 }] });
    const lastYear = await get<Summary>('/usage?from=2025-01-01&to=2025-01-31T12:00:00Z&group_by=model', user);
    expect(lastYear.body).toMatchObject({ from: '2025-01-01T00:00:00.000Z', to: '2025-01-31T12:00:00.000Z', totals: { requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 }, series: [] });
    const days = await get<Summary>('/usage?from=2025-01-01&to=2025-01-03', user);
    expect(days.body.series.map((d) => d.group)).toEqual(['2025-01-01', '2025-01-02', '2025-01-03']);
  });

  it('GET /usage refuses malformed or impossible ranges with 400 naming the field', async () => {
    const user = await signUp(s);
    for (const [query, field] of [['from=yesterday', 'from'], ['to=2026-13-45T99:00:00Z', 'to'], ['from=2026-11-22T10:00:00', 'from'], ['from=2026-11-22&to=2026-11-21', 'from'], ['from=2024-01-01&to=2026-01-01', 'from']] as const) {
      const res = await get(`/usage?${query}`, user);
      expect(res.status, query).toBe(400);
      expect(expectErrorShape(res.body).details?.[0]?.field, query).toBe(field);
    }
    expect((await get('/usage?group_by=user', user)).status).toBe(400);
  });

  it('GET /usage/logs: the caller\'s rows newest first, page by page, with counts and timings only', async () => {
    const user = await signUp(s);
    const principal = sessionOf(user.id, user.device_id);
    for (let i = 0; i < 3; i++) await meter(principal, { model: `m${i}`, estimated: i === 1, messageId: i === 2 ? 'msg-1' : null }, `req-${i}`);
    await meter(sessionOf(admin.id), { model: 'not-mine' });

    const first = await get<Page<UsageLogView>>('/usage/logs?limit=2', user);
    expect(first.status).toBe(200);
    expect(first.body.items.map((r) => r.model)).toEqual(['m2', 'm1']);
    expect(first.body.next_cursor).toBe(first.body.items[1]!.id);
    const second = await get<Page<UsageLogView>>(`/usage/logs?limit=2&cursor=${first.body.next_cursor}`, user);
    expect(second.body.items.map((r) => r.model)).toEqual(['m0']);
    expect(second.body.next_cursor).toBeNull();

    const [newest, middle] = first.body.items;
    expect(Object.keys(newest!).sort()).toEqual(LOG_FIELDS);
    expect(newest).toMatchObject({
      endpoint: '/v1/chat/completions', provider: 'openai', prompt_tokens: 10, completion_tokens: 20, total_tokens: 30, estimated: false,
      cost_usd: 0.001, latency_ms: 120, ttft_ms: 40, status: 'ok', error_code: null, api_key_id: null, device_id: user.device_id, request_id: 'req-2', message_id: 'msg-1',
    });
    expect(middle?.estimated).toBe(true);
    expect(Number.isNaN(Date.parse(newest!.created_at))).toBe(false);
  });

  it('an API-key caller sees the key\'s limits where they are tighter, and its rows carry the key', async () => {
    const user = await signUp(s);
    const key = await createApiKey(s, user, ['usage:read', 'llm']);
    const keyId = (await request<Page<{ id: string }>>(`${s.url}/api-keys`, { headers: bearer(user.access_token) })).body.items[0]!.id;
    await meter(apiKeyOf(user.id, keyId));

    const res = await request<Summary>(`${s.url}/usage`, { headers: { 'x-api-key': key } });
    expect(res.status).toBe(200);
    expect(res.body.limits.requests_per_day).toMatchObject({ limit: 50, used: 1, remaining: 49, scope: 'api_key' });
    expect((res.body.limits.tokens_per_day as LimitStatus).scope).toBe('user');
    const logs = await request<Page<UsageLogView>>(`${s.url}/usage/logs`, { headers: { 'x-api-key': key } });
    expect(logs.body.items).toEqual([expect.objectContaining({ api_key_id: keyId, device_id: null })]);
  });

  it('GET /admin/usage: across users, by user with their e-mail, or one user with their limits', async () => {
    const a = await signUp(s);
    const b = await signUp(s);
    await meter(sessionOf(a.id), { costUsd: 0.5 });
    await meter(sessionOf(b.id), { costUsd: 0.7 });
    await meter(sessionOf(b.id), { costUsd: 0.1 });

    const byUser = await get<Summary>('/admin/usage?group_by=user', admin);
    expect(byUser.status).toBe(200);
    const mine = byUser.body.series.filter((r) => r.group === a.id || r.group === b.id);
    expect(mine).toEqual([
      { group: b.id, email: b.email, requests: 2, prompt_tokens: 20, completion_tokens: 40, cost_usd: 0.8 },
      { group: a.id, email: a.email, requests: 1, prompt_tokens: 10, completion_tokens: 20, cost_usd: 0.5 },
    ]);
    expect(byUser.body.totals.requests).toBeGreaterThanOrEqual(3);
    expect(byUser.body.limits).toEqual({});

    const one = await get<Summary>(`/admin/usage?user_id=${b.id}&group_by=model`, admin);
    expect(one.body.totals).toEqual({ requests: 2, prompt_tokens: 20, completion_tokens: 40, cost_usd: 0.8 });
    expect(one.body.series).toEqual([{ group: 'gpt-4o-mini', requests: 2, prompt_tokens: 20, completion_tokens: 40, cost_usd: 0.8 }]);
    expect(one.body.limits.requests_per_day).toMatchObject({ limit: 100, used: 2, scope: 'user' });

    // The user's own limit overrides (set by an admin) are what GET /usage reports.
    expect((await request(`${s.url}/admin/users/${b.id}`, { method: 'PATCH', headers: bearer(admin.access_token), json: { limits: { requests_per_day: 3, tokens_per_day: null } } })).status).toBe(200);
    const overridden = (await get<Summary>('/usage', b)).body.limits;
    expect(Object.keys(overridden)).toEqual(['requests_per_day']);
    expect(overridden.requests_per_day).toMatchObject({ limit: 3, used: 2, remaining: 1 });
  });

  it('DELETE /me leaves no usage rows behind (events and counters go with the user)', async () => {
    const user = await signUp(s);
    await meter(sessionOf(user.id, user.device_id));
    const database = s.server.keel.context.database.db;
    const count = async (table: 'usage_events' | 'usage_counters') =>
      Number((await database.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).where('user_id', '=', user.id).executeTakeFirstOrThrow()).n);
    // One counter: the day's, which the configured daily limits watch (nothing watches the month).
    expect([await count('usage_events'), await count('usage_counters')]).toEqual([1, 1]);
    const res = await request(`${s.url}/me`, { method: 'DELETE', headers: bearer(user.access_token), json: { password: user.password } });
    expect(res.status).toBe(204);
    expect([await count('usage_events'), await count('usage_counters')]).toEqual([0, 0]);
  });
});
