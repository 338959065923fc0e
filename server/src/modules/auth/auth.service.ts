import { createHmac, randomInt } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { DB } from '../../db/schema.js';
import { effectiveScopes, type Principal } from '../../platform/auth.js';
import { deriveKey, randomToken, safeEqual, sha256 } from '../../platform/crypto.js';
import type { ErasureRegistry } from '../../platform/erasure.js';
import { AppError } from '../../platform/errors.js';
import type { Mailer } from '../../platform/mailer.js';
import { looksLikeApiKey, parseApiKey } from './api-key-format.js';
import { authRepository as repo, type NewDevice, type UserRow } from './auth.repository.js';
import { assertPasswordAllowed, hashPassword, verifyPassword } from './passwords.js';
import { validatePublicKey } from './public-key.js';
import { invalidToken, TokenService } from './tokens.js';

export const DEVICE_TYPES = ['desktop', 'mobile', 'web', 'cli'] as const;
export type DeviceType = (typeof DEVICE_TYPES)[number];

export interface DeviceInput {
  name: string;
  type: DeviceType;
  platform?: string | null;
  public_key?: string | null;
}

export interface RequestMeta {
  ip: string;
  userAgent: string | null;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: 'bearer';
  expires_in: number;
}

export interface UserView {
  id: string;
  email: string | null;
  name: string | null;
  role: string;
  email_verified: boolean;
  two_factor_enabled: boolean;
  anonymous: boolean;
  disabled: boolean;
  created_at: string;
}

/** A presented refresh token that was already rotated is forgiven for this long (a client's retry or race). */
export const REFRESH_REUSE_GRACE_MS = 30_000;
const VERIFY_EMAIL_TTL_MS = 24 * 3600_000;
const RESET_PASSWORD_TTL_MS = 3600_000;
const PAIRING_CODE_TTL_MS = 10 * 60_000;
const TOUCH_EVERY_MS = 60_000;
const PAIRING_ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';

/** Second factor check at login; the TOTP feature provides it. */
export interface SecondFactor {
  /** Throws 401 otp_required / otp_invalid unless `otp` is a valid, unused code or recovery code. */
  checkLogin(user: UserRow, otp: string | undefined): Promise<void>;
}

export const normalizeEmail = (email: string): string => email.trim().toLowerCase();
const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * Accounts, sessions and devices: registration with e-mail verification, login, rotating refresh
 * tokens grouped in per-session families, anonymous device accounts, pairing, device revocation,
 * password reset, profile, and the authenticator that turns a credential into a Principal.
 */
export class AuthService {
  readonly tokens: TokenService;
  private readonly pairingKey: Buffer;
  private secondFactor: SecondFactor = { checkLogin: async () => undefined };

  constructor(
    private readonly db: Kysely<DB>,
    private readonly config: Config,
    private readonly mailer: Mailer,
    private readonly erasure: ErasureRegistry,
    private readonly logger: Logger,
  ) {
    this.tokens = new TokenService(config);
    this.pairingKey = deriveKey(config.secretKey, 'pairing-code');
  }

  useSecondFactor(factor: SecondFactor): void {
    this.secondFactor = factor;
  }

  /**
   * Every way of signing in to an account with 2FA on (password, Google) passes through here: 401
   * `otp_required` / `otp_invalid` unless `otp` is a valid unused code or recovery code.
   */
  async checkSecondFactor(user: UserRow, otp: string | undefined, meta: RequestMeta): Promise<void> {
    try {
      await this.secondFactor.checkLogin(user, otp);
    } catch (err) {
      await this.audit('login.failure', user.id, meta, { reason: (err as AppError).code });
      throw err;
    }
  }

  // ── audit ──────────────────────────────────────────────────────────────────────────────────

