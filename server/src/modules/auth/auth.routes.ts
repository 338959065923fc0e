import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import type { Guards } from '../../platform/auth.js';
import { sha256 } from '../../platform/crypto.js';
import type { ModuleContext } from '../../platform/module.js';
import { authRateLimit, limitPerKey } from '../../platform/rate-limit.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS, ErrorResponse } from '../../platform/schemas.js';
import {
  Accepted, AuditEvent, DeviceBody, DeviceSchema, DeviceSignedIn, Email, FlatDeviceBody, IdParams, PageQuery, Password, SignedIn, TokenPairSchema, UserSchema,
  type FlatDevice,
} from './auth.schemas.js';
import { normalizeEmail, requestMeta, type AuthService, type DeviceInput } from './auth.service.js';

const errors = AUTHED_ERRORS;
const bearer = ANY_CREDENTIAL;
const fromFlat = (d: FlatDevice): DeviceInput => ({ name: d.device_name, type: d.device_type, platform: d.platform ?? null, public_key: d.public_key ?? null });
const bodyEmail = (body: unknown): string | undefined => {
  const email = (body as { email?: unknown } | undefined)?.email;
  return typeof email === 'string' ? normalizeEmail(email) : undefined;
};

const RegisterBody = Type.Object({ email: Email, password: Password, name: Type.Optional(Type.String({ maxLength: 120 })) });
const LoginBody = Type.Object({ email: Email, password: Password, otp: Type.Optional(Type.String({ maxLength: 32 })), device: Type.Optional(DeviceBody) });
const RefreshBody = Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 512 }) });
const TokenBody = Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }), device: Type.Optional(DeviceBody) });
const ResetBody = Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }), password: Password });
const RedeemBody = Type.Intersect([Type.Object({ code: Type.String({ minLength: 4, maxLength: 32 }) }), FlatDeviceBody]);

