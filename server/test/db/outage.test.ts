import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, postgresAvailable, type TestDatabase } from '../helpers/databases.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { probeModule } from '../fixtures/probe.module.js';

/** Polls until `check` passes or the time is up; returns whether it passed. */
async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

// Postgres goes away under a running server (the TCP path to it is cut: open connections reset, new
// ones refused, as when the server stops) and comes back; Keel answers 503 meanwhile and recovers
// without a restart.
describe.runIf(postgresAvailable)('database outage [postgres]', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let s: TestServer;

  beforeAll(async () => {
    db = await createPostgresDatabase();
    const target = new URL(db.env.DATABASE_URL!);
    proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
    const viaProxy = new URL(target);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    s = await startServer(db, { DATABASE_URL: viaProxy.toString(), DATABASE_CONNECT_TIMEOUT_MS: '1000' }, [probeModule]);
  });
  afterAll(async () => {
    await s?.close();
    await proxy?.close();
    await db?.cleanup();
  });

  it('answers 503 on /ready and on database routes while Postgres is gone, and recovers by itself', async () => {
    expect((await request(`${s.url}/ready`)).status).toBe(200);
    expect((await request(`${s.url}/_probe/users`)).status).toBe(200);

    await proxy.cut();

    const ready = await request(`${s.url}/ready`);
    expect(ready.status).toBe(503);
    expect(expectErrorShape(ready.body).code).toBe('not_ready');
    const route = await request(`${s.url}/_probe/users`);
    expect(route.status).toBe(503);
    expect(expectErrorShape(route.body).code).toBe('database_unavailable');
    expect(route.headers.get('retry-after')).toBe('5');
    // the process stays up: liveness is unaffected
    expect((await request(`${s.url}/health`)).status).toBe(200);

    await proxy.restore();

    expect(await eventually(async () => (await request(`${s.url}/ready`)).status === 200)).toBe(true);
    expect((await request(`${s.url}/_probe/users`)).status).toBe(200);
    expect(s.logText()).toContain('database unavailable');
    expect(s.logText()).toContain('readiness check failed');
    // the reply says what is wrong, not where the database lives
    expect(JSON.stringify(ready.body)).not.toMatch(/ECONNREFUSED|127\.0\.0\.1/);
  });
});