  /** Records a security event; never fails the request that caused it. */
  async audit(event: string, userId: string | null, meta: RequestMeta | undefined, details?: Record<string, unknown>): Promise<void> {
    try {
      await repo.insertAudit(this.db, { user_id: userId, event, ip: meta?.ip ?? null, user_agent: meta?.userAgent?.slice(0, 512) ?? null, details: details ? JSON.stringify(details) : null }, new Date().toISOString());
    } catch (err) {
      this.logger.error({ err, event }, 'audit event not recorded');
    }
  }

  // ── sessions ───────────────────────────────────────────────────────────────────────────────

  /** Creates a device (or uses an existing one) and a session on it, and returns its first token pair. */
  async startSession(userId: string, device: DeviceInput | { existingDeviceId: string }, now = Date.now()): Promise<TokenPair & { device_id: string }> {
    const at = iso(now);
    const refresh = this.tokens.newRefreshToken();
    const { sessionId, deviceId } = await this.db.transaction().execute(async (trx) => {
      const deviceId = 'existingDeviceId' in device ? device.existingDeviceId : (await repo.insertDevice(trx, userId, toNewDevice(device), at)).id;
      const session = await repo.insertSession(trx, { user_id: userId, device_id: deviceId, expires_at: iso(now + this.tokens.refreshTtlMs) }, at);
      await repo.insertRefreshToken(trx, { session_id: session.id, token_hash: TokenService.hash(refresh), expires_at: iso(now + this.tokens.refreshTtlMs) }, at);
      return { sessionId: session.id, deviceId };
    });
    return { ...(await this.pair(userId, sessionId, deviceId, refresh)), device_id: deviceId };
  }

  private async pair(userId: string, sessionId: string, deviceId: string, refresh: string): Promise<TokenPair> {
    return {
      access_token: await this.tokens.signAccess({ userId, sessionId, deviceId }),
      refresh_token: refresh,
      token_type: 'bearer',
      expires_in: this.tokens.accessTtlSeconds,
    };
  }

  /**
   * Rotates a refresh token. The presented token is spent and its successor issued. A spent token
   * presented again within the grace window gets the same successor (so concurrent refreshes do not
   * fork the session); later, or once the successor itself was used, it is reuse: the whole session
   * family is revoked.
   */
  async refresh(token: string, meta: RequestMeta): Promise<TokenPair> {
    const bad = (): AppError => AppError.unauthorized('The refresh token is invalid, expired or revoked.', 'invalid_refresh_token');
    if (!TokenService.looksLikeRefreshToken(token)) throw bad();
    const now = Date.now();
    const at = iso(now);
    const row = await repo.refreshTokenByHash(this.db, TokenService.hash(token));
    if (!row) throw bad();
    if (row.session_revoked_at || row.device_revoked_at || row.disabled_at || row.session_expires_at <= at || row.expires_at <= at) throw bad();

    const successor = this.tokens.successorOf(token);
    const successorHash = TokenService.hash(successor);
    const won = await this.db.transaction().execute(async (trx) => {
      if (!(await repo.spendRefreshToken(trx, row.id, at))) return false;
      await repo.insertRefreshToken(trx, { session_id: row.session_id, token_hash: successorHash, expires_at: row.session_expires_at }, at);
      await repo.touchSession(trx, row.session_id, at);
      return true;
    });
    if (!won) {
      // Already spent: a retry or a concurrent refresh within the grace window gets the same
      // successor, as long as nobody has used that successor yet; anything else is token theft.
      const spent = await repo.refreshTokenByHash(this.db, TokenService.hash(token));
      const next = await repo.refreshTokenByHash(this.db, successorHash);
      const withinGrace = spent?.used_at !== null && spent?.used_at !== undefined && now - Date.parse(spent.used_at) <= REFRESH_REUSE_GRACE_MS;
      if (!withinGrace || !next || next.used_at !== null) {
        await repo.revokeSessions(this.db, { sessionId: row.session_id }, 'refresh_token_reuse', at);
        await this.audit('refresh_token.reuse', row.user_id, meta, { session_id: row.session_id });
        this.logger.warn({ session_id: row.session_id, user_id: row.user_id }, 'refresh token reuse: session family revoked');
        throw bad();
      }
    }
    return this.pair(row.user_id, row.session_id, row.device_id, successor);
  }