/** Identity routes of API.md: thin — parse, authorize, call the service, shape the reply. */
export async function authRoutes(app: FastifyInstance, ctx: ModuleContext, auth: AuthService, guards: Guards): Promise<void> {
  const limits = ctx.config.rateLimit;
  const strict = { rateLimit: authRateLimit(limits) };
  const perEmail = (name: string) => limitPerKey(app, limits, name, (req) => bodyEmail(req.body));
  const tags = ['identity'];

  app.post('/auth/register', {
    config: strict, preHandler: perEmail('register'),
    schema: { tags, summary: 'Create an account; a link sent to the address activates it', description: 'Answers 202 for new and already-registered addresses alike, so registration cannot be used to discover accounts. The account is activated, and signed in, by `POST /auth/verify-email`.', body: RegisterBody, response: { 202: Accepted, ...errors } },
  }, async (request, reply) => {
    const body = request.body as Static<typeof RegisterBody>;
    await auth.register(body, requestMeta(request));
    return reply.code(202).send({ status: 'verification_sent', message: 'If this address can be registered, a confirmation link is on its way.' });
  });

  app.post('/auth/verify-email/request', {
    config: strict, preHandler: guards.session(),
    schema: { tags, summary: 'Send a new verification link to the caller\'s unverified address', security: bearer, response: { 202: Accepted, ...errors } },
  }, async (request, reply) => {
    await auth.requestVerification(request.principal!);
    return reply.code(202).send({ status: 'verification_sent', message: 'If the address still needs confirming, a new link is on its way.' });
  });

  app.post('/auth/verify-email', {
    config: strict,
    schema: { tags, summary: 'Confirm an e-mail address with the token from the link; signs in', body: TokenBody, response: { 200: SignedIn, ...errors, 409: ErrorResponse } },
  }, async (request) => {
    const { token, device } = request.body as Static<typeof TokenBody>;
    return auth.verifyEmail(token, device, requestMeta(request));
  });

  app.post('/auth/login', {
    config: strict, preHandler: perEmail('login'),
    schema: { tags, summary: 'Sign in with e-mail and password (and a TOTP code when 2FA is on)', description: '401 `invalid_credentials` for an unknown e-mail or a wrong password alike; with 2FA on, 401 `otp_required` or `otp_invalid`.', body: LoginBody, response: { 200: SignedIn, ...errors } },
  }, async (request) => auth.login(request.body as Static<typeof LoginBody>, requestMeta(request)));

  // Per token as well as per IP: one stolen token cannot be hammered from many addresses.
  const perRefreshToken = limitPerKey(app, limits, 'refresh', (req) => {
    const token = (req.body as { refresh_token?: unknown } | undefined)?.refresh_token;
    return typeof token === 'string' ? sha256(token).slice(0, 32) : undefined;
  });
  app.post('/auth/refresh', {
    config: strict, preHandler: perRefreshToken,
    schema: { tags, summary: 'Rotate a refresh token into a new token pair', description: 'The presented token is spent. Presenting a spent token again (after a short grace window for retries) revokes the whole session.', body: RefreshBody, response: { 200: TokenPairSchema, ...errors } },
  }, async (request) => auth.refresh((request.body as Static<typeof RefreshBody>).refresh_token, requestMeta(request)));

  app.post('/auth/logout', {
    preHandler: guards.session(),
    schema: { tags, summary: 'End the current session', description: 'Any body (API.md allows `{refresh_token?}`) is ignored: the session is the one the access token belongs to.', security: bearer, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await auth.logout(request.principal!, requestMeta(request));
    return reply.code(204).send();
  });

  app.post('/auth/logout-all', {
    preHandler: guards.session(),
    schema: { tags, summary: 'End every session of the caller (log out everywhere)', security: bearer, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await auth.logoutEverywhere(request.principal!, requestMeta(request));
    return reply.code(204).send();
  });

  app.post('/auth/anonymous', {
    config: strict,
    schema: { tags, summary: 'Create an account without e-mail that lives on its devices', body: FlatDeviceBody, response: { 201: DeviceSignedIn, ...errors } },
  }, async (request, reply) => reply.code(201).send(await auth.anonymous(fromFlat(request.body as FlatDevice), requestMeta(request))));

  app.post('/auth/pair-device', {
    preHandler: guards.session(),
    schema: { tags, summary: 'Add a device to the caller\'s account (seed 004); returns the new device\'s tokens', security: bearer, body: FlatDeviceBody, response: { 201: Type.Intersect([TokenPairSchema, Type.Object({ device_id: Type.String() })]), ...errors } },
  }, async (request, reply) => reply.code(201).send(await auth.pairDevice(request.principal!, fromFlat(request.body as FlatDevice), requestMeta(request))));

  app.post('/auth/pairing-codes', {
    config: strict, preHandler: guards.session(),
    schema: { tags, summary: 'A short, single-use, 10-minute code another device can redeem to join this account', security: bearer, response: { 201: Type.Object({ code: Type.String(), expires_at: Type.String() }), ...errors } },
  }, async (request, reply) => reply.code(201).send(await auth.createPairingCode(request.principal!, requestMeta(request))));

  app.post('/auth/pairing-codes/redeem', {
    config: strict,
    schema: { tags, summary: 'Join an account with a pairing code', body: RedeemBody, response: { 201: DeviceSignedIn, ...errors } },
  }, async (request, reply) => {
    const body = request.body as Static<typeof RedeemBody>;
    return reply.code(201).send(await auth.redeemPairingCode(body.code, fromFlat(body), requestMeta(request)));
  });

  app.get('/auth/devices', {
    preHandler: guards.session(),
    schema: { tags, summary: 'The caller\'s active devices', security: bearer, response: { 200: Type.Object({ items: Type.Array(DeviceSchema) }), ...errors } },
  }, async (request) => ({ items: await auth.listDevices(request.principal!) }));

  app.delete('/auth/device/:id', {
    preHandler: guards.session(),
    schema: { tags, summary: 'Revoke a device: its refresh and access tokens stop working at once', security: bearer, params: IdParams, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await auth.revokeDevice(request.principal!, (request.params as Static<typeof IdParams>).id, requestMeta(request));
    return reply.code(204).send();
  });

  app.post('/auth/password/forgot', {
    config: strict, preHandler: perEmail('forgot'),
    schema: { tags, summary: 'Send a password-reset link (202 whether or not the address has an account)', body: Type.Object({ email: Email }), response: { 202: Accepted, ...errors } },
  }, async (request, reply) => {
    await auth.forgotPassword((request.body as { email: string }).email, requestMeta(request));
    return reply.code(202).send({ status: 'reset_sent', message: 'If this address has an account, a reset link is on its way.' });
  });

  app.post('/auth/password/reset', {
    config: strict,
    schema: { tags, summary: 'Set a new password with a reset token; ends every session', body: ResetBody, response: { 200: Type.Object({ status: Type.Literal('password_reset') }), ...errors } },
  }, async (request) => {
    const { token, password } = request.body as Static<typeof ResetBody>;
    await auth.resetPassword(token, password, requestMeta(request));
    return { status: 'password_reset' as const };
  });

  app.get('/me', {
    preHandler: guards.auth(),
    schema: { tags, summary: 'The caller\'s profile', security: bearer, response: { 200: UserSchema, ...errors } },
  }, async (request) => auth.me(request.principal!));

  app.patch('/me', {
    preHandler: guards.session(),
    schema: { tags, summary: 'Change the caller\'s profile', security: bearer, body: Type.Object({ name: Type.Optional(Type.Union([Type.String({ maxLength: 120 }), Type.Null()])) }, { additionalProperties: false }), response: { 200: UserSchema, ...errors } },
  }, async (request) => auth.updateMe(request.principal!, request.body as { name?: string | null }));

  app.post('/me/password', {
    config: strict, preHandler: guards.session(),
    schema: { tags, summary: 'Change the password; every other session ends', security: bearer, body: Type.Object({ current_password: Password, new_password: Password }), response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    const body = request.body as { current_password: string; new_password: string };
    await auth.changePassword(request.principal!, body.current_password, body.new_password, requestMeta(request));
    return reply.code(204).send();
  });

  app.post('/me/email', {
    config: strict, preHandler: guards.session(),
    schema: { tags, summary: 'Add or change the e-mail (and, for an anonymous account, set a password); the address is bound when its link is followed', security: bearer, body: Type.Object({ email: Email, password: Password }), response: { 202: Accepted, ...errors } },
  }, async (request, reply) => {
    await auth.addEmail(request.principal!, request.body as { email: string; password: string }, requestMeta(request));
    return reply.code(202).send({ status: 'verification_sent', message: 'Follow the link sent to the address to attach it to your account.' });
  });

  app.delete('/me', {
    config: strict, preHandler: guards.session(),
    schema: { tags, summary: 'Erase the account and everything it owns, in every module', description: 'Accounts with a password confirm with it in a JSON body `{"password": "…"}`; anonymous accounts send no body.', security: bearer, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    const password = (request.body as { password?: unknown } | undefined)?.password;
    await auth.deleteMe(request.principal!, typeof password === 'string' ? password : undefined, requestMeta(request));
    return reply.code(204).send();
  });

  app.get('/me/audit', {
    preHandler: guards.session(),
    schema: { tags, summary: 'Security events of the caller, newest first', security: bearer, querystring: PageQuery, response: { 200: Type.Object({ items: Type.Array(AuditEvent), next_cursor: Type.Union([Type.String(), Type.Null()]) }), ...errors } },
  }, async (request) => {
    const q = request.query as Static<typeof PageQuery>;
    return auth.auditOf(request.principal!.userId, q.limit ?? 50, q.cursor);
  });
}
