import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, latestCode, outboxFor, signUp, strongPassword, uniqueEmail } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';

describeEachDatabase('accounts: registration, verification, login', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db());
  });
  afterAll(() => s.close());

  it('registration mails a code; verifying it activates the account and signs in with Keel tokens', async () => {
    const email = uniqueEmail('ada');
    const password = strongPassword();
    const reg = await request(`${s.url}/auth/register`, { method: 'POST', json: { email: `  ${email.toUpperCase()} `, password, name: 'Ada' } });
    expect(reg.status).toBe(202);
    const verified = await request<{ user: { id: string; email: string; email_verified: boolean; name: string }; access_token: string; refresh_token: string; token_type: string; expires_in: number }>(
      `${s.url}/auth/verify-email`, { method: 'POST', json: { token: latestCode(s, email) } });
    expect(verified.status).toBe(200);
    expect(verified.body.user).toMatchObject({ email, email_verified: true, name: 'Ada' });
    expect(verified.body.token_type).toBe('bearer');
    expect(verified.body.expires_in).toBe(15 * 60);
    const me = await request<{ id: string }>(`${s.url}/me`, { headers: bearer(verified.body.access_token) });
    expect(me.body.id).toBe(verified.body.user.id);
  });

  it('a verification code works once', async () => {
    const email = uniqueEmail();
    await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password: strongPassword() } });
    const code = latestCode(s, email);
    expect((await request(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: code } })).status).toBe(200);
    const again = await request(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: code } });
    expect(again.status).toBe(400);
    expect(expectErrorShape(again.body).code).toBe('invalid_token');
  });

  it('registration answers the same for a taken address, and mails its owner instead', async () => {
    const user = await signUp(s);
    const fresh = await request(`${s.url}/auth/register`, { method: 'POST', json: { email: uniqueEmail(), password: strongPassword() } });
    const taken = await request(`${s.url}/auth/register`, { method: 'POST', json: { email: user.email, password: strongPassword() } });
    expect(taken.status).toBe(fresh.status);
    expect(taken.body).toEqual(fresh.body);
    expect(outboxFor(s, user.email).at(-1)).toContain('already has one');
  });

  it('an unverified registration cannot sign in, and cannot squat the address', async () => {
    const email = uniqueEmail();
    const squatter = strongPassword();
    await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password: squatter } });
    const login = await request(`${s.url}/auth/login`, { method: 'POST', json: { email, password: squatter } });
    expect(login.status).toBe(403);
    expect(expectErrorShape(login.body).code).toBe('email_not_verified');
    // the real owner registers again and verifies: their password is the one that counts
    const owner = strongPassword();
    await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password: owner } });
    expect((await request(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: latestCode(s, email) } })).status).toBe(200);
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email, password: squatter } })).status).toBe(401);
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email, password: owner } })).status).toBe(200);
  });

  it('login: unknown e-mail and wrong password give the same answer', async () => {
    const user = await signUp(s);
    const wrong = await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: 'not-the-password-123' } });
    const unknown = await request(`${s.url}/auth/login`, { method: 'POST', json: { email: uniqueEmail(), password: 'not-the-password-123' } });
    expect([wrong.status, unknown.status]).toEqual([401, 401]);
    const a = expectErrorShape(wrong.body);
    const b = expectErrorShape(unknown.body);
    expect([a.code, a.message]).toEqual([b.code, b.message]);
    expect(a.code).toBe('invalid_credentials');
    expect(wrong.headers.get('www-authenticate')).toBe('Bearer');
  });

  it('passwords are compared exactly as sent (no trimming, case-sensitive) and e-mail case-insensitively', async () => {
    const password = ` ${strongPassword()} `;
    const user = await signUp(s, { password });
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email.toUpperCase(), password } })).status).toBe(200);
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: password.trim() } })).status).toBe(401);
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: password.toUpperCase() } })).status).toBe(401);
  });

  it.each([
    ['too short', 'Ab1!xyz'],
    ['too long', 'x'.repeat(257)],
    ['among the most common', 'password123'],
    ['a common one in another case', 'QWERTY123'],
  ])('refuses a password that is %s', async (_why, password) => {
    const res = await request(`${s.url}/auth/register`, { method: 'POST', json: { email: uniqueEmail(), password } });
    expect(res.status).toBe(400);
    expect(expectErrorShape(res.body).details?.[0]?.field).toBe('password');
  });

  it('accepts a 128-character password', async () => {
    const password = `${strongPassword()}${'z'.repeat(100)}`.slice(0, 128);
    const user = await signUp(s, { password });
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password } })).status).toBe(200);
  });

  it('refuses a malformed e-mail with the field named', async () => {
    const res = await request(`${s.url}/auth/register`, { method: 'POST', json: { email: 'not-an-email', password: strongPassword() } });
    expect(res.status).toBe(400);
    expect(expectErrorShape(res.body).details?.[0]?.field).toBe('email');
  });

  it('password reset: 202 for any address; the mailed token sets a new password once and ends every session', async () => {
    const user = await signUp(s);
    const unknown = await request(`${s.url}/auth/password/forgot`, { method: 'POST', json: { email: uniqueEmail() } });
    const known = await request(`${s.url}/auth/password/forgot`, { method: 'POST', json: { email: user.email } });
    expect([unknown.status, known.status]).toEqual([202, 202]);
    expect(unknown.body).toEqual(known.body);
    const token = latestCode(s, user.email);
    const next = strongPassword();
    expect((await request(`${s.url}/auth/password/reset`, { method: 'POST', json: { token, password: next } })).status).toBe(200);
    expect((await request(`${s.url}/auth/password/reset`, { method: 'POST', json: { token, password: strongPassword() } })).status).toBe(400);
    expect((await request(`${s.url}/me`, { headers: bearer(user.access_token) })).status).toBe(401);
    expect((await request(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: user.refresh_token } })).status).toBe(401);
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } })).status).toBe(401);
    expect((await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: next } })).status).toBe(200);
  });

  it('changing the password needs the current one and ends the other sessions, not this one', async () => {
    const user = await signUp(s);
    const other = await request<{ access_token: string }>(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });
    const bad = await request(`${s.url}/me/password`, { method: 'POST', headers: bearer(user.access_token), json: { current_password: 'wrong-password-1', new_password: strongPassword() } });
    expect(bad.status).toBe(401);
    const next = strongPassword();
    expect((await request(`${s.url}/me/password`, { method: 'POST', headers: bearer(user.access_token), json: { current_password: user.password, new_password: next } })).status).toBe(204);
    expect((await request(`${s.url}/me`, { headers: bearer(user.access_token) })).status).toBe(200);
    expect((await request(`${s.url}/me`, { headers: bearer(other.body.access_token) })).status).toBe(401);
  });

  it('GET/PATCH /me read and change the profile', async () => {
    const user = await signUp(s, { name: 'Before' });
    const patched = await request<{ name: string }>(`${s.url}/me`, { method: 'PATCH', headers: bearer(user.access_token), json: { name: 'After' } });
    expect(patched.body.name).toBe('After');
    const bad = await request(`${s.url}/me`, { method: 'PATCH', headers: bearer(user.access_token), json: { role: 'admin' } });
    expect(bad.status).toBe(400);
    expect((await request<{ role: string }>(`${s.url}/me`, { headers: bearer(user.access_token) })).body.role).toBe('user');
  });

  it('DELETE /me needs the password, then erases the account and its sessions', async () => {
    const user = await signUp(s);
    expect((await request(`${s.url}/me`, { method: 'DELETE', headers: bearer(user.access_token), json: { password: 'wrong-password-1' } })).status).toBe(401);
    expect((await request(`${s.url}/me`, { method: 'DELETE', headers: bearer(user.access_token), json: { password: user.password } })).status).toBe(204);
    expect((await request(`${s.url}/me`, { headers: bearer(user.access_token) })).status).toBe(401);
    const database = s.server.keel.context.database.db;
    for (const table of ['users', 'devices', 'sessions', 'audit_events'] as const) {
      const column = table === 'users' ? 'id' : 'user_id';
      const rows = await database.selectFrom(table).select(column).where(column, '=', user.id).execute();
      expect(rows, table).toEqual([]);
    }
  });

  it('records security events, readable at GET /me/audit, newest first', async () => {
    const user = await signUp(s);
    await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: 'wrong-password-1' } });
    await request(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });
    const audit = await request<{ items: Array<{ event: string; details: Record<string, unknown> | null }>; next_cursor: string | null }>(`${s.url}/me/audit?limit=2`, { headers: bearer(user.access_token) });
    expect(audit.status).toBe(200);
    expect(audit.body.items.map((e) => e.event)).toEqual(['login.success', 'login.failure']);
    expect(audit.body.next_cursor).not.toBeNull();
    const rest = await request<{ items: Array<{ event: string }> }>(`${s.url}/me/audit?cursor=${audit.body.next_cursor}`, { headers: bearer(user.access_token) });
    expect(rest.body.items.map((e) => e.event)).toEqual(expect.arrayContaining(['email.verified', 'register']));
  });
});