  async logout(principal: Principal, meta: RequestMeta): Promise<void> {
    if (!principal.sessionId) throw AppError.forbidden('API keys have no session to end; revoke the key instead.');
    await repo.revokeSessions(this.db, { sessionId: principal.sessionId }, 'logout', iso(Date.now()));
    await this.audit('logout', principal.userId, meta);
  }

  async logoutEverywhere(principal: Principal, meta: RequestMeta): Promise<void> {
    await repo.revokeSessions(this.db, { userId: principal.userId }, 'logout_all', iso(Date.now()));
    await this.audit('logout.all', principal.userId, meta);
  }

  // ── authentication of requests ─────────────────────────────────────────────────────────────

  /** Turns the request's bearer token or API key into a Principal; every check hits the database, so revocation is immediate on every instance. */
  readonly authenticate = async (request: FastifyRequest): Promise<Principal | undefined> => {
    const credential = credentialOf(request);
    return credential === undefined ? undefined : this.authenticateCredential(credential);
  };

  /** The same checks for a credential that did not come in a header (the WebSocket's first frame). */
  readonly authenticateCredential = (credential: string): Promise<Principal> =>
    looksLikeApiKey(credential) ? this.authenticateApiKey(credential) : this.authenticateAccessToken(credential);

  private async authenticateAccessToken(token: string): Promise<Principal> {
    const claims = await this.tokens.verifyAccess(token);
    const s = await repo.sessionForAuth(this.db, claims.sessionId);
    const now = Date.now();
    if (!s || s.user_id !== claims.userId || s.device_id !== claims.deviceId) throw invalidToken();
    if (s.revoked_at || s.device_revoked_at) throw invalidToken('This session has ended or its device was revoked; sign in again.');
    if (s.disabled_at) throw invalidToken('This account is disabled.');
    if (s.expires_at <= iso(now)) throw invalidToken();
    if (now - Date.parse(s.last_seen_at) > TOUCH_EVERY_MS) await repo.touchDevice(this.db, s.device_id, iso(now));
    const role = s.role === 'admin' ? 'admin' : 'user';
    return { userId: s.user_id, role, kind: 'session', sessionId: s.id, deviceId: s.device_id, scopes: effectiveScopes(role) };
  }

  private async authenticateApiKey(key: string): Promise<Principal> {
    const invalid = (): AppError => AppError.unauthorized('The API key is invalid, expired or revoked.', 'invalid_api_key');
    const parsed = parseApiKey(key);
    if (!parsed) throw invalid();
    const row = await repo.apiKeyByPrefix(this.db, parsed.prefix);
    const now = Date.now();
    if (!row || !safeEqual(row.secret_hash, parsed.secretHash)) throw invalid();
    if (row.revoked_at || row.disabled_at || (row.expires_at && row.expires_at <= iso(now))) throw invalid();
    if (!row.last_used_at || now - Date.parse(row.last_used_at) > TOUCH_EVERY_MS) await repo.touchApiKey(this.db, row.id, iso(now));
    const role = row.role === 'admin' ? 'admin' : 'user';
    return { userId: row.user_id, role, kind: 'api_key', apiKeyId: row.id, scopes: effectiveScopes(role, JSON.parse(row.scopes) as string[]) };
  }

  // ── accounts ───────────────────────────────────────────────────────────────────────────────

