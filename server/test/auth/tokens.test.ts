import { generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { deriveKey } from '../../src/platform/crypto.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';

const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

describeEachDatabase('access tokens', (db) => {
  let s: TestServer;
  let user: TestUser;
  let claims: { sub: string; sid: string; did: string };
  let key: Uint8Array;
  beforeAll(async () => {
    s = await startServer(db());
    user = await signUp(s);
    const payload = JSON.parse(Buffer.from(user.access_token.split('.')[1]!, 'base64url').toString()) as { sub: string; sid: string; did: string };
    claims = { sub: payload.sub, sid: payload.sid, did: payload.did };
    // the same derivation the server uses, so these forged tokens differ from real ones only in what each test changes
    key = deriveKey(s.config.secretKey, 'access-token');
  });
  afterAll(() => s.close());

  const forge = (opts: { iss?: string; aud?: string; exp?: number; typ?: string; tokenType?: string; sid?: string } = {}) =>
    new SignJWT({ sid: opts.sid ?? claims.sid, did: claims.did, token_type: opts.tokenType ?? 'access' })
      .setProtectedHeader({ alg: 'HS256', typ: opts.typ ?? 'at+jwt' })
      .setIssuer(opts.iss ?? 'keel').setAudience(opts.aud ?? 'keel-api').setSubject(claims.sub).setJti('forged').setIssuedAt()
      .setExpirationTime(opts.exp ?? Math.floor(Date.now() / 1000) + 600)
      .sign(key);

  const status = async (token: string) => (await request(`${s.url}/me`, { headers: bearer(token) })).status;

  it('a correctly forged token with the server key is accepted (so the refusals below are about the claim each changes)', async () => {
    expect(await status(await forge())).toBe(200);
  });

  it('carries iss, aud, sub, exp, iat, jti, the session and device ids and a token type', () => {
    const [header, payload] = user.access_token.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>);
    expect(header).toEqual({ alg: 'HS256', typ: 'at+jwt' });
    expect(Object.keys(payload!).sort()).toEqual(['aud', 'did', 'exp', 'iat', 'iss', 'jti', 'sid', 'sub', 'token_type']);
    expect((payload!.exp as number) - (payload!.iat as number)).toBe(15 * 60);
  });

  it.each([
    ['wrong issuer', { iss: 'someone-else' }],
    ['wrong audience', { aud: 'another-api' }],
    ['expired', { exp: Math.floor(Date.now() / 1000) - 60 }],
    ['wrong typ header', { typ: 'JWT' }],
    ['wrong token type claim', { tokenType: 'refresh' }],
    ['unknown session', { sid: '00000000-0000-7000-8000-000000000000' }],
  ])('refuses a token with a %s', async (_name, change) => {
    const res = await request(`${s.url}/me`, { headers: bearer(await forge(change)) });
    expect(res.status).toBe(401);
    expect(expectErrorShape(res.body).code).toBe('invalid_token');
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
  });

  it('refuses alg "none"', async () => {
    const payload = JSON.parse(Buffer.from(user.access_token.split('.')[1]!, 'base64url').toString()) as object;
    expect(await status(`${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(payload)}.`)).toBe(401);
  });

  it('refuses an RS256 token (algorithm confusion) and an HS256 token signed with another secret', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const rs = await new SignJWT({ sid: claims.sid, did: claims.did, token_type: 'access' }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt' })
      .setIssuer('keel').setAudience('keel-api').setSubject(claims.sub).setJti('x').setIssuedAt().setExpirationTime('10m').sign(privateKey);
    expect(await status(rs)).toBe(401);
    const otherSecret = await new SignJWT({ sid: claims.sid, did: claims.did, token_type: 'access' }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })
      .setIssuer('keel').setAudience('keel-api').setSubject(claims.sub).setJti('x').setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode('another-secret-another-secret-xx'));
    expect(await status(otherSecret)).toBe(401);
  });

  it('refuses a refresh token used as an access token, garbage, and a malformed Authorization header', async () => {
    expect(await status(user.refresh_token)).toBe(401);
    expect(await status('not.a.jwt')).toBe(401);
    const res = await request(`${s.url}/me`, { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
    expect(res.status).toBe(401);
  });

  it('no credentials → 401 with WWW-Authenticate', async () => {
    const res = await request(`${s.url}/me`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
    expect(expectErrorShape(res.body).code).toBe('unauthorized');
  });
});

describeEachDatabase('refresh tokens', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db());
  });
  afterAll(() => s.close());

  const refresh = (token: string) => request<{ access_token: string; refresh_token: string }>(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: token } });
  const ageSpentTokens = async () => {
    // Step out of the grace window without waiting 30 s: the server compares used_at with now.
    await s.server.keel.context.database.db.updateTable('refresh_tokens').set({ used_at: new Date(Date.now() - 120_000).toISOString() }).where('used_at', 'is not', null).execute();
  };

  it('rotate on every use: each refresh returns a new pair and the old refresh token is spent', async () => {
    const user = await signUp(s);
    const first = await refresh(user.refresh_token);
    expect(first.status).toBe(200);
    expect(first.body.refresh_token).not.toBe(user.refresh_token);
    expect((await request(`${s.url}/me`, { headers: bearer(first.body.access_token) })).status).toBe(200);
    const second = await refresh(first.body.refresh_token);
    expect(second.status).toBe(200);
    expect(second.body.refresh_token).not.toBe(first.body.refresh_token);
  });

  it('a spent token presented after the grace window revokes the whole family: every token in it fails', async () => {
    const user = await signUp(s);
    const a = await refresh(user.refresh_token);
    const b = await refresh(a.body.refresh_token);
    await ageSpentTokens();
    const reuse = await refresh(user.refresh_token); // the attacker's stolen copy of the first token
    expect(reuse.status).toBe(401);
    expect(expectErrorShape(reuse.body).code).toBe('invalid_refresh_token');
    expect((await refresh(b.body.refresh_token)).status).toBe(401);
    expect((await request(`${s.url}/me`, { headers: bearer(b.body.access_token) })).status).toBe(401);
    const audit = await s.server.keel.context.database.db.selectFrom('audit_events').select('event').where('user_id', '=', user.id).execute();
    expect(audit.map((e) => e.event)).toContain('refresh_token.reuse');
  });

  it('reuse of one session does not touch the user\'s other sessions', async () => {
    const user = await signUp(s);
    const other = await request<{ access_token: string; refresh_token: string }>(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });
    await refresh(user.refresh_token);
    await ageSpentTokens();
    expect((await refresh(user.refresh_token)).status).toBe(401);
    expect((await request(`${s.url}/me`, { headers: bearer(other.body.access_token) })).status).toBe(200);
    expect((await refresh(other.body.refresh_token)).status).toBe(200);
  });

  it('two concurrent refreshes with one token do not fork the session: both get the same successor', async () => {
    const user = await signUp(s);
    const results = await Promise.all([refresh(user.refresh_token), refresh(user.refresh_token), refresh(user.refresh_token)]);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    const successors = new Set(results.map((r) => r.body.refresh_token));
    expect(successors.size).toBe(1);
    const next = await refresh([...successors][0]!);
    expect(next.status).toBe(200);
    const database = s.server.keel.context.database.db;
    const live = await database.selectFrom('refresh_tokens').innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
      .select('refresh_tokens.id').where('sessions.user_id', '=', user.id).where('refresh_tokens.used_at', 'is', null).execute();
    expect(live).toHaveLength(1);
  });

  it('within the grace window a retry is forgiven, but not once the successor has been used', async () => {
    const user = await signUp(s);
    const a = await refresh(user.refresh_token);
    const retry = await refresh(user.refresh_token);
    expect(retry.status).toBe(200);
    expect(retry.body.refresh_token).toBe(a.body.refresh_token);
    await refresh(a.body.refresh_token); // the successor is now spent too
    expect((await refresh(user.refresh_token)).status).toBe(401);
  });

  it('logout ends the session; logout-all ends every session', async () => {
    const user = await signUp(s);
    const second = await request<{ access_token: string; refresh_token: string }>(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });
    expect((await request(`${s.url}/auth/logout`, { method: 'POST', headers: bearer(user.access_token) })).status).toBe(204);
    expect((await request(`${s.url}/me`, { headers: bearer(user.access_token) })).status).toBe(401);
    expect((await refresh(user.refresh_token)).status).toBe(401);
    expect((await request(`${s.url}/me`, { headers: bearer(second.body.access_token) })).status).toBe(200);
    const third = await request<{ access_token: string; refresh_token: string }>(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });
    expect((await request(`${s.url}/auth/logout-all`, { method: 'POST', headers: bearer(third.body.access_token) })).status).toBe(204);
    for (const t of [second.body, third.body]) {
      expect((await request(`${s.url}/me`, { headers: bearer(t.access_token) })).status).toBe(401);
      expect((await refresh(t.refresh_token)).status).toBe(401);
    }
  });

  it('garbage and unknown refresh tokens are 401', async () => {
    expect((await refresh('krt_unknown')).status).toBe(401);
    expect((await refresh('eyJhbGciOiJIUzI1NiJ9.e30.x')).status).toBe(401);
  });
});
