import { createLocalJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import type { Logger } from 'pino';
import { AppError } from '../../platform/errors.js';

/** Both spellings Google puts in `iss` (https://developers.google.com/identity/gsi/web/guides/verify-google-id-token). */
export const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];
/** Google signs ID tokens with RS256 only; `none`, HS256 (key confusion) and everything else are refused. */
const ALGORITHMS = ['RS256'];
const CLOCK_TOLERANCE_S = 60;
const DEFAULT_TTL_MS = 3600_000;
const MAX_TTL_MS = 24 * 3600_000;
const FETCH_TIMEOUT_MS = 5_000;
const KID_REFETCH_INTERVAL_MS = 30_000;
const MAX_JWKS_BYTES = 256 * 1024;
const RETRY_AFTER_S = 30;

/** What Keel takes from a verified Google ID token. */
export interface GoogleIdentity {
  /** Google's stable account id (`sub`); e-mail addresses can change, this does not. */
  readonly subject: string;
  /** As Google sent it (not normalized); Google has verified it. */
  readonly email: string;
  readonly name: string | null;
}

export interface GoogleVerifierOptions {
  /** OAuth client ids accepted as `aud`; empty means Google sign-in is not configured. */
  readonly clientIds: readonly string[];
  readonly jwksUrl: string;
  readonly logger?: Logger;
  readonly fetchTimeoutMs?: number;
  /** Least time between two refetches caused by unknown `kid`s. */
  readonly kidRefetchIntervalMs?: number;
  readonly now?: () => number;
}

interface KeySet {
  readonly getKey: ReturnType<typeof createLocalJWKSet>;
  readonly kids: ReadonlySet<string>;
  readonly expiresAt: number;
}

const refused = (why: string): AppError => AppError.unauthorized(`The Google ID token was refused: ${why}`, 'invalid_google_token');

/**
 * Verifies Google ID tokens against Google's published keys (JWKS). The key set is cached for as
 * long as its Cache-Control allows (at most 24 h; 1 h when it says nothing) and refetched early only
 * when a token names a key not in it, at most once per interval, so tokens with made-up `kid`s
 * cannot turn Keel into a load generator against Google. When the keys cannot be had, verification
 * fails closed with 503 `google_unavailable`; a token that fails any check gets 401
 * `invalid_google_token` naming the check, never echoing the token.
 */
export class GoogleTokenVerifier {
  private keys: KeySet | undefined;
  private loading: Promise<KeySet> | undefined;
  private lastKidRefetchAt = Number.NEGATIVE_INFINITY;
  private readonly now: () => number;

