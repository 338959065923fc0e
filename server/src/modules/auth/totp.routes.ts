import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import type { Guards } from '../../platform/auth.js';
import type { ModuleContext } from '../../platform/module.js';
import { authRateLimit, limitPerKey } from '../../platform/rate-limit.js';
import { errorResponses, SESSION_CREDENTIAL } from '../../platform/schemas.js';
import { Password } from './auth.schemas.js';
import { requestMeta, type AuthService } from './auth.service.js';
import { RECOVERY_CODE_COUNT, TotpService } from './totp.js';

const errors = errorResponses(400, 401, 403, 409, 429);
const bearer = SESSION_CREDENTIAL;
const Otp = Type.String({ minLength: 1, maxLength: 32, description: 'The 6-digit code of the authenticator app, or (where accepted) a recovery code `xxxxx-xxxxx`.' });

const SetupReply = Type.Object({
  secret: Type.String({ description: 'Base32 TOTP secret (SHA-1, 6 digits, 30 s), for typing into an authenticator app.' }),
  otpauth_url: Type.String({ description: '`otpauth://totp/Keel:<account>?secret=…&issuer=Keel`, for a QR code.' }),
});
const EnableBody = Type.Object({ otp: Otp });
const EnableReply = Type.Object({
  recovery_codes: Type.Array(Type.String(), { description: `${RECOVERY_CODE_COUNT} single-use codes that stand in for the authenticator at login; shown this once.` }),
});
const DisableBody = Type.Object({ otp: Type.Optional(Otp), password: Type.Optional(Password) }, { description: 'At least one of `password` and `otp`; each one sent must be valid.' });

/**
 * Two-factor authentication (TOTP): makes a TotpService the AuthService's second factor at login and
 * registers `/auth/2fa/setup`, `/auth/2fa/enable` and `/auth/2fa/disable`.
 */
export async function totpRoutes(app: FastifyInstance, ctx: ModuleContext, auth: AuthService, guards: Guards): Promise<void> {
  const totp = new TotpService(ctx.database.db, ctx.config, auth);
  auth.useSecondFactor(totp);

  const config = { rateLimit: authRateLimit(ctx.config.rateLimit) };
  // One counter for the three routes, so guessing codes cannot be spread across them; the session
  // guard runs first because the key is the signed-in account.
  const perAccount = limitPerKey(app, ctx.config.rateLimit, 'totp', (request) => request.principal?.userId);
  const preHandler = [guards.session(), perAccount];
  const tags = ['identity'];

  app.post('/auth/2fa/setup', {
    config, preHandler,
    schema: { tags, summary: 'Start enrolling an authenticator app: a new TOTP secret and its otpauth:// URL', description: 'The secret stays pending until `POST /auth/2fa/enable` confirms a code from it; calling setup again replaces a pending secret. 409 when 2FA is already on.', security: bearer, response: { 200: SetupReply, ...errors } },
  }, async (request) => totp.setup(request.principal!));

  app.post('/auth/2fa/enable', {
    config, preHandler,
    schema: { tags, summary: 'Turn 2FA on with a current code from the authenticator; returns the recovery codes once', description: 'A wrong code is 400 `otp_invalid` and 2FA stays off. From now on login needs `otp`.', security: bearer, body: EnableBody, response: { 200: EnableReply, ...errors } },
  }, async (request) => totp.enable(request.principal!, (request.body as Static<typeof EnableBody>).otp, requestMeta(request)));

  app.post('/auth/2fa/disable', {
    config, preHandler,
    schema: { tags, summary: 'Turn 2FA off, confirming with the password or a code (TOTP or recovery)', description: 'Neither sent → 400; a wrong password → 401 `invalid_credentials`; a wrong or used code → 401 `otp_invalid`; 2FA not on → 409. Clears the secret and the recovery codes.', security: bearer, body: DisableBody, response: { 200: Type.Object({ status: Type.Literal('2fa_disabled') }), ...errors } },
  }, async (request) => {
    await totp.disable(request.principal!, request.body as Static<typeof DisableBody>, requestMeta(request));
    return { status: '2fa_disabled' as const };
  });
}
