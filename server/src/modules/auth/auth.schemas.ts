import { Type, type Static } from 'typebox';

// Surrounding spaces (mobile keyboards add them) are tolerated and trimmed by the service.
export const Email = Type.String({ maxLength: 254, pattern: '^\\s*[^\\s@]+@[^\\s@]+\\.[^\\s@]+\\s*$', description: 'Compared case-insensitively; stored trimmed and lower-cased.' });
/** Length and commonness are checked by the service (so the message can say why); here only the type and an upper bound. */
export const Password = Type.String({ minLength: 1, maxLength: 1024, description: 'Used exactly as sent (no trimming): 8 to 256 characters, not among the most common passwords.' });

export const DeviceTypeSchema = Type.Union([Type.Literal('desktop'), Type.Literal('mobile'), Type.Literal('web'), Type.Literal('cli')]);
export const PublicKey = Type.String({ maxLength: 8192, description: 'SPKI PEM or public JWK (JSON): EC P-256/P-384, Ed25519, X25519 or RSA ≥ 2048 bits.' });

/** A device as described in a request body (`device` object of login/register). */
export const DeviceBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 120 }),
  type: DeviceTypeSchema,
  platform: Type.Optional(Type.Union([Type.String({ maxLength: 60 }), Type.Null()])),
  public_key: Type.Optional(Type.Union([PublicKey, Type.Null()])),
}, { additionalProperties: false });

/** Seed 004's flat device fields (anonymous sign-up, pairing). */
export const FlatDeviceBody = Type.Object({
  device_name: Type.String({ minLength: 1, maxLength: 120 }),
  device_type: DeviceTypeSchema,
  platform: Type.Optional(Type.Union([Type.String({ maxLength: 60 }), Type.Null()])),
  public_key: Type.Optional(Type.Union([PublicKey, Type.Null()])),
});
export type FlatDevice = Static<typeof FlatDeviceBody>;

export const TokenPairSchema = Type.Object({
  access_token: Type.String(),
  refresh_token: Type.String(),
  token_type: Type.Literal('bearer'),
  expires_in: Type.Integer({ description: 'Seconds until the access token expires.' }),
});

export const UserSchema = Type.Object({
  id: Type.String(),
  email: Type.Union([Type.String(), Type.Null()]),
  name: Type.Union([Type.String(), Type.Null()]),
  role: Type.String(),
  email_verified: Type.Boolean(),
  two_factor_enabled: Type.Boolean(),
  anonymous: Type.Boolean(),
  disabled: Type.Boolean(),
  created_at: Type.String(),
});

export const SignedIn = Type.Intersect([TokenPairSchema, Type.Object({ user: UserSchema, device_id: Type.String() })]);
export const DeviceSignedIn = Type.Intersect([TokenPairSchema, Type.Object({ user_id: Type.String(), device_id: Type.String() })]);

export const Accepted = Type.Object({ status: Type.String(), message: Type.String() });

export const DeviceSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  type: Type.String(),
  platform: Type.Union([Type.String(), Type.Null()]),
  public_key: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
  last_seen_at: Type.String(),
  current: Type.Boolean(),
});

export const AuditEvent = Type.Object({
  id: Type.String(),
  user_id: Type.Union([Type.String(), Type.Null()]),
  event: Type.String(),
  ip: Type.Union([Type.String(), Type.Null()]),
  user_agent: Type.Union([Type.String(), Type.Null()]),
  details: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  created_at: Type.String(),
});

export const PageQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 64 })),
});

export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });
