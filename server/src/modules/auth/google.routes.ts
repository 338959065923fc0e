import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import type { ModuleContext } from '../../platform/module.js';
import { authRateLimit } from '../../platform/rate-limit.js';
import { ErrorResponse } from '../../platform/schemas.js';
import { DeviceBody, TokenPairSchema, UserSchema } from './auth.schemas.js';
import { requestMeta, type AuthService } from './auth.service.js';
import { GoogleTokenVerifier } from './google.js';
import { GoogleSignInService } from './google.service.js';

const GoogleBody = Type.Object({
  id_token: Type.String({ minLength: 1, maxLength: 4096, description: 'The ID token (a JWT) Google Identity Services gave the client.' }),
  device: Type.Optional(DeviceBody),
  otp: Type.Optional(Type.String({ maxLength: 32, description: 'A TOTP or recovery code, required when the account has 2FA on.' })),
});
const GoogleSignedIn = Type.Intersect([
  TokenPairSchema,
  Type.Object({ user: UserSchema, device_id: Type.String(), created: Type.Boolean({ description: 'True when this sign-in created the account.' }) }),
]);

/** `POST /auth/google`: Google sign-in, with one verifier (and JWKS cache) per server. */
export async function googleRoutes(app: FastifyInstance, ctx: ModuleContext, auth: AuthService): Promise<void> {
  const verifier = new GoogleTokenVerifier({ clientIds: ctx.config.google.clientIds, jwksUrl: ctx.config.google.jwksUrl, logger: ctx.logger });
  const google = new GoogleSignInService(ctx.database.db, auth, verifier);

  app.post('/auth/google', {
    config: { rateLimit: authRateLimit(ctx.config.rateLimit) },
    schema: {
      tags: ['identity'],
      summary: 'Sign in with a Google ID token; returns Keel\'s own tokens',
      description: 'The token is verified against Google\'s published keys (RS256), its issuer, its audience (one of `GOOGLE_CLIENT_ID`), its expiry and `email_verified`. '
        + 'The Google account is linked to the Keel account with the same e-mail only if that account has confirmed the address; otherwise a new account is created (`created: true`). '
        + '401 `invalid_google_token` says which check failed; 409 when the e-mail belongs to an unconfirmed account or to one linked to another Google account; '
        + '503 `google_unavailable` when Google\'s keys cannot be fetched, `google_not_configured` without `GOOGLE_CLIENT_ID`.',
      body: GoogleBody,
      response: { 200: GoogleSignedIn, 400: ErrorResponse, 401: ErrorResponse, 403: ErrorResponse, 409: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse },
    },
  }, async (request) => {
    const { id_token, device, otp } = request.body as Static<typeof GoogleBody>;
    return google.signIn(id_token, device, requestMeta(request), otp);
  });
}
