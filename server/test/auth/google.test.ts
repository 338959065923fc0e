import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from 'otplib';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, latestCode, signUp, strongPassword, uniqueEmail } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';

const CLIENT_A = 'keel-test-a.apps.googleusercontent.com';
const CLIENT_B = 'keel-test-b.apps.googleusercontent.com';
const GOOGLE = 'https://accounts.google.com';

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function newKey(kid = `kid-${randomBytes(4).toString('hex')}`): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

/** A stand-in for https://www.googleapis.com/oauth2/v3/certs on a loopback port, with switches. */
interface KeyServer {
  readonly url: string;
  /** Requests answered so far. */
  hits: number;
  mode: 'ok' | 'error' | 'garbage';
  cacheControl: string;
  published: JWK[];
  close(): Promise<void>;
}

async function startKeyServer(published: JWK[]): Promise<KeyServer> {
  const state = { hits: 0, mode: 'ok' as KeyServer['mode'], cacheControl: 'public, max-age=3600, must-revalidate', published };
  const server: Server = createServer((_req, res) => {
    state.hits++;
    if (state.mode === 'error') {
      res.writeHead(500, { 'content-type': 'text/plain' }).end('backend error');
    } else if (state.mode === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys": "not a key set"');
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': state.cacheControl }).end(JSON.stringify({ keys: state.published }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/oauth2/v3/certs`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

/** A URL nothing listens on: a port that was just bound and released. */
async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/certs`;
}

interface GoogleAccount {
  sub: string;
  email: string;
}

const googleAccount = (email = uniqueEmail('google')): GoogleAccount => ({ sub: String(100000000000000000000n + BigInt(`0x${randomBytes(6).toString('hex')}`)), email });

/** An ID token shaped like Google's; `claims` overrides or adds claims, `header` the protected header. */
async function idToken(key: SigningKey, account: GoogleAccount, opts: { claims?: Record<string, unknown>; iss?: string; aud?: string; exp?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ email: account.email, email_verified: true, name: 'Ada Lovelace', azp: opts.aud ?? CLIENT_A, ...opts.claims })
    .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' })
    .setIssuer(opts.iss ?? GOOGLE)
    .setAudience(opts.aud ?? CLIENT_A)
    .setSubject(account.sub)
    .setIssuedAt(now - 5)
    .setExpirationTime(opts.exp ?? now + 3600)
    .sign(key.privateKey);
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

interface SignedIn {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
  device_id: string;
  created: boolean;
  user: { id: string; email: string; name: string | null; email_verified: boolean; anonymous: boolean };
}

describeEachDatabase('POST /auth/google', (db) => {
  let keys: KeyServer;
  let key: SigningKey;
  let s: TestServer;
  const env = (jwksUrl: string, extra: Record<string, string> = {}): Record<string, string> => ({
    GOOGLE_CLIENT_ID: `${CLIENT_A}, ${CLIENT_B}`,
    GOOGLE_JWKS_URL: jwksUrl,
    AUTH_RATE_LIMIT_MAX: '10000',
    ...extra,
  });
  /** Runs `fn` against a Keel server of its own (so its JWKS cache starts empty). */
  const withKeel = async (vars: Record<string, string>, fn: (k: TestServer) => Promise<void>): Promise<void> => {
    const k = await startServer(db(), vars);
    try {
      await fn(k);
    } finally {
      await k.close();
    }
  };
  const google = (server: TestServer, token: string, extra: Record<string, unknown> = {}) =>
    request<SignedIn>(`${server.url}/auth/google`, { method: 'POST', json: { id_token: token, ...extra } });

  beforeAll(async () => {
    key = await newKey();
    keys = await startKeyServer([key.jwk]);
    s = await startServer(db(), env(keys.url));
  });
  afterAll(async () => {
    await s?.close();
    await keys?.close();
  });

  it('an account with 2FA on needs its code with Google too', async () => {
    const account = googleAccount();
    const first = await google(s, await idToken(key, account));
    expect(first.status).toBe(200);
    const setup = await request<{ secret: string }>(`${s.url}/auth/2fa/setup`, { method: 'POST', headers: { authorization: `Bearer ${first.body.access_token}` } });
    const step = Math.floor(Date.now() / 30_000);
    const enable = await request(`${s.url}/auth/2fa/enable`, { method: 'POST', headers: { authorization: `Bearer ${first.body.access_token}` }, json: { otp: await generate({ secret: setup.body.secret, epoch: step * 30 }) } });
    expect(enable.status).toBe(200);
    const without = await google(s, await idToken(key, account));
    expect(without.status).toBe(401);
    expect(expectErrorShape(without.body).code).toBe('otp_required');
    const withCode = await google(s, await idToken(key, account), { otp: await generate({ secret: setup.body.secret, epoch: (step + 1) * 30 }) });
    expect(withCode.status).toBe(200);
    expect(withCode.body.user.id).toBe(first.body.user.id);
  });

  it('a first sign-in creates a verified account and answers with Keel\'s own tokens', async () => {
    const account = googleAccount(uniqueEmail('Ada'));
    const token = await idToken(key, account);
    const res = await google(s, token, { device: { name: 'Ada\'s laptop', type: 'desktop', platform: 'linux' } });
    expect(res.status).toBe(200);
    expect(res.body.created).toBe(true);
    expect(res.body.user).toMatchObject({ email: account.email.toLowerCase(), name: 'Ada Lovelace', email_verified: true, anonymous: false });
    expect(res.body.token_type).toBe('bearer');
    expect(res.body.access_token).not.toBe(token);
    expect(res.body.refresh_token).not.toBe(token);
    expect(JSON.stringify(res.body)).not.toContain(token);

    const me = await request<{ id: string }>(`${s.url}/me`, { headers: bearer(res.body.access_token) });
    expect(me.status).toBe(200);
    expect(me.body.id).toBe(res.body.user.id);
    const devices = await request<{ items: Array<{ id: string; name: string; current: boolean }> }>(`${s.url}/auth/devices`, { headers: bearer(res.body.access_token) });
    expect(devices.body.items).toEqual([expect.objectContaining({ id: res.body.device_id, name: 'Ada\'s laptop', current: true })]);
    const audit = await request<{ items: Array<{ event: string }> }>(`${s.url}/me/audit`, { headers: bearer(res.body.access_token) });
    expect(audit.body.items.map((e) => e.event)).toContain('register.google');

    const refreshed = await request(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: res.body.refresh_token } });
    expect(refreshed.status).toBe(200);
  });

  it('the Google account (sub) is the identity: the next sign-in reaches the same user, even after its e-mail changed', async () => {
    const account = googleAccount();
    const first = await google(s, await idToken(key, account));
    expect(first.status).toBe(200);
    const again = await google(s, await idToken(key, account));
    expect(again.status).toBe(200);
    expect(again.body.created).toBe(false);
    expect(again.body.user.id).toBe(first.body.user.id);
    expect(again.body.device_id).not.toBe(first.body.device_id);

    const renamed = await google(s, await idToken(key, { ...account, email: uniqueEmail('renamed') }));
    expect(renamed.status).toBe(200);
    expect(renamed.body.user.id).toBe(first.body.user.id);
    const audit = await request<{ items: Array<{ event: string }> }>(`${s.url}/me/audit`, { headers: bearer(again.body.access_token) });
    expect(audit.body.items.map((e) => e.event)).toContain('login.google');
  });

  it('accepts every client id of the GOOGLE_CLIENT_ID list, and the bare issuer spelling', async () => {
    const second = await google(s, await idToken(key, googleAccount(), { aud: CLIENT_B }));
    expect(second.status).toBe(200);
    const bare = await google(s, await idToken(key, googleAccount(), { iss: 'accounts.google.com' }));
    expect(bare.status).toBe(200);
  });

  it('tolerates a small clock skew on exp, not an expired token', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect((await google(s, await idToken(key, googleAccount(), { exp: now - 20 }))).status).toBe(200);
    const expired = await google(s, await idToken(key, googleAccount(), { exp: now - 600 }));
    expect(expired.status).toBe(401);
    expect(expectErrorShape(expired.body).message).toMatch(/expired/);
  });

  const refusals: Array<[string, (k: SigningKey, a: GoogleAccount) => Promise<string>, RegExp]> = [
    ['a wrong audience', (k, a) => idToken(k, a, { aud: 'someone-else.apps.googleusercontent.com' }), /audience/],
    ['a wrong issuer', (k, a) => idToken(k, a, { iss: 'https://accounts.example.com' }), /issuer/],
    ['an unverified e-mail', (k, a) => idToken(k, a, { claims: { email_verified: false } }), /not verified/],
    ['no email_verified claim', (k, a) => idToken(k, a, { claims: { email_verified: undefined } }), /not verified/],
    ['no e-mail', (k, a) => idToken(k, a, { claims: { email: undefined } }), /"email"/],
    ['a bad signature (another key under the same kid)', async (k, a) => idToken(await newKey(k.kid), a), /signature/],
    ['a tampered payload', async (k, a) => {
      const [h, , sig] = (await idToken(k, a)).split('.');
      return `${h}.${b64({ iss: GOOGLE, aud: CLIENT_A, sub: a.sub, email: 'victim@example.test', email_verified: true, iat: 1, exp: 9999999999 })}.${sig}`;
    }, /signature/],
  ];
  for (const [what, make, reason] of refusals) {
    it(`refuses ${what}: 401 invalid_google_token naming the check, never echoing the token`, async () => {
      const account = googleAccount();
      const token = await make(key, account);
      const res = await google(s, token);
      expect(res.status).toBe(401);
      const err = expectErrorShape(res.body);
      expect(err.code).toBe('invalid_google_token');
      expect(err.message).toMatch(reason);
      expect(JSON.stringify(res.body)).not.toContain(token.split('.')[1]!.slice(0, 20));
      expect(s.logText()).not.toContain(token);
    });
  }

  it('refuses alg "none", HS256 and non-JWTs without fetching any key', async () => {
    const account = googleAccount();
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: GOOGLE, aud: CLIENT_A, sub: account.sub, email: account.email, email_verified: true, iat: now, exp: now + 600 };
    const none = `${b64({ alg: 'none', kid: key.kid })}.${b64(claims)}.`;
    // HS256 keyed with the public key's modulus: the classic RS/HS key-confusion forgery.
    const hs256 = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: key.kid }).sign(Buffer.from(key.jwk.n!, 'base64url'));
    const before = keys.hits;
    for (const token of [none, hs256, 'not-a-jwt', `${b64({ alg: 'RS256' })}.${b64(claims)}.c2ln`]) {
      const res = await google(s, token);
      expect(res.status).toBe(401);
      expect(expectErrorShape(res.body).code).toBe('invalid_google_token');
    }
    expect(keys.hits).toBe(before);
  });

  it('rejects a body without id_token or with an oversized one (400)', async () => {
    expect((await request(`${s.url}/auth/google`, { method: 'POST', json: {} })).status).toBe(400);
    expect((await google(s, 'x'.repeat(5000))).status).toBe(400);
  });

  it('links to an existing account whose e-mail is verified, which keeps its password', async () => {
    const user = await signUp(s);
    const res = await google(s, await idToken(key, googleAccount(user.email.toUpperCase())));
    expect(res.status).toBe(200);
    expect(res.body.created).toBe(false);
    expect(res.body.user.id).toBe(user.id);
    const again = await google(s, await idToken(key, googleAccount(user.email)));
    expect(again.status).toBe(409);
    expect(expectErrorShape(again.body).code).toBe('google_account_mismatch');
    const login = await request<SignedIn>(`${s.url}/auth/login`, { method: 'POST', json: { email: user.email, password: user.password } });
    expect(login.status).toBe(200);
    expect(login.body.user.id).toBe(user.id);
  });

  it('does not let an unconfirmed registration capture the Google user (409), until the owner confirms the address', async () => {
    const email = uniqueEmail('squatted');
    const squat = await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password: strongPassword() } });
    expect(squat.status).toBe(202);
    const account = googleAccount(email);
    const refused = await google(s, await idToken(key, account));
    expect(refused.status).toBe(409);
    const err = expectErrorShape(refused.body);
    expect(err.code).toBe('unverified_account_exists');
    expect(err.message).toMatch(/never confirmed/);

    // The address's real owner registers again (the latest password wins) and confirms it.
    const password = strongPassword();
    expect((await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password } })).status).toBe(202);
    const verified = await request<SignedIn>(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: latestCode(s, email) } });
    expect(verified.status).toBe(200);
    const linked = await google(s, await idToken(key, account));
    expect(linked.status).toBe(200);
    expect(linked.body.user.id).toBe(verified.body.user.id);
  });

  it('refuses a disabled account (403)', async () => {
    const account = googleAccount();
    const first = await google(s, await idToken(key, account));
    await s.server.keel.context.database.db.updateTable('users').set({ disabled_at: new Date().toISOString() }).where('id', '=', first.body.user.id).execute();
    const res = await google(s, await idToken(key, account));
    expect(res.status).toBe(403);
    expect(expectErrorShape(res.body).code).toBe('account_disabled');
  });

  it('caches the key set per Cache-Control: one fetch for many sign-ins, a new one after max-age', async () => {
    const ks = await startKeyServer([key.jwk]);
    try {
      await withKeel(env(ks.url), async (k) => {
        for (let i = 0; i < 3; i++) expect((await google(k, await idToken(key, googleAccount()))).status).toBe(200);
        expect(ks.hits).toBe(1);
      });
      ks.cacheControl = 'public, max-age=1';
      ks.hits = 0;
      await withKeel(env(ks.url), async (k) => {
        expect((await google(k, await idToken(key, googleAccount()))).status).toBe(200);
        expect((await google(k, await idToken(key, googleAccount()))).status).toBe(200);
        expect(ks.hits).toBe(1);
        await new Promise((resolve) => setTimeout(resolve, 1100));
        expect((await google(k, await idToken(key, googleAccount()))).status).toBe(200);
        expect(ks.hits).toBe(2);
      });
    } finally {
      await ks.close();
    }
  });

  it('an unknown kid triggers one refetch (key rotation works), and a flood of made-up kids no more', async () => {
    const old = await newKey();
    const ks = await startKeyServer([old.jwk]);
    try {
      await withKeel(env(ks.url), async (k) => {
        expect((await google(k, await idToken(old, googleAccount()))).status).toBe(200);
        expect(ks.hits).toBe(1);

        const rotated = await newKey();
        ks.published = [rotated.jwk];
        expect((await google(k, await idToken(rotated, googleAccount()))).status).toBe(200);
        expect(ks.hits).toBe(2);

        const bogus = await Promise.all(Array.from({ length: 10 }, async () => google(k, await idToken(await newKey(), googleAccount()))));
        for (const res of bogus) {
          expect(res.status).toBe(401);
          expect(expectErrorShape(res.body).message).toMatch(/kid/);
        }
        expect(ks.hits).toBe(2);
        // The retired key is gone from the set: its tokens no longer verify.
        expect((await google(k, await idToken(old, googleAccount()))).status).toBe(401);
      });
    } finally {
      await ks.close();
    }
  });

  describe('when the key server is down, sign-in fails closed with 503', () => {
    it('a closed port → 503 google_unavailable with Retry-After', async () => {
      await withKeel(env(await closedPortUrl()), async (k) => {
        const res = await google(k, await idToken(key, googleAccount()));
        expect(res.status).toBe(503);
        expect(expectErrorShape(res.body).code).toBe('google_unavailable');
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
        expect(k.logText()).toContain('Google signing keys could not be fetched');
      });
    });

    it('HTTP 500, then a garbage body → 503; it recovers as soon as the keys are served again', async () => {
      const ks = await startKeyServer([key.jwk]);
      try {
        await withKeel(env(ks.url), async (k) => {
          ks.mode = 'error';
          const down = await google(k, await idToken(key, googleAccount()));
          expect(down.status).toBe(503);
          expect(expectErrorShape(down.body).code).toBe('google_unavailable');
          ks.mode = 'garbage';
          const garbage = await google(k, await idToken(key, googleAccount()));
          expect(garbage.status).toBe(503);
          expect(JSON.stringify(garbage.body)).not.toContain(ks.url);
          ks.mode = 'ok';
          expect((await google(k, await idToken(key, googleAccount()))).status).toBe(200);
        });
      } finally {
        await ks.close();
      }
    });
  });

  it('without GOOGLE_CLIENT_ID, answers 503 google_not_configured naming the variable', async () => {
    await withKeel({ GOOGLE_JWKS_URL: keys.url }, async (k) => {
      const res = await google(k, await idToken(key, googleAccount()));
      expect(res.status).toBe(503);
      const err = expectErrorShape(res.body);
      expect(err.code).toBe('google_not_configured');
      expect(err.message).toContain('GOOGLE_CLIENT_ID');
    });
  });
});
