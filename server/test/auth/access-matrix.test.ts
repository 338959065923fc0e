import { describeAccessMatrix, type AccessRow, type Caller, type MatrixContext } from '../helpers/access-matrix.js';
import { strongPassword, uniqueEmail } from '../helpers/factories.js';

// Statuses for the usual shapes of identity route.
const anyCredential = (ok: number) => ({ guest: 401, other: ok, owner: ok, admin: ok, keyWithScope: ok, keyWithoutScope: ok });
const sessionOnly = (ok: number) => ({ guest: 401, other: ok, owner: ok, admin: ok, keyWithScope: 403, keyWithoutScope: 403 });
const ownersOnly = (ok: number) => ({ guest: 401, other: 404, owner: ok, admin: 404, keyWithScope: 403, keyWithoutScope: 403 });
const adminsOnly = (ok: number) => ({ guest: 401, other: 403, owner: 403, admin: ok, keyWithScope: ok, keyWithoutScope: 403 });

const device = { device_name: 'matrix device', device_type: 'cli', platform: 'linux' };

/** A device of the owner's, paired for this cell, so revoking it leaves the owner's session alone. */
async function ownersDevice(ctx: MatrixContext): Promise<Record<string, string>> {
  const res = await ctx.api<{ device_id: string }>('POST', '/auth/pair-device', ctx.cast.owner, device);
  if (res.status !== 201) throw new Error(`pair-device: ${res.status}`);
  return { id: res.body.device_id };
}

async function ownersApiKey(ctx: MatrixContext): Promise<Record<string, string>> {
  const res = await ctx.api<{ id: string }>('POST', '/api-keys', ctx.cast.owner, { name: 'to revoke', scopes: ['chat'] });
  if (res.status !== 201) throw new Error(`api-keys: ${res.status}`);
  return { id: res.body.id };
}

/** Every identity route that needs (or may have) credentials. Later modules add their own tables. */
const rows: AccessRow[] = [
  { method: 'GET', path: '/me', expect: anyCredential(200) },
  { method: 'PATCH', path: '/me', body: { name: 'Matrix' }, expect: sessionOnly(200) },
  { method: 'GET', path: '/me/audit', expect: sessionOnly(200) },
  { method: 'POST', path: '/me/password', fresh: true, body: (c: Caller) => ({ current_password: c.user.password, new_password: strongPassword() }), expect: sessionOnly(204) },
  { method: 'POST', path: '/me/email', body: (c: Caller) => ({ email: uniqueEmail('matrix'), password: c.user.password }), expect: sessionOnly(202) },
  { method: 'DELETE', path: '/me', fresh: true, body: (c: Caller) => ({ password: c.user.password }), expect: sessionOnly(204) },
  { method: 'POST', path: '/auth/verify-email/request', expect: sessionOnly(202) },
  { method: 'GET', path: '/auth/devices', expect: sessionOnly(200) },
  { method: 'DELETE', path: '/auth/device/:id', setup: ownersDevice, expect: ownersOnly(204) },
  { method: 'POST', path: '/auth/logout', fresh: true, expect: sessionOnly(204) },
  { method: 'POST', path: '/auth/logout-all', fresh: true, expect: sessionOnly(204) },
  { method: 'POST', path: '/auth/pair-device', body: device, expect: sessionOnly(201) },
  { method: 'POST', path: '/auth/pairing-codes', expect: sessionOnly(201) },
  // 2FA management is for a signed-in session; what each session gets back is the route's business
  // (nothing set up yet → 409), what matters here is who gets that far.
  { method: 'POST', path: '/auth/2fa/setup', fresh: true, expect: sessionOnly(200) },
  { method: 'POST', path: '/auth/2fa/enable', body: { otp: '000000' }, expect: sessionOnly(409) },
  { method: 'POST', path: '/auth/2fa/disable', body: (c: Caller) => ({ password: c.user.password }), expect: sessionOnly(409) },
  { method: 'POST', path: '/api-keys', body: { name: 'matrix', scopes: ['chat'] }, expect: sessionOnly(201) },
  { method: 'GET', path: '/api-keys', expect: sessionOnly(200) },
  { method: 'DELETE', path: '/api-keys/:id', setup: ownersApiKey, expect: ownersOnly(204) },
  { method: 'GET', path: '/admin/users', scope: 'admin', expect: adminsOnly(200) },
  { method: 'PATCH', path: '/admin/users/:id', scope: 'admin', setup: async (ctx) => ({ id: ctx.cast.owner.id }), body: { limits: { requests_per_day: 1000 } }, expect: adminsOnly(200) },
  { method: 'GET', path: '/admin/audit', scope: 'admin', expect: adminsOnly(200) },
  // A public route: credentials, good or bad for it, change nothing.
  { method: 'POST', path: '/auth/password/forgot', body: { email: 'nobody@example.test' }, expect: { guest: 202, other: 202, owner: 202, admin: 202, keyWithScope: 202, keyWithoutScope: 202 } },
];

describeAccessMatrix('identity access matrix', rows);