  constructor(private readonly options: GoogleVerifierOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Whether any client id is configured (without one, no token can have a valid audience). */
  get configured(): boolean {
    return this.options.clientIds.length > 0;
  }

  /**
   * Returns the identity in `idToken` once its signature (RS256, a key from the JWKS), issuer,
   * audience, expiry (±60 s) and `email_verified` all check out; throws AppError 401, or 503 when
   * Google sign-in is not configured or Google's keys cannot be fetched.
   */
  async verify(idToken: string): Promise<GoogleIdentity> {
    if (!this.configured) {
      throw new AppError('google_not_configured', 'Google sign-in is not configured on this server: set GOOGLE_CLIENT_ID to the OAuth client id(s) whose tokens it accepts.', 503);
    }
    const kid = headerKid(idToken);
    let keys = await this.currentKeys();
    if (!keys.kids.has(kid)) {
      // Google publishes a new key before signing with it, so an unknown kid is usually a forgery;
      // refetch once in a while in case it is a rotation this cache has not seen yet.
      if (this.loading) keys = await this.loading;
      else if (this.now() - this.lastKidRefetchAt >= (this.options.kidRefetchIntervalMs ?? KID_REFETCH_INTERVAL_MS)) {
        this.lastKidRefetchAt = this.now();
        keys = await this.load();
      }
      if (!keys.kids.has(kid)) throw refused('it names a signing key (kid) that Google does not publish.');
    }

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, keys.getKey, {
        algorithms: ALGORITHMS,
        issuer: GOOGLE_ISSUERS,
        audience: [...this.options.clientIds],
        clockTolerance: CLOCK_TOLERANCE_S,
        currentDate: new Date(this.now()),
        requiredClaims: ['sub', 'exp', 'iat', 'email'],
      }));
    } catch (err) {
      throw explain(err);
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') throw refused('its "sub" claim is not a string.');
    if (typeof payload.email !== 'string' || !payload.email.includes('@')) throw refused('its "email" claim is not an e-mail address.');
    // Google has sent the flag both as a boolean and as the string "true".
    if (payload.email_verified !== true && payload.email_verified !== 'true') throw refused('Google has not verified its e-mail address (email_verified is not true).');
    return { subject: payload.sub, email: payload.email, name: nameOf(payload) };
  }

  private async currentKeys(): Promise<KeySet> {
    if (this.keys && this.keys.expiresAt > this.now()) return this.keys;
    return this.load();
  }

  /** One fetch at a time: concurrent sign-ins wait for the same response. */
  private load(): Promise<KeySet> {
    this.loading ??= this.fetchKeys().then(
      (keys) => {
        this.keys = keys;
        this.loading = undefined;
        return keys;
      },
      (err: unknown) => {
        this.loading = undefined;
        throw err;
      },
    );
    return this.loading;
  }

  private async fetchKeys(): Promise<KeySet> {
    const url = this.options.jwksUrl;
    const unavailable = (reason: string, err?: unknown): AppError => {
      this.options.logger?.warn({ err, url, reason }, 'Google signing keys could not be fetched: Google sign-in fails until they can');
      return AppError.unavailable('google_unavailable', 'Google sign-in is unavailable right now: Google\'s signing keys could not be fetched. Try again shortly.', RETRY_AFTER_S);
    };
    let res: Response;
    try {
      res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(this.options.fetchTimeoutMs ?? FETCH_TIMEOUT_MS) });
    } catch (err) {
      throw unavailable('unreachable', err);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw unavailable('body not read', err);
    }
    if (!res.ok) throw unavailable(`HTTP ${res.status}`);
    if (text.length > MAX_JWKS_BYTES) throw unavailable('response too large');
    let jwks: JSONWebKeySet;
    let getKey: KeySet['getKey'];
    try {
      jwks = JSON.parse(text) as JSONWebKeySet;
      getKey = createLocalJWKSet(jwks);
    } catch (err) {
      throw unavailable('not a JSON Web Key Set', err);
    }
    const kids = new Set(jwks.keys.map((k) => k.kid).filter((kid): kid is string => typeof kid === 'string' && kid !== ''));
    if (kids.size === 0) throw unavailable('no keys with a kid');
    return { getKey, kids, expiresAt: this.now() + freshnessMs(res.headers) };
  }
}

/** The `kid` of an RS256 token; anything else is refused before any key is fetched. */
function headerKid(idToken: string): string {
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(idToken);
  } catch {
    throw refused('it is not a well-formed JWT.');
  }
  if (idToken.split('.').length !== 3) throw refused('it is not a well-formed JWT.');
  if (header.alg !== 'RS256') throw refused('it is not signed with RS256, the only algorithm Google uses.');
  if (typeof header.kid !== 'string' || header.kid === '') throw refused('its header names no signing key (kid).');
  return header.kid;
}

function explain(err: unknown): AppError {
  if (err instanceof joseErrors.JWTExpired) return refused('it has expired.');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return refused('its issuer is not Google (accounts.google.com).');
    if (err.claim === 'aud') return refused('it was issued for another application: its audience is not this server\'s Google client id.');
    if (err.claim === 'iat' || err.claim === 'nbf') return refused('it is not valid yet (is a clock wrong?).');
    if (err.reason === 'missing') return refused(`it has no "${err.claim}" claim.`);
    return refused(`its "${err.claim}" claim is invalid.`);
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return refused('its signature does not verify with Google\'s published key.');
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return refused('it is not signed with RS256, the only algorithm Google uses.');
  if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) return refused('no single Google key matches its header.');
  return refused('it could not be verified.');
}

function nameOf(payload: JWTPayload): string | null {
  const str = (v: unknown): string => (typeof v === 'string' ? v.trim() : '');
  const name = str(payload.name) || [str(payload.given_name), str(payload.family_name)].filter(Boolean).join(' ');
  return name ? name.slice(0, 120) : null;
}

/** How long a response may be reused per its Cache-Control (max-age less Age), capped at 24 h. */
export function freshnessMs(headers: Headers): number {
  const cc = headers.get('cache-control') ?? '';
  const maxAge = /(?:^|[\s,])max-age\s*=\s*"?(\d+)"?/i.exec(cc);
  if (!maxAge) return /no-cache|no-store/i.test(cc) ? 0 : DEFAULT_TTL_MS;
  const age = Number.parseInt(headers.get('age') ?? '0', 10);
  const seconds = Number(maxAge[1]) - (Number.isFinite(age) && age > 0 ? age : 0);
  return Math.min(Math.max(0, seconds) * 1000, MAX_TTL_MS);
}