describeEachDatabase('per-account rate limits', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    // Behind a trusted proxy, so each request can come from its own client address: what is limited
    // below is the account or token, not the IP.
    s = await startServer(db(), { AUTH_RATE_LIMIT_MAX: '3', TRUST_PROXY: 'true' });
  });
  afterAll(() => s.close());
  let n = 0;
  const fromNewIp = () => ({ 'x-forwarded-for': `198.51.100.${++n}` });

  it('login attempts on one account from many addresses are limited, with Retry-After', async () => {
    const email = uniqueEmail();
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(`${s.url}/auth/login`, { method: 'POST', headers: fromNewIp(), json: { email, password: `guess-number-${i}` } })).status);
    expect(statuses).toEqual([401, 401, 401, 429]);
    const limited = await request(`${s.url}/auth/login`, { method: 'POST', headers: fromNewIp(), json: { email, password: 'guess-again-1' } });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(expectErrorShape(limited.body).code).toBe('rate_limited');
    // another account is unaffected
    expect((await request(`${s.url}/auth/login`, { method: 'POST', headers: fromNewIp(), json: { email: uniqueEmail(), password: 'guess-number-0' } })).status).toBe(401);
  });

  it('one refresh token presented from many addresses is limited', async () => {
    const token = 'krt_not-a-real-token-but-counted-all-the-same';
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(`${s.url}/auth/refresh`, { method: 'POST', headers: fromNewIp(), json: { refresh_token: token } })).status);
    expect(statuses).toEqual([401, 401, 401, 429]);
  });

  it('the per-IP limit applies on its own too', async () => {
    const ip = fromNewIp();
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(`${s.url}/auth/password/forgot`, { method: 'POST', headers: ip, json: { email: uniqueEmail() } })).status);
    expect(statuses).toEqual([202, 202, 202, 429]);
  });
});
