import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, postgresAvailable, type TestDatabase } from '../helpers/databases.js';
import { bearer, signUp } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';

// Two Keel instances on one Postgres: what one revokes, the other refuses on the very next request.
describe.runIf(postgresAvailable)('revocation across instances [postgres]', () => {
  let db: TestDatabase;
  let a: TestServer;
  let b: TestServer;
  beforeAll(async () => {
    db = await createPostgresDatabase();
    a = await startServer(db);
    b = await startServer(db);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.cleanup();
  });

  it('a device revoked on instance A is refused by instance B at once, access and refresh tokens alike', async () => {
    const user = await signUp(a);
    const phone = await request<{ device_id: string; access_token: string; refresh_token: string }>(`${a.url}/auth/pair-device`, { method: 'POST', headers: bearer(user.access_token), json: { device_name: 'Phone', device_type: 'mobile' } });
    expect((await request(`${b.url}/me`, { headers: bearer(phone.body.access_token) })).status).toBe(200);
    expect((await request(`${a.url}/auth/device/${phone.body.device_id}`, { method: 'DELETE', headers: bearer(user.access_token) })).status).toBe(204);
    expect((await request(`${b.url}/me`, { headers: bearer(phone.body.access_token) })).status).toBe(401);
    expect((await request(`${b.url}/auth/refresh`, { method: 'POST', json: { refresh_token: phone.body.refresh_token } })).status).toBe(401);
  });

  it('a token issued by one instance works on the other (shared secret, shared database)', async () => {
    const user = await signUp(a);
    const refreshed = await request<{ access_token: string }>(`${b.url}/auth/refresh`, { method: 'POST', json: { refresh_token: user.refresh_token } });
    expect(refreshed.status).toBe(200);
    expect((await request(`${a.url}/me`, { headers: bearer(refreshed.body.access_token) })).status).toBe(200);
  });
});
