import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { bearer, latestCode, outboxFor, signUp, strongPassword, uniqueEmail } from '../helpers/factories.js';
import { expectErrorShape, request, startServer, type TestServer } from '../helpers/server.js';

const pem = (type: 'ec' | 'ed25519' | 'rsa', opts: object = {}) =>
  (generateKeyPairSync as (t: string, o: object) => { publicKey: { export(o: object): string | Buffer } })(type, opts).publicKey.export({ type: 'spki', format: 'pem' }).toString();

interface DeviceTokens { user_id: string; device_id: string; access_token: string; refresh_token: string; token_type: string }

describeEachDatabase('devices, anonymous accounts and pairing', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db());
  });
  afterAll(() => s.close());

  const anonymous = (body: Record<string, unknown> = {}) =>
    request<DeviceTokens>(`${s.url}/auth/anonymous`, { method: 'POST', json: { device_name: 'Laptop', device_type: 'desktop', platform: 'macos', public_key: pem('ec', { namedCurve: 'P-256' }), ...body } });

  it('an anonymous account lives on its device, with its public key', async () => {
    const res = await anonymous();
    expect(res.status).toBe(201);
    expect(res.body.token_type).toBe('bearer');
    expect([typeof res.body.user_id, typeof res.body.device_id]).toEqual(['string', 'string']);
    const me = await request<{ anonymous: boolean; email: null }>(`${s.url}/me`, { headers: bearer(res.body.access_token) });
    expect(me.body).toMatchObject({ anonymous: true, email: null });
    const devices = await request<{ items: Array<{ id: string; public_key: string; current: boolean; type: string }> }>(`${s.url}/auth/devices`, { headers: bearer(res.body.access_token) });
    expect(devices.body.items).toHaveLength(1);
    expect(devices.body.items[0]).toMatchObject({ id: res.body.device_id, current: true, type: 'desktop' });
    expect(devices.body.items[0]!.public_key).toContain('BEGIN PUBLIC KEY');
  });

  it.each([
    ['Ed25519 PEM', () => pem('ed25519')],
    ['RSA-2048 PEM', () => pem('rsa', { modulusLength: 2048 })],
    ['P-256 JWK', () => JSON.stringify((generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey).export({ format: 'jwk' }))],
  ])('accepts a %s public key', async (_name, key) => {
    expect((await anonymous({ public_key: key() })).status).toBe(201);
  });

  it.each([
    ['garbage', 'not a key'],
    ['a private JWK', JSON.stringify(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }))],
    ['RSA-1024', pem('rsa', { modulusLength: 1024 })],
    ['secp256k1', pem('ec', { namedCurve: 'secp256k1' })],
  ])('refuses %s as a public key', async (_name, key) => {
    const res = await anonymous({ public_key: key });
    expect(res.status).toBe(400);
    expect(expectErrorShape(res.body).details?.[0]?.field).toBe('public_key');
  });

  it('refuses an unknown device type, naming the field', async () => {
    const res = await anonymous({ device_type: 'toaster' });
    expect(res.status).toBe(400);
    expect(expectErrorShape(res.body).details?.[0]?.field).toBe('device_type');
  });

  it('pair-device adds a device to the same account with its own tokens', async () => {
    const first = await anonymous();
    const paired = await request<{ device_id: string; access_token: string }>(`${s.url}/auth/pair-device`, { method: 'POST', headers: bearer(first.body.access_token), json: { device_name: 'Phone', device_type: 'mobile', platform: 'ios', public_key: pem('ed25519') } });
    expect(paired.status).toBe(201);
    const me = await request<{ id: string }>(`${s.url}/me`, { headers: bearer(paired.body.access_token) });
    expect(me.body.id).toBe(first.body.user_id);
    const devices = await request<{ items: Array<{ id: string; current: boolean }> }>(`${s.url}/auth/devices`, { headers: bearer(paired.body.access_token) });
    expect(devices.body.items.map((d) => [d.id, d.current])).toEqual([[first.body.device_id, false], [paired.body.device_id, true]]);
  });

  it('a pairing code joins a new device to the account once, and only while fresh', async () => {
    const owner = await anonymous();
    const code = await request<{ code: string; expires_at: string }>(`${s.url}/auth/pairing-codes`, { method: 'POST', headers: bearer(owner.body.access_token) });
    expect(code.status).toBe(201);
    expect(code.body.code).toMatch(/^[A-Z2-9]{4}-[A-Z2-9]{4}$/);
    expect(Date.parse(code.body.expires_at) - Date.now()).toBeLessThanOrEqual(10 * 60_000);
    const body = { device_name: 'Tablet', device_type: 'mobile', platform: 'android' };
    const joined = await request<DeviceTokens>(`${s.url}/auth/pairing-codes/redeem`, { method: 'POST', json: { ...body, code: code.body.code.toLowerCase().replace('-', '') } });
    expect(joined.status).toBe(201);
    expect(joined.body.user_id).toBe(owner.body.user_id);
    const again = await request(`${s.url}/auth/pairing-codes/redeem`, { method: 'POST', json: { ...body, code: code.body.code } });
    expect(again.status).toBe(400);
    expect(expectErrorShape(again.body).code).toBe('invalid_pairing_code');
    // an expired code is refused
    const stale = await request<{ code: string }>(`${s.url}/auth/pairing-codes`, { method: 'POST', headers: bearer(owner.body.access_token) });
    await s.server.keel.context.database.db.updateTable('pairing_codes').set({ expires_at: new Date(Date.now() - 1000).toISOString() }).where('used_at', 'is', null).execute();
    expect((await request(`${s.url}/auth/pairing-codes/redeem`, { method: 'POST', json: { ...body, code: stale.body.code } })).status).toBe(400);
  });

  it('revoking a device makes its access token fail on the very next request, and its refresh token too', async () => {
    const first = await anonymous();
    const second = await request<DeviceTokens>(`${s.url}/auth/pair-device`, { method: 'POST', headers: bearer(first.body.access_token), json: { device_name: 'Old phone', device_type: 'mobile' } });
    expect((await request(`${s.url}/me`, { headers: bearer(second.body.access_token) })).status).toBe(200);
    expect((await request(`${s.url}/auth/device/${second.body.device_id}`, { method: 'DELETE', headers: bearer(first.body.access_token) })).status).toBe(204);
    const refused = await request(`${s.url}/me`, { headers: bearer(second.body.access_token) });
    expect(refused.status).toBe(401);
    expect(expectErrorShape(refused.body).code).toBe('invalid_token');
    expect((await request(`${s.url}/auth/refresh`, { method: 'POST', json: { refresh_token: second.body.refresh_token } })).status).toBe(401);
    expect((await request(`${s.url}/me`, { headers: bearer(first.body.access_token) })).status).toBe(200);
    const devices = await request<{ items: Array<{ id: string }> }>(`${s.url}/auth/devices`, { headers: bearer(first.body.access_token) });
    expect(devices.body.items.map((d) => d.id)).toEqual([first.body.device_id]);
  });

  it('another user\'s device is 404, and stays untouched', async () => {
    const mine = await anonymous();
    const theirs = await anonymous();
    const res = await request(`${s.url}/auth/device/${theirs.body.device_id}`, { method: 'DELETE', headers: bearer(mine.body.access_token) });
    expect(res.status).toBe(404);
    expect((await request(`${s.url}/me`, { headers: bearer(theirs.body.access_token) })).status).toBe(200);
  });

  it('an anonymous account adds an e-mail and password later, keeping its user id', async () => {
    const anon = await anonymous();
    const email = uniqueEmail('upgrade');
    const password = strongPassword();
    expect((await request(`${s.url}/me/email`, { method: 'POST', headers: bearer(anon.body.access_token), json: { email, password } })).status).toBe(202);
    const verified = await request<{ user: { id: string; email: string; anonymous: boolean } }>(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: latestCode(s, email) } });
    expect(verified.status).toBe(200);
    expect(verified.body.user).toMatchObject({ id: anon.body.user_id, email, anonymous: false });
    const login = await request<{ user: { id: string } }>(`${s.url}/auth/login`, { method: 'POST', json: { email, password } });
    expect(login.body.user.id).toBe(anon.body.user_id);
  });

  it('adding an address another account owns changes nothing and mails the owner', async () => {
    const owner = await signUp(s);
    const anon = await anonymous();
    expect((await request(`${s.url}/me/email`, { method: 'POST', headers: bearer(anon.body.access_token), json: { email: owner.email, password: strongPassword() } })).status).toBe(202);
    expect(outboxFor(s, owner.email).at(-1)).toContain('tried to add');
    const me = await request<{ email: string | null }>(`${s.url}/me`, { headers: bearer(anon.body.access_token) });
    expect(me.body.email).toBeNull();
  });
});