  /**
   * Registration answers the same for a new and a taken e-mail (202, "check your inbox"), so it cannot
   * be used to find accounts. A new address gets a verification link that activates the account and
   * signs in; a taken one gets a note to its owner. An unverified registration can be repeated (the
   * latest password wins), so nobody can squat an address they do not control.
   */
  async register(input: { email: string; password: string; name?: string | null }, meta: RequestMeta): Promise<void> {
    const email = normalizeEmail(input.email);
    assertPasswordAllowed(input.password, email);
    const passwordHash = await hashPassword(input.password);
    const now = iso(Date.now());
    const existing = await repo.userByEmail(this.db, email);
    if (existing?.email_verified_at) {
      await this.audit('register.existing_email', existing.id, meta);
      await this.mailer.send({ to: email, subject: 'Someone tried to register with your e-mail', text: `Someone (maybe you) tried to create a new Keel account with ${email}, which already has one.\n\nIf it was you, sign in, or reset your password at ${this.config.publicUrl}.\nIf it was not you, you can ignore this message.` });
      return;
    }
    const user = existing
      ? (await repo.updateUser(this.db, existing.id, { password_hash: passwordHash, name: input.name ?? existing.name, password_changed_at: now }, now))!
      : await repo.insertUser(this.db, { email, name: input.name ?? null, password_hash: passwordHash }, now);
    await this.audit('register', user.id, meta);
    await this.sendVerification(user.id, email);
  }

  private async sendVerification(userId: string, email: string): Promise<void> {
    const token = randomToken(32);
    const now = Date.now();
    await repo.expireOneTimeTokens(this.db, userId, 'verify_email', iso(now));
    await repo.insertOneTimeToken(this.db, { user_id: userId, purpose: 'verify_email', token_hash: sha256(token), email, expires_at: iso(now + VERIFY_EMAIL_TTL_MS) }, iso(now));
    await this.mailer.send({ to: email, subject: 'Confirm your e-mail address', text: `Confirm your e-mail address for Keel with this code:\n\n${token}\n\nor open ${this.config.publicUrl}/verify-email?token=${token}\n\nIt expires in 24 hours and works once.` });
  }

  /** Sends a fresh verification link for the caller's unverified address (202 either way). */
  async requestVerification(principal: Principal): Promise<void> {
    const user = await repo.userById(this.db, principal.userId);
    if (user?.email && !user.email_verified_at) await this.sendVerification(user.id, user.email);
  }

  /** Spends a verification token: binds and verifies the e-mail, then signs in on the given device. */
  async verifyEmail(token: string, device: DeviceInput | undefined, meta: RequestMeta): Promise<TokenPair & { user: UserView; device_id: string }> {
    const now = iso(Date.now());
    const row = await repo.spendOneTimeToken(this.db, 'verify_email', sha256(token), now);
    if (!row || !row.email) throw AppError.badRequest('The verification token is invalid, used or expired.', undefined, 'invalid_token');
    const owner = await repo.userByEmail(this.db, row.email);
    if (owner && owner.id !== row.user_id) throw AppError.conflict('This e-mail address now belongs to another account.');
    const user = await repo.updateUser(this.db, row.user_id, { email: row.email, email_verified_at: now }, now);
    if (!user) throw AppError.badRequest('The verification token is invalid, used or expired.', undefined, 'invalid_token');
    await this.audit('email.verified', user.id, meta);
    const pair = await this.startSession(user.id, device ?? deviceFromRequest(meta));
    return { ...pair, user: toUserView(user) };
  }

  /** E-mail + password sign-in. Unknown e-mail and wrong password look the same, in answer and in time. */
  async login(input: { email: string; password: string; otp?: string; device?: DeviceInput }, meta: RequestMeta): Promise<TokenPair & { user: UserView; device_id: string }> {
    const email = normalizeEmail(input.email);
    const user = await repo.userByEmail(this.db, email);
    const ok = await verifyPassword(user?.password_hash, input.password);
    if (!user || !ok) {
      await this.audit('login.failure', user?.id ?? null, meta, { reason: 'invalid_credentials' });
      throw AppError.unauthorized('Invalid e-mail or password.', 'invalid_credentials');
    }
    if (user.disabled_at) {
      await this.audit('login.failure', user.id, meta, { reason: 'disabled' });
      throw new AppError('account_disabled', 'This account is disabled.', 403);
    }
    if (!user.email_verified_at) throw new AppError('email_not_verified', 'Confirm your e-mail address first: follow the link we sent you (POST /auth/verify-email).', 403);
    await this.checkSecondFactor(user, input.otp, meta);
    const pair = await this.startSession(user.id, input.device ?? deviceFromRequest(meta));
    await this.audit('login.success', user.id, meta, { device_id: pair.device_id });
    return { ...pair, user: toUserView(user) };
  }

  /** An account with no e-mail that lives on its devices (seed 004's register). */
  async anonymous(device: DeviceInput, meta: RequestMeta): Promise<TokenPair & { user_id: string; device_id: string }> {
    const user = await repo.insertUser(this.db, { email: null, name: null, password_hash: null }, iso(Date.now()));
    const pair = await this.startSession(user.id, device);
    await this.audit('register.anonymous', user.id, meta, { device_id: pair.device_id });
    return { ...pair, user_id: user.id };
  }

  /**
   * Adds an e-mail (and password) to the caller's account without changing its id: the password is
   * set now (for an account that had none; otherwise it must be given to re-authenticate), the e-mail
   * is bound when the link sent to it is followed.
   */
  async addEmail(principal: Principal, input: { email: string; password: string }, meta: RequestMeta): Promise<void> {
    const user = await this.requireUser(principal);
    const email = normalizeEmail(input.email);
    const now = iso(Date.now());
    if (user.password_hash) {
      if (!(await verifyPassword(user.password_hash, input.password))) throw AppError.unauthorized('The password is wrong.', 'invalid_credentials');
    } else {
      assertPasswordAllowed(input.password, email);
      await repo.updateUser(this.db, user.id, { password_hash: await hashPassword(input.password), password_changed_at: now }, now);
    }
    await this.audit('email.change_requested', user.id, meta);
    const taken = await repo.userByEmail(this.db, email);
    if (taken && taken.id !== user.id) {
      await this.mailer.send({ to: email, subject: 'Someone tried to add your e-mail to another account', text: `Someone tried to add ${email} to another Keel account. Nothing changed. If it was you, sign in with this address instead.` });
      return;
    }
    await this.sendVerification(user.id, email);
  }

  // ── devices and pairing ────────────────────────────────────────────────────────────────────

  async pairDevice(principal: Principal, device: DeviceInput, meta: RequestMeta): Promise<TokenPair & { device_id: string }> {
    const pair = await this.startSession(principal.userId, device);
    await this.audit('device.paired', principal.userId, meta, { device_id: pair.device_id, by_device_id: principal.deviceId });
    return pair;
  }

  private codeHash(code: string): string {
    // Pairing codes are short, so an HMAC with a server key (not a bare hash) keeps a database dump
    // from being brute-forced offline.
    return createHmac('sha256', this.pairingKey).update(code.replace(/[^A-Za-z0-9]/g, '').toUpperCase()).digest('hex');
  }

  async createPairingCode(principal: Principal, meta: RequestMeta): Promise<{ code: string; expires_at: string }> {
    let raw = '';
    for (let i = 0; i < 8; i++) raw += PAIRING_ALPHABET[randomInt(PAIRING_ALPHABET.length)];
    const code = `${raw.slice(0, 4)}-${raw.slice(4, 8)}`;
    const now = Date.now();
    const expiresAt = iso(now + PAIRING_CODE_TTL_MS);
    await repo.insertPairingCode(this.db, { user_id: principal.userId, code_hash: this.codeHash(code), expires_at: expiresAt }, iso(now));
    await this.audit('pairing_code.created', principal.userId, meta);
    return { code, expires_at: expiresAt };
  }

  async redeemPairingCode(code: string, device: DeviceInput, meta: RequestMeta): Promise<TokenPair & { user_id: string; device_id: string }> {
    const row = await repo.spendPairingCode(this.db, this.codeHash(code), iso(Date.now()));
    if (!row) throw AppError.badRequest('The pairing code is invalid, used or expired.', undefined, 'invalid_pairing_code');
    const user = await repo.userById(this.db, row.user_id);
    if (!user || user.disabled_at) throw AppError.badRequest('The pairing code is invalid, used or expired.', undefined, 'invalid_pairing_code');
    const pair = await this.startSession(user.id, device);
    await this.audit('device.paired', user.id, meta, { device_id: pair.device_id, via: 'pairing_code' });
    return { ...pair, user_id: user.id };
  }

  async listDevices(principal: Principal) {
    const rows = await repo.devicesOf(this.db, principal.userId);
    return rows.map((d) => ({ id: d.id, name: d.name, type: d.type, platform: d.platform, public_key: d.public_key, created_at: d.created_at, last_seen_at: d.last_seen_at, current: d.id === principal.deviceId }));
  }

  /** Revokes one of the caller's devices: its refresh and access tokens stop working at once. */
  async revokeDevice(principal: Principal, deviceId: string, meta: RequestMeta): Promise<void> {
    const device = await repo.deviceOf(this.db, principal.userId, deviceId);
    if (!device) throw AppError.notFound('Device');
    const now = iso(Date.now());
    await this.db.transaction().execute(async (trx) => {
      await repo.revokeDevice(trx, deviceId, now);
      await repo.revokeSessions(trx, { deviceId }, 'device_revoked', now);
    });
    await this.audit('device.revoked', principal.userId, meta, { device_id: deviceId });
  }

  // ── passwords ──────────────────────────────────────────────────────────────────────────────

  /** Always "accepted": whether the address has an account is not revealed. */
  async forgotPassword(emailInput: string, meta: RequestMeta): Promise<void> {
    const email = normalizeEmail(emailInput);
    const user = await repo.userByEmail(this.db, email);
    if (!user || !user.email_verified_at || user.disabled_at) return;
    const token = randomToken(32);
    const now = Date.now();
    await repo.expireOneTimeTokens(this.db, user.id, 'reset_password', iso(now));
    await repo.insertOneTimeToken(this.db, { user_id: user.id, purpose: 'reset_password', token_hash: sha256(token), email, expires_at: iso(now + RESET_PASSWORD_TTL_MS) }, iso(now));
    await this.audit('password.reset_requested', user.id, meta);
    await this.mailer.send({ to: email, subject: 'Reset your password', text: `Reset your Keel password with this code:\n\n${token}\n\nor open ${this.config.publicUrl}/reset-password?token=${token}\n\nIt expires in one hour and works once. If you did not ask for this, ignore this message.` });
  }

  /** Sets a new password from a reset token and ends every session; it signs nobody in, so 2FA still applies at the next login. */
  async resetPassword(token: string, password: string, meta: RequestMeta): Promise<void> {
    const now = iso(Date.now());
    const row = await repo.spendOneTimeToken(this.db, 'reset_password', sha256(token), now);
    const user = row ? await repo.userById(this.db, row.user_id) : undefined;
    if (!row || !user) throw AppError.badRequest('The reset token is invalid, used or expired.', undefined, 'invalid_token');
    assertPasswordAllowed(password, user.email);
    await repo.updateUser(this.db, user.id, { password_hash: await hashPassword(password), password_changed_at: now }, now);
    await repo.revokeSessions(this.db, { userId: user.id }, 'password_reset', now);
    await this.audit('password.reset', user.id, meta);
  }

  /** Changes the password after checking the current one; every other session ends. */
  async changePassword(principal: Principal, current: string, next: string, meta: RequestMeta): Promise<void> {
    const user = await this.requireUser(principal);
    if (!(await verifyPassword(user.password_hash, current))) {
      await this.audit('password.change_failed', user.id, meta);
      throw AppError.unauthorized('The current password is wrong.', 'invalid_credentials');
    }
    assertPasswordAllowed(next, user.email);
    const now = iso(Date.now());
    await repo.updateUser(this.db, user.id, { password_hash: await hashPassword(next), password_changed_at: now }, now);
    await repo.revokeSessions(this.db, { userId: user.id, ...(principal.sessionId ? { exceptSessionId: principal.sessionId } : {}) }, 'password_changed', now);
    await this.audit('password.changed', user.id, meta);
  }

  // ── profile ────────────────────────────────────────────────────────────────────────────────

  async me(principal: Principal): Promise<UserView> {
    return toUserView(await this.requireUser(principal));
  }

  async updateMe(principal: Principal, changes: { name?: string | null }): Promise<UserView> {
    const now = iso(Date.now());
    const user = await repo.updateUser(this.db, principal.userId, { ...(changes.name !== undefined ? { name: changes.name } : {}) }, now);
    if (!user) throw AppError.notFound('User');
    return toUserView(user);
  }

  /** Erases the account and everything it owns in every module; accounts with a password must confirm it. */
  async deleteMe(principal: Principal, password: string | undefined, meta: RequestMeta): Promise<void> {
    const user = await this.requireUser(principal);
    if (user.password_hash && !(await verifyPassword(user.password_hash, password ?? ''))) {
      throw AppError.unauthorized('Confirm with your password to delete the account.', 'invalid_credentials');
    }
    await this.erasure.eraseUser(this.db, user.id);
    this.logger.info({ user_id: user.id, ip: meta.ip }, 'account erased');
  }

  async auditOf(userId: string | undefined, limit: number, cursor: string | undefined) {
    const rows = await repo.auditPage(this.db, userId ? { userId } : {}, limit, cursor);
    const items = rows.slice(0, limit).map((r) => ({ id: r.id, user_id: r.user_id, event: r.event, ip: r.ip, user_agent: r.user_agent, details: r.details ? (JSON.parse(r.details) as Record<string, unknown>) : null, created_at: r.created_at }));
    return { items, next_cursor: rows.length > limit ? items[items.length - 1]!.id : null };
  }

  private async requireUser(principal: Principal): Promise<UserRow> {
    const user = await repo.userById(this.db, principal.userId);
    if (!user) throw AppError.unauthorized();
    return user;
  }
}

export function toUserView(u: UserRow): UserView {
  return {
    id: u.id,
    email: u.email,
    name: u.name,
    role: u.role,
    email_verified: u.email_verified_at !== null,
    two_factor_enabled: u.totp_enabled_at !== null,
    anonymous: u.email === null && u.password_hash === null,
    disabled: u.disabled_at !== null,
    created_at: u.created_at,
  };
}

function toNewDevice(d: DeviceInput): NewDevice {
  return { name: d.name.trim().slice(0, 120) || 'Unnamed device', type: d.type, platform: d.platform?.slice(0, 60) ?? null, public_key: d.public_key ? validatePublicKey(d.public_key) : null };
}

/** A device record for a sign-in that did not describe its device: named after the user agent. */
export function deviceFromRequest(meta: RequestMeta): DeviceInput {
  const ua = meta.userAgent ?? '';
  const type: DeviceType = /mobile|android|iphone|ipad/i.test(ua) ? 'mobile' : /mozilla|chrome|safari|firefox/i.test(ua) ? 'web' : 'cli';
  return { name: ua ? ua.slice(0, 80) : 'Unknown device', type, platform: null };
}

/** The bearer token or API key of a request: `X-API-Key` first, then `Authorization: Bearer`. */
export function credentialOf(request: FastifyRequest): string | undefined {
  const apiKey = request.headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.trim()) return apiKey.trim();
  const header = request.headers.authorization;
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw AppError.unauthorized('Send credentials as "Authorization: Bearer <token>" or "X-API-Key: <key>".', 'invalid_token');
  return m[1];
}

export function requestMeta(request: FastifyRequest): RequestMeta {
  const ua = request.headers['user-agent'];
  return { ip: request.ip, userAgent: typeof ua === 'string' ? ua : null };
}
