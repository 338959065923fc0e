import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, promoteToAdmin, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';

interface AdminUser {
  id: string;
  email: string | null;
  role: string;
  disabled: boolean;
  disabled_at: string | null;
  limits: Record<string, unknown> | null;
}
type Page<T> = { items: T[]; next_cursor: string | null };
interface AuditItem {
  id: string;
  user_id: string | null;
  event: string;
  details: Record<string, unknown> | null;
}

describeEachDatabase('administration of users', (db) => {
  let s: TestServer;
  let admin: TestUser;
  beforeAll(async () => {
    s = await startServer(db());
    admin = await signUp(s);
    await promoteToAdmin(s, admin.id);
  });
  afterAll(() => s.close());

  const as = (user: TestUser) => bearer(user.access_token);
  const users = (query: string, by = admin) => request<Page<AdminUser>>(`${s.url}/admin/users${query}`, { headers: as(by) });
  const patch = (id: string, body: unknown, by = admin) => request<AdminUser>(`${s.url}/admin/users/${id}`, { method: 'PATCH', headers: as(by), json: body });
  const auditLog = (query = '') => request<Page<AuditItem>>(`${s.url}/admin/audit${query}`, { headers: as(admin) });
  const me = (user: TestUser) => request(`${s.url}/me`, { headers: as(user) });
  const login = (user: TestUser) => request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });

  it('lists users newest first, page by page, searched by e-mail prefix (case-insensitive, wildcards literal)', async () => {
    const tag = `find-${randomBytes(4).toString('hex')}`;
    const a = await signUp(s, { email: `${tag}-a@example.test` });
    const b = await signUp(s, { email: `${tag}-b@example.test` });
    const c = await signUp(s, { email: `${tag}-c@example.test` });

    const first = await users(`?q=${tag.toUpperCase()}&limit=2`);
    expect(first.status).toBe(200);
    expect(first.body.items.map((u) => u.id)).toEqual([c.id, b.id]);
    expect(first.body.next_cursor).toBe(b.id);
    const second = await users(`?q=${tag}&limit=2&cursor=${first.body.next_cursor}`);
    expect(second.body.items.map((u) => u.id)).toEqual([a.id]);
    expect(second.body.next_cursor).toBeNull();
    expect(second.body.items[0]).toMatchObject({ email: `${tag}-a@example.test`, role: 'user', disabled: false, disabled_at: null, limits: null });
    expect(JSON.stringify(first.body)).not.toMatch(/password_hash|argon2|totp_secret/);

    for (const wildcard of ['%', '_', `${tag.slice(0, 4)}_`, '\\']) {
      expect((await users(`?q=${encodeURIComponent(wildcard)}`)).body.items, wildcard).toEqual([]);
    }
    const everyone = await users('?limit=200');
    expect(everyone.body.items.map((u) => u.id)).toEqual(expect.arrayContaining([admin.id, a.id, b.id, c.id]));
  });

  it('promotion and demotion take effect on the user\'s next request', async () => {
    const user = await signUp(s);
    expect((await users('', user)).status).toBe(403);
    const promoted = await patch(user.id, { role: 'admin' });
    expect(promoted.status).toBe(200);
    expect(promoted.body).toMatchObject({ id: user.id, role: 'admin' });
    expect((await users('', user)).status).toBe(200);
    expect((await patch(user.id, { role: 'user' })).body.role).toBe('user');
    expect((await users('', user)).status).toBe(403);
  });

  it('disabling ends every session at once and refuses sign-in; enabling lets the user sign in again', async () => {
    const user = await signUp(s);
    const secondSession = await login(user);
    expect(secondSession.status).toBe(200);

    const disabled = await patch(user.id, { disabled: true });
    expect(disabled.status).toBe(200);
    expect(disabled.body).toMatchObject({ disabled: true, disabled_at: expect.any(String) as string });
    expect((await me(user)).status).toBe(401);
    expect((await request(`${s.url}/me`, { headers: bearer((secondSession.body as { access_token: string }).access_token) })).status).toBe(401);
    expect((await request(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: user.refresh_token } })).status).toBe(401);
    const refused = await login(user);
    expect(refused.status).toBe(403);
    expect(expectErrorShape(refused.body).code).toBe('account_disabled');

    const enabled = await patch(user.id, { disabled: false });
    expect(enabled.body).toMatchObject({ disabled: false, disabled_at: null });
    expect((await me(user)).status).toBe(401);
    expect((await login(user)).status).toBe(200);
  });

  it('an admin cannot demote or disable themself, but can another admin', async () => {
    const self = await patch(admin.id, { role: 'user' });
    expect(self.status).toBe(400);
    expect(expectErrorShape(self.body).details?.[0]?.field).toBe('role');
    expect((await patch(admin.id, { disabled: true })).status).toBe(400);
    expect((await users('')).status).toBe(200);
    // Harmless self-updates are fine.
    expect((await patch(admin.id, { role: 'admin', limits: { requests_per_day: 5 } })).status).toBe(200);

    const second = await signUp(s);
    await promoteToAdmin(s, second.id);
    expect((await patch(second.id, { disabled: true })).status).toBe(200);
    expect((await me(second)).status).toBe(401);
    expect((await patch(second.id, { role: 'user', disabled: false })).body).toMatchObject({ role: 'user', disabled: false });
  });

  it('limits are set, returned in the list, and cleared', async () => {
    const user = await signUp(s);
    const limits = { requests_per_day: 1000, monthly_cost_usd: 12.5, models: ['general'] };
    expect((await patch(user.id, { limits })).body.limits).toEqual(limits);
    const listed = await users(`?q=${encodeURIComponent(user.email)}`);
    expect(listed.body.items).toEqual([expect.objectContaining({ id: user.id, limits })]);
    expect((await patch(user.id, { limits: null })).body.limits).toBeNull();
  });

  it('refuses bad requests: unknown user 404, empty or unknown fields 400, wrong types 400, huge limits 400', async () => {
    const user = await signUp(s);
    expect((await patch('0190a0a0-0000-7000-8000-000000000000', { role: 'admin' })).status).toBe(404);
    for (const body of [{}, { role: 'owner' }, { disabled: 'yes' }, { limits: [1, 2] }, { limits: 'none' }, { email: 'x@example.test' }]) {
      const res = await patch(user.id, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expectErrorShape(res.body);
    }
    const huge = await patch(user.id, { limits: { note: 'x'.repeat(9000) } });
    expect(huge.status).toBe(400);
    expect(expectErrorShape(huge.body).details?.[0]?.field).toBe('limits');
  });

  it('changes are audited as admin.user_updated with the changed fields; the audit log spans users and filters by user', async () => {
    const user = await signUp(s);
    expect((await patch(user.id, { role: 'user' })).status).toBe(200);
    expect((await patch(user.id, { role: 'admin', limits: { requests_per_day: 10 } })).status).toBe(200);
    expect((await patch(user.id, { disabled: true })).status).toBe(200);

    const mine = await auditLog(`?user_id=${user.id}`);
    expect(mine.status).toBe(200);
    expect(mine.body.items.every((e) => e.user_id === user.id)).toBe(true);
    const updates = mine.body.items.filter((e) => e.event === 'admin.user_updated');
    // The first patch changed nothing, so it left no event.
    expect(updates.map((e) => e.details)).toEqual([
      { admin_id: admin.id, changes: { disabled: true } },
      { admin_id: admin.id, changes: { role: { from: 'user', to: 'admin' }, limits: { requests_per_day: 10 } } },
    ]);
    expect(mine.body.items.map((e) => e.event)).toContain('register');

    const all = await auditLog('?limit=200');
    expect(all.body.items.some((e) => e.user_id === admin.id)).toBe(true);
    expect(all.body.items.some((e) => e.user_id === user.id)).toBe(true);

    const page1 = await auditLog(`?user_id=${user.id}&limit=1`);
    expect(page1.body.items).toHaveLength(1);
    expect(page1.body.next_cursor).toBe(page1.body.items[0]!.id);
    const page2 = await auditLog(`?user_id=${user.id}&limit=1&cursor=${page1.body.next_cursor}`);
    expect(page2.body.items[0]!.id < page1.body.items[0]!.id).toBe(true);
  });
});
