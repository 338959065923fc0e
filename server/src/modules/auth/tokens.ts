import { createHmac } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { Config } from '../../config.js';
import { deriveKey, randomToken, sha256 } from '../../platform/crypto.js';
import { AppError } from '../../platform/errors.js';
import { uuidv7 } from '../../platform/ids.js';

const ISSUER = 'keel';
const AUDIENCE = 'keel-api';
/** The only algorithm accepted: `none`, RS/ES confusion and anything else fail verification. */
const ALGORITHMS = ['HS256'];
const ACCESS_TYP = 'at+jwt';
const REFRESH_PREFIX = 'krt_';

export interface AccessClaims {
  readonly userId: string;
  readonly sessionId: string;
  readonly deviceId: string;
  readonly jti: string;
}

export function invalidToken(message = 'The access token is invalid or expired.'): AppError {
  return AppError.unauthorized(message, 'invalid_token');
}

/**
 * Short-lived JWT access tokens (HS256 with a key derived from SECRET_KEY, iss/aud/sub/exp/iat/jti,
 * session and device ids, a token type) and opaque refresh tokens stored only as SHA-256 hashes.
 */
export class TokenService {
  private readonly accessKey: Uint8Array;
  private readonly rotationKey: Buffer;
  readonly accessTtlSeconds: number;
  readonly refreshTtlMs: number;

  constructor(config: Pick<Config, 'secretKey' | 'accessTokenExpireMinutes' | 'refreshTokenExpireDays'>) {
    this.accessKey = deriveKey(config.secretKey, 'access-token');
    this.rotationKey = deriveKey(config.secretKey, 'refresh-rotation');
    this.accessTtlSeconds = config.accessTokenExpireMinutes * 60;
    this.refreshTtlMs = config.refreshTokenExpireDays * 86_400_000;
  }

  async signAccess(claims: Omit<AccessClaims, 'jti'>): Promise<string> {
    return new SignJWT({ sid: claims.sessionId, did: claims.deviceId, token_type: 'access' })
      .setProtectedHeader({ alg: 'HS256', typ: ACCESS_TYP })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(claims.userId)
      .setJti(uuidv7())
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.accessTtlSeconds)
      .sign(this.accessKey);
  }

  /** Verifies signature, algorithm, type, issuer, audience, expiry and required claims; 401 otherwise. */
  async verifyAccess(token: string): Promise<AccessClaims> {
    try {
      const { payload } = await jwtVerify(token, this.accessKey, {
        algorithms: ALGORITHMS,
        issuer: ISSUER,
        audience: AUDIENCE,
        typ: ACCESS_TYP,
        clockTolerance: 5,
        requiredClaims: ['sub', 'exp', 'iat', 'jti', 'sid', 'did'],
      });
      if (payload.token_type !== 'access' || typeof payload.sid !== 'string' || typeof payload.did !== 'string') throw invalidToken();
      return { userId: payload.sub!, sessionId: payload.sid, deviceId: payload.did, jti: payload.jti! };
    } catch (err) {
      if (err instanceof AppError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw invalidToken('The access token has expired; refresh it.');
      throw invalidToken();
    }
  }

  newRefreshToken(): string {
    return `${REFRESH_PREFIX}${randomToken(32)}`;
  }

  /**
   * The token that replaces `token` on rotation, derived (HMAC) rather than random: two concurrent
   * refreshes with the same token compute the same successor, so the session does not fork, and the
   * server still stores only hashes.
   */
  successorOf(token: string): string {
    return `${REFRESH_PREFIX}${createHmac('sha256', this.rotationKey).update(token).digest('base64url')}`;
  }

  static hash(token: string): string {
    return sha256(token);
  }

  static looksLikeRefreshToken(value: string): boolean {
    return value.startsWith(REFRESH_PREFIX);
  }
}
