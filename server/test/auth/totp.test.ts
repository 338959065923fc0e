import { setTimeout as sleep } from 'node:timers/promises';
import { generate } from 'otplib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase, type TestDatabase } from '../helpers/databases.js';
import { bearer, latestCode, signUp, strongPassword, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type JsonResponse, type TestServer } from '../helpers/server.js';

const PERIOD = 30;
const stepNow = (): number => Math.floor(Date.now() / 1000 / PERIOD);
const codeAt = (secret: string, step: number): Promise<string> => generate({ secret, epoch: step * PERIOD });

/**
 * The authenticator app of a test. Each fresh code belongs to a step the server has not accepted
 * yet and is at most one step ahead of now, so it stays inside the server's ±1 window even if a
 * 30-s boundary passes between generating and sending it.
 */
class Authenticator {
  private lastStep = -1;
  /** The code most recently handed out (for "the same code again"). */
  lastCode = '';
  constructor(readonly secret: string) {}

  async fresh(): Promise<string> {
    while (this.lastStep >= stepNow() + 1) await sleep(1000);
    const step = Math.max(stepNow(), this.lastStep + 1);
    this.lastStep = step;
    this.lastCode = await codeAt(this.secret, step);
    return this.lastCode;
  }

  /** A well-formed code that is not valid at any step near now. */
  async wrong(): Promise<string> {
    const now = stepNow();
    const near = new Set(await Promise.all([-2, -1, 0, 1, 2].map((d) => codeAt(this.secret, now + d))));
    for (let n = 123_456; ; n = (n + 111_111) % 1_000_000) {
      const candidate = String(n).padStart(6, '0');
      if (!near.has(candidate)) return candidate;
    }
  }
}

interface Enrolled {
  user: TestUser;
  app: Authenticator;
  recoveryCodes: string[];
}

function totpSuite(s: () => TestServer) {
  const post = <T = Record<string, unknown>>(path: string, json: unknown, token?: string): Promise<JsonResponse<T>> =>
    request<T>(`${s().url}${path}`, { method: 'POST', json, ...(token ? { headers: bearer(token) } : {}) });
  const setup = (token: string) => request<{ secret: string; otpauth_url: string }>(`${s().url}/auth/2fa/setup`, { method: 'POST', headers: bearer(token) });
  /** Signs in; `otp: null` sends no code at all. */
  const login = (user: TestUser, otp: string | null, password = user.password) =>
    post<{ access_token: string; user: { two_factor_enabled: boolean } }>('/auth/login', { email: user.email, password, ...(otp !== null ? { otp } : {}) });
  const me = (token: string) => request<{ two_factor_enabled: boolean }>(`${s().url}/me`, { headers: bearer(token) });

  /** A signed-up user with 2FA on. */
  const enrol = async (): Promise<Enrolled> => {
    const user = await signUp(s());
    const started = await setup(user.access_token);
    expect(started.status).toBe(200);
    const app = new Authenticator(started.body.secret);
    const enabled = await post<{ recovery_codes: string[] }>('/auth/2fa/enable', { otp: await app.fresh() }, user.access_token);
    expect(enabled.status).toBe(200);
    return { user, app, recoveryCodes: enabled.body.recovery_codes };
  };
  return { post, setup, login, me, enrol };
}

describeEachDatabase('TOTP two-factor authentication', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), { AUTH_RATE_LIMIT_MAX: '100000' });
  });
  afterAll(() => s.close());
  const { post, setup, login, me, enrol } = totpSuite(() => s);

  it('setup returns the secret and an otpauth:// URL for the account; 2FA stays off until enabled', async () => {
    const user = await signUp(s);
    const res = await setup(user.access_token);
    expect(res.status).toBe(200);
    expect(res.body.secret).toMatch(/^[A-Z2-7]{32}$/);
    const url = new URL(res.body.otpauth_url);
    expect(url.protocol).toBe('otpauth:');
    expect(res.body.otpauth_url.startsWith(`otpauth://totp/Keel:${encodeURIComponent(user.email)}?`)).toBe(true);
    expect(url.searchParams.get('issuer')).toBe('Keel');
    expect(url.searchParams.get('secret')).toBe(res.body.secret);

    expect((await me(user.access_token)).body.two_factor_enabled).toBe(false);
    expect((await login(user, null)).status).toBe(200);
  });

  it('enable needs a valid code: a wrong one is refused and 2FA stays off; a right one returns the recovery codes once', async () => {
    const user = await signUp(s);
    const notSetUp = await post('/auth/2fa/enable', { otp: '123456' }, user.access_token);
    expect(notSetUp.status).toBe(409);

    const app = new Authenticator((await setup(user.access_token)).body.secret);
    const wrong = await post('/auth/2fa/enable', { otp: await app.wrong() }, user.access_token);
    expect(wrong.status).toBe(400);
    expect(expectErrorShape(wrong.body).code).toBe('otp_invalid');
    expect((await me(user.access_token)).body.two_factor_enabled).toBe(false);
    expect((await login(user, null)).status).toBe(200);

    const enabled = await post<{ recovery_codes: string[] }>('/auth/2fa/enable', { otp: await app.fresh() }, user.access_token);
    expect(enabled.status).toBe(200);
    const codes = enabled.body.recovery_codes;
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const code of codes) expect(code).toMatch(/^[0-9a-z]{5}-[0-9a-z]{5}$/);
    expect((await me(user.access_token)).body.two_factor_enabled).toBe(true);

    // Once on, neither setup nor enable can replace the secret or hand out new codes.
    expect((await setup(user.access_token)).status).toBe(409);
    expect((await post('/auth/2fa/enable', { otp: await app.fresh() }, user.access_token)).status).toBe(409);
  });

  it('login then needs a code: none → otp_required, wrong → otp_invalid, right → 200, the same code again → otp_invalid', async () => {
    const { user, app } = await enrol();
    const none = await login(user, null);
    expect(none.status).toBe(401);
    expect(expectErrorShape(none.body).code).toBe('otp_required');

    const wrong = await login(user, await app.wrong());
    expect(wrong.status).toBe(401);
    expect(expectErrorShape(wrong.body).code).toBe('otp_invalid');

    const right = await login(user, await app.fresh());
    expect(right.status).toBe(200);
    expect(right.body.user.two_factor_enabled).toBe(true);

    const replay = await login(user, app.lastCode);
    expect(replay.status).toBe(401);
    expect(expectErrorShape(replay.body).code).toBe('otp_invalid');

    // The code used to enable 2FA is spent too.
    const fresh = await enrol();
    expect((await login(fresh.user, fresh.app.lastCode)).status).toBe(401);
  });

  it('a wrong password with a right code is still invalid_credentials, and does not spend the code', async () => {
    const { user, app } = await enrol();
    const code = await app.fresh();
    const res = await login(user, code, strongPassword());
    expect(res.status).toBe(401);
    expect(expectErrorShape(res.body).code).toBe('invalid_credentials');
    expect((await login(user, code)).status).toBe(200);
  });

  it('two concurrent logins with one code, or one recovery code: exactly one passes', async () => {
    const { user, app, recoveryCodes } = await enrol();
    const code = await app.fresh();
    const byCode = await Promise.all([login(user, code), login(user, code), login(user, code)]);
    expect(byCode.map((r) => r.status).sort()).toEqual([200, 401, 401]);

    const recovery = recoveryCodes[0]!;
    const byRecovery = await Promise.all([login(user, recovery), login(user, recovery), login(user, recovery)]);
    expect(byRecovery.map((r) => r.status).sort()).toEqual([200, 401, 401]);
  });

  it('a recovery code signs in once; typing it in capitals or without the dash is fine', async () => {
    const { user, recoveryCodes } = await enrol();
    const first = await login(user, recoveryCodes[0]!.toUpperCase().replace('-', ''));
    expect(first.status).toBe(200);
    const again = await login(user, recoveryCodes[0]!);
    expect(again.status).toBe(401);
    expect(expectErrorShape(again.body).code).toBe('otp_invalid');
    expect((await login(user, recoveryCodes[1]!)).status).toBe(200);
    expect((await login(user, 'zzzzz-zzzzz')).status).toBe(401);
  });

  it('disable needs the password or a code: nothing → 400, wrong password → 401, right password → 200 and login needs no code again', async () => {
    const { user } = await enrol();
    const nothing = await post('/auth/2fa/disable', {}, user.access_token);
    expect(nothing.status).toBe(400);

    const wrong = await post('/auth/2fa/disable', { password: strongPassword() }, user.access_token);
    expect(wrong.status).toBe(401);
    expect(expectErrorShape(wrong.body).code).toBe('invalid_credentials');
    expect((await me(user.access_token)).body.two_factor_enabled).toBe(true);

    const ok = await post('/auth/2fa/disable', { password: user.password }, user.access_token);
    expect(ok.status).toBe(200);
    expect((await me(user.access_token)).body.two_factor_enabled).toBe(false);
    expect((await login(user, null)).status).toBe(200);
    // The recovery codes died with it, and there is nothing left to disable.
    const row = await s.server.keel.context.database.db.selectFrom('users').select(['totp_secret_enc', 'totp_enabled_at', 'totp_last_step']).where('id', '=', user.id).executeTakeFirstOrThrow();
    expect(row).toEqual({ totp_secret_enc: null, totp_enabled_at: null, totp_last_step: null });
    const left = await s.server.keel.context.database.db.selectFrom('recovery_codes').select('id').where('user_id', '=', user.id).execute();
    expect(left).toEqual([]);
    expect((await post('/auth/2fa/disable', { password: user.password }, user.access_token)).status).toBe(409);
  });

  it('disable with a code: a used code is refused, a fresh code or a recovery code works', async () => {
    const { user, app } = await enrol();
    const used = await post('/auth/2fa/disable', { otp: app.lastCode }, user.access_token);
    expect(used.status).toBe(401);
    expect(expectErrorShape(used.body).code).toBe('otp_invalid');
    expect((await post('/auth/2fa/disable', { otp: await app.fresh() }, user.access_token)).status).toBe(200);
    expect((await me(user.access_token)).body.two_factor_enabled).toBe(false);

    const other = await enrol();
    expect((await post('/auth/2fa/disable', { otp: other.recoveryCodes[3]! }, other.user.access_token)).status).toBe(200);
  });

  it('a password reset ends every session and does not bypass 2FA', async () => {
    const { user, app } = await enrol();
    expect((await post('/auth/password/forgot', { email: user.email })).status).toBe(202);
    const password = strongPassword();
    expect((await post('/auth/password/reset', { token: latestCode(s, user.email), password })).status).toBe(200);
    expect((await me(user.access_token)).status).toBe(401);

    const noCode = await login(user, null, password);
    expect(noCode.status).toBe(401);
    expect(expectErrorShape(noCode.body).code).toBe('otp_required');
    expect((await login(user, await app.fresh(), password)).status).toBe(200);
  });

  it('the database holds neither the TOTP secret nor any recovery code in plaintext', async () => {
    const { user, app, recoveryCodes } = await enrol();
    const { db } = s.server.keel.context.database;
    const userRow = await db.selectFrom('users').selectAll().where('id', '=', user.id).executeTakeFirstOrThrow();
    expect(userRow.totp_secret_enc).toMatch(/^v1\./);
    const userDump = JSON.stringify(userRow);
    expect(userDump).not.toContain(app.secret);
    expect(userDump.toLowerCase()).not.toContain(app.secret.toLowerCase());

    const codeRows = await db.selectFrom('recovery_codes').selectAll().where('user_id', '=', user.id).execute();
    expect(codeRows).toHaveLength(10);
    const codeDump = JSON.stringify(codeRows).toLowerCase();
    for (const code of recoveryCodes) {
      expect(codeDump).not.toContain(code);
      expect(codeDump).not.toContain(code.replace('-', ''));
    }
    for (const row of codeRows) expect(row.code_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('the audit log records 2FA changes and recovery code use', async () => {
    const { user, recoveryCodes } = await enrol();
    const signedIn = await login(user, recoveryCodes[0]!);
    expect(signedIn.status).toBe(200);
    const token = signedIn.body.access_token;
    expect((await post('/auth/2fa/disable', { password: strongPassword() }, token)).status).toBe(401);
    expect((await post('/auth/2fa/disable', { password: user.password }, token)).status).toBe(200);

    const audit = await request<{ items: Array<{ event: string; details: Record<string, unknown> | null }> }>(`${s.url}/me/audit`, { headers: bearer(token) });
    expect(audit.status).toBe(200);
    const events = audit.body.items.map((e) => e.event);
    expect(events).toEqual(expect.arrayContaining(['2fa.enabled', '2fa.recovery_code_used', '2fa.disable_failed', '2fa.disabled']));
    expect(audit.body.items.find((e) => e.event === '2fa.recovery_code_used')?.details).toEqual({ remaining: 9 });
    expect(audit.body.items.find((e) => e.event === '2fa.disabled')?.details).toEqual({ method: 'password' });
    // Nothing in the log gives a code away.
    expect(JSON.stringify(audit.body)).not.toContain(recoveryCodes[0]!);
  });
});

describeEachDatabase('TOTP rate limits', (db) => {
  const LIMIT = 3;
  let servers: TestServer[] = [];
  // A server per test, so the per-IP counters of one test do not spill into the other.
  const fresh = async (database: TestDatabase): Promise<TestServer> => {
    const server = await startServer(database, { AUTH_RATE_LIMIT_MAX: String(LIMIT), AUTH_RATE_LIMIT_WINDOW_MS: '60000' });
    servers.push(server);
    return server;
  };
  afterAll(async () => {
    await Promise.all(servers.map((x) => x.close()));
    servers = [];
  });

  const expect429 = (res: JsonResponse) => {
    expect(res.status).toBe(429);
    expect(expectErrorShape(res.body).code).toBe('rate_limited');
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
  };

  it('code guesses at login stop at AUTH_RATE_LIMIT_MAX with 429 and Retry-After', async () => {
    const s = await fresh(db());
    const { login, enrol } = totpSuite(() => s);
    const { user, app } = await enrol();
    for (let i = 0; i < LIMIT; i++) expect((await login(user, await app.wrong())).status).toBe(401);
    expect429(await login(user, await app.wrong()));
  });

  it('the per-account limit counts every 2FA route of the account together', async () => {
    const s = await fresh(db());
    const { post, setup } = totpSuite(() => s);
    const user = await signUp(s);
    const app = new Authenticator((await setup(user.access_token)).body.secret);
    for (let i = 0; i < LIMIT - 1; i++) expect((await post('/auth/2fa/enable', { otp: await app.wrong() }, user.access_token)).status).toBe(400);
    // The first request to /auth/2fa/disable from this address, but the account's fourth 2FA attempt.
    expect429(await post('/auth/2fa/disable', { password: user.password }, user.access_token));
    // Another account is not affected by this one's guesses.
    const other = await signUp(s);
    expect((await setup(other.access_token)).status).toBe(200);
  });
});
