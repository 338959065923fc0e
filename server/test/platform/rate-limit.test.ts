import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteDatabase, describeEachDatabase, type TestDatabase } from '../helpers/databases.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { probeModule } from '../fixtures/probe.module.js';

const REDIS_URL = process.env.REDIS_URL;
if (process.env.CI && !REDIS_URL) throw new Error('CI is set but REDIS_URL is not: the Redis-backed tests would be skipped.');

describeEachDatabase('rate limits', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), { RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '60000', AUTH_RATE_LIMIT_MAX: '2' }, [probeModule]);
  });
  afterAll(() => s.close());

  it('the global limit answers 429 with Retry-After and the error shape once exceeded', async () => {
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof request>> | undefined;
    for (let i = 0; i < 6; i++) {
      last = await request(`${s.url}/_probe/users`);
      statuses.push(last.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(0);
    const err = expectErrorShape(last!.body);
    expect(err.code).toBe('rate_limited');
    expect(err.type).toBe('rate_limit_error');
  });

  it('unknown URLs count against the limit too', async () => {
    expect((await request(`${s.url}/scan/${Math.random()}`)).status).toBe(429);
  });

  it('health, readiness and metrics are never rate limited', async () => {
    for (let i = 0; i < 10; i++) {
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
      expect((await fetch(`${s.url}/ready`)).status).toBe(200);
    }
    expect((await fetch(`${s.url}/metrics`)).status).toBe(200);
  });

  it('authentication routes opt into a stricter limit of their own', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(`${s.url}/_probe/login`, { method: 'POST', json: {} })).status);
    expect(statuses).toEqual([200, 200, 429]);
  });
});

describe.runIf(REDIS_URL)('rate limits shared through Redis', () => {
  let db: TestDatabase;
  let a: TestServer;
  let b: TestServer;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    // A prefix of its own keeps this test's counters apart from any other run sharing the Redis.
    const env = { REDIS_URL: REDIS_URL!, REDIS_KEY_PREFIX: `keel-test-${randomBytes(4).toString('hex')}:`, RATE_LIMIT_MAX: '4' };
    a = await startServer(db, env, [probeModule]);
    b = await startServer(db, env, [probeModule]);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.cleanup();
  });

  it('two instances enforce one limit between them', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await request(`${(i % 2 === 0 ? a : b).url}/_probe/users`)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  });
});
