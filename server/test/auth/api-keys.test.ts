import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sha256 } from '../../src/platform/crypto.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, promoteToAdmin, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type JsonResponse, type TestServer } from '../helpers/server.js';

interface CreatedKey {
  id: string;
  name: string;
  key: string;
  prefix: string;
  scopes: string[];
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}
type KeyList = { items: Array<Omit<CreatedKey, 'key'>>; next_cursor: string | null };

const KEY_FORMAT = /^(keel_sk_[0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

describeEachDatabase('API keys', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db());
  });
  afterAll(() => s.close());

  const create = (user: TestUser, body: Record<string, unknown>): Promise<JsonResponse<CreatedKey>> =>
    request<CreatedKey>(`${s.url}/api-keys`, { method: 'POST', headers: bearer(user.access_token), json: body });
  const createOk = async (user: TestUser, body: Record<string, unknown> = { name: 'test key', scopes: ['chat'] }): Promise<CreatedKey> => {
    const res = await create(user, body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  const list = (user: TestUser, query = '') => request<KeyList>(`${s.url}/api-keys${query}`, { headers: bearer(user.access_token) });
  const meWithKey = (key: string) => request<{ id: string }>(`${s.url}/me`, { headers: { 'x-api-key': key } });
  const adminUsersWith = (headers: Record<string, string>) => request(`${s.url}/admin/users`, { headers });
  const patchUser = (admin: TestUser, id: string, body: Record<string, unknown>) =>
    request(`${s.url}/admin/users/${id}`, { method: 'PATCH', headers: bearer(admin.access_token), json: body });
  const signUpAdmin = async (): Promise<TestUser> => {
    const admin = await signUp(s);
    await promoteToAdmin(s, admin.id);
    return admin;
  };

  it('creates a typed key shown once; the list never shows it', async () => {
    const user = await signUp(s);
    const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    const created = await createOk(user, { name: '  deploy bot  ', scopes: ['chat', 'llm', 'chat'], expires_at: expiresAt });
    const [, prefix, secret] = KEY_FORMAT.exec(created.key) ?? [];
    expect(prefix).toBe(created.prefix);
    expect(secret).toBeDefined();
    expect(created).toMatchObject({ name: 'deploy bot', scopes: ['llm', 'chat'], expires_at: expiresAt, last_used_at: null });

    const listed = await list(user);
    expect(listed.status).toBe(200);
    expect(listed.body.items).toHaveLength(1);
    expect(Object.keys(listed.body.items[0]!).sort()).toEqual(['created_at', 'expires_at', 'id', 'last_used_at', 'name', 'prefix', 'scopes']);
    expect(listed.body.items[0]).toMatchObject({ id: created.id, prefix: created.prefix, scopes: ['llm', 'chat'] });
    expect(JSON.stringify(listed.body)).not.toContain(secret);
  });

  it('the database holds the prefix and a hash of the secret, never the key', async () => {
    const user = await signUp(s);
    const created = await createOk(user);
    const secret = KEY_FORMAT.exec(created.key)![2]!;
    const rows = await s.server.keel.context.database.db.selectFrom('api_keys').selectAll().where('user_id', '=', user.id).execute();
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows)).not.toContain(secret);
    expect(rows[0]).toMatchObject({ id: created.id, prefix: created.prefix, secret_hash: sha256(secret) });
  });

  it('a key authenticates as its owner via X-API-Key and via Authorization: Bearer', async () => {
    const user = await signUp(s);
    const { key } = await createOk(user);
    const viaHeader = await meWithKey(key);
    expect(viaHeader.status).toBe(200);
    expect(viaHeader.body.id).toBe(user.id);
    const viaBearer = await request<{ id: string }>(`${s.url}/me`, { headers: bearer(key) });
    expect(viaBearer.status).toBe(200);
    expect(viaBearer.body.id).toBe(user.id);
  });

  it('a wrong secret behind a valid prefix, an unknown prefix and a malformed key are all 401', async () => {
    const user = await signUp(s);
    const { key, prefix } = await createOk(user);
    const last = key.at(-1) === 'A' ? 'B' : 'A';
    const wrongSecret = `${key.slice(0, -1)}${last}`;
    const unknownPrefix = `keel_sk_000000000000${key.slice(prefix.length)}`;
    for (const bad of [wrongSecret, unknownPrefix, `${prefix}_short`, 'keel_sk_nonsense']) {
      const res = await meWithKey(bad);
      expect(res.status, bad).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(expectErrorShape(res.body).code).toBe('invalid_api_key');
    }
    expect((await meWithKey(key)).status).toBe(200);
  });

  it('revocation is immediate; the key leaves the list; revoking again, or another user\'s key, is 404', async () => {
    const [user, other] = await Promise.all([signUp(s), signUp(s)]);
    const created = await createOk(user);
    expect((await meWithKey(created.key)).status).toBe(200);

    const stranger = await request(`${s.url}/api-keys/${created.id}`, { method: 'DELETE', headers: bearer(other.access_token) });
    expect(stranger.status).toBe(404);
    expect((await meWithKey(created.key)).status).toBe(200);

    const revoked = await request(`${s.url}/api-keys/${created.id}`, { method: 'DELETE', headers: bearer(user.access_token) });
    expect(revoked.status).toBe(204);
    expect((await meWithKey(created.key)).status).toBe(401);
    expect((await request(`${s.url}/me`, { headers: bearer(created.key) })).status).toBe(401);
    expect((await list(user)).body.items).toEqual([]);
    expect((await request(`${s.url}/api-keys/${created.id}`, { method: 'DELETE', headers: bearer(user.access_token) })).status).toBe(404);
  });

  it('an expired key stops working', async () => {
    const user = await signUp(s);
    const soon = await createOk(user, { name: 'short-lived', scopes: ['chat'], expires_at: new Date(Date.now() + 1500).toISOString() });
    expect((await meWithKey(soon.key)).status).toBe(200);
    await sleep(Date.parse(soon.expires_at!) - Date.now() + 50);
    const res = await meWithKey(soon.key);
    expect(res.status).toBe(401);
    expect(expectErrorShape(res.body).code).toBe('invalid_api_key');

    // The same check, with the expiry moved into the past in the database.
    const other = await createOk(user);
    expect((await meWithKey(other.key)).status).toBe(200);
    await s.server.keel.context.database.db.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', other.id).execute();
    expect((await meWithKey(other.key)).status).toBe(401);
    // Expired keys stay listed, so their owner can see why a client stopped working.
    expect((await list(user)).body.items.map((k) => k.id).sort()).toEqual([soon.id, other.id].sort());
  });

  it('refuses bad input with 400 naming the problem', async () => {
    const user = await signUp(s);
    const unknown = await create(user, { name: 'k', scopes: ['chat', 'root'] });
    expect(unknown.status).toBe(400);
    expect(expectErrorShape(unknown.body).message).toContain('"root"');

    const cases: Array<[Record<string, unknown>, string]> = [
      [{ name: 'k', scopes: [] }, 'scopes'],
      [{ name: 'k' }, 'scopes'],
      [{ name: '', scopes: ['chat'] }, 'name'],
      [{ name: '   ', scopes: ['chat'] }, 'name'],
      [{ name: 'x'.repeat(101), scopes: ['chat'] }, 'name'],
      [{ name: 'k', scopes: ['chat'], expires_at: new Date(Date.now() - 60_000).toISOString() }, 'expires_at'],
      [{ name: 'k', scopes: ['chat'], expires_at: 'tomorrow' }, 'expires_at'],
      [{ name: 'k', scopes: ['chat'], owner: 'someone-else' }, 'owner'],
    ];
    for (const [body, field] of cases) {
      const res = await create(user, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(expectErrorShape(res.body).details?.[0]?.field, JSON.stringify(body)).toBe(field);
    }
    expect((await create(user, { name: 'x'.repeat(100), scopes: ['chat'], expires_at: null })).status).toBe(201);
    expect((await list(user)).body.items).toHaveLength(1);
  });

  it('a non-admin cannot create an admin-scoped key', async () => {
    const user = await signUp(s);
    const res = await create(user, { name: 'power', scopes: ['chat', 'admin'] });
    expect(res.status).toBe(403);
    expect(expectErrorShape(res.body).message).toContain('admin');
    expect((await list(user)).body.items).toEqual([]);
  });

  it('an admin\'s admin-scoped key loses admin power as soon as its owner is demoted', async () => {
    const [admin, otherAdmin] = await Promise.all([signUpAdmin(), signUpAdmin()]);
    const { key } = await createOk(admin, { name: 'ops', scopes: ['admin', 'usage:read'] });
    const withoutAdminScope = await createOk(admin, { name: 'no admin', scopes: ['usage:read'] });
    expect((await adminUsersWith({ 'x-api-key': key })).status).toBe(200);
    expect((await adminUsersWith({ 'x-api-key': withoutAdminScope.key })).status).toBe(403);

    expect((await patchUser(otherAdmin, admin.id, { role: 'user' })).status).toBe(200);
    const demoted = await adminUsersWith({ 'x-api-key': key });
    expect(demoted.status).toBe(403);
    expect((await meWithKey(key)).status).toBe(200);

    expect((await patchUser(otherAdmin, admin.id, { role: 'admin' })).status).toBe(200);
    expect((await adminUsersWith({ 'x-api-key': key })).status).toBe(200);
  });

  it('last_used_at is set when the key is used', async () => {
    const user = await signUp(s);
    const created = await createOk(user);
    expect((await list(user)).body.items[0]!.last_used_at).toBeNull();
    const before = Date.now();
    expect((await meWithKey(created.key)).status).toBe(200);
    const used = (await list(user)).body.items[0]!.last_used_at;
    expect(used).not.toBeNull();
    expect(Date.parse(used!)).toBeGreaterThanOrEqual(before - 1000);
  });

  it('a disabled user\'s access token and API key get 401 on the very next request; enabling restores the key, not the sessions', async () => {
    const [admin, user] = await Promise.all([signUpAdmin(), signUp(s)]);
    const { key } = await createOk(user);
    expect((await request(`${s.url}/me`, { headers: bearer(user.access_token) })).status).toBe(200);
    expect((await meWithKey(key)).status).toBe(200);

    expect((await patchUser(admin, user.id, { disabled: true })).status).toBe(200);
    const session = await request(`${s.url}/me`, { headers: bearer(user.access_token) });
    expect(session.status).toBe(401);
    expect(session.headers.get('www-authenticate')).toBe('Bearer');
    expect((await meWithKey(key)).status).toBe(401);
    expect((await request(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: user.refresh_token } })).status).toBe(401);

    expect((await patchUser(admin, user.id, { disabled: false })).status).toBe(200);
    expect((await meWithKey(key)).status).toBe(200);
    expect((await request(`${s.url}/me`, { headers: bearer(user.access_token) })).status).toBe(401);
  });

  it('lists only the caller\'s unrevoked keys, newest first, page by page', async () => {
    const [user, other] = await Promise.all([signUp(s), signUp(s)]);
    const a = await createOk(user, { name: 'a', scopes: ['chat'] });
    const b = await createOk(user, { name: 'b', scopes: ['chat'] });
    const c = await createOk(user, { name: 'c', scopes: ['chat'] });
    const gone = await createOk(user, { name: 'gone', scopes: ['chat'] });
    await createOk(other, { name: 'not yours', scopes: ['chat'] });
    expect((await request(`${s.url}/api-keys/${gone.id}`, { method: 'DELETE', headers: bearer(user.access_token) })).status).toBe(204);

    const first = await list(user, '?limit=2');
    expect(first.body.items.map((k) => k.name)).toEqual(['c', 'b']);
    expect(first.body.next_cursor).toBe(b.id);
    const second = await list(user, `?limit=2&cursor=${first.body.next_cursor}`);
    expect(second.body.items.map((k) => k.id)).toEqual([a.id]);
    expect(second.body.next_cursor).toBeNull();
    expect(c.id > b.id).toBe(true);
  });

  it('creating and revoking keys are security events of the owner, without the key', async () => {
    const user = await signUp(s);
    const created = await createOk(user, { name: 'audited', scopes: ['sync'] });
    expect((await request(`${s.url}/api-keys/${created.id}`, { method: 'DELETE', headers: bearer(user.access_token) })).status).toBe(204);
    const audit = await request<{ items: Array<{ event: string; details: Record<string, unknown> | null }> }>(`${s.url}/me/audit`, { headers: bearer(user.access_token) });
    const events = audit.body.items.filter((e) => e.event.startsWith('api_key.'));
    expect(events.map((e) => e.event)).toEqual(['api_key.revoked', 'api_key.created']);
    expect(events[1]!.details).toMatchObject({ api_key_id: created.id, name: 'audited', prefix: created.prefix, scopes: ['sync'] });
    expect(events[0]!.details).toMatchObject({ api_key_id: created.id, prefix: created.prefix });
    expect(JSON.stringify(audit.body)).not.toContain(created.key);
  });
});
