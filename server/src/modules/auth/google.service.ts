import type { Kysely } from 'kysely';
import type { DB } from '../../db/schema.js';
import { AppError } from '../../platform/errors.js';
import { authRepository as users, type UserRow } from './auth.repository.js';
import { deviceFromRequest, normalizeEmail, toUserView, type AuthService, type DeviceInput, type RequestMeta, type TokenPair, type UserView } from './auth.service.js';
import type { GoogleIdentity, GoogleTokenVerifier } from './google.js';
import { googleRepository as repo } from './google.repository.js';

const PROVIDER = 'google';

export interface GoogleSignIn extends TokenPair {
  user: UserView;
  device_id: string;
  /** True when this sign-in created the Keel account. */
  created: boolean;
}

interface Resolved {
  user: UserRow;
  created: boolean;
  linked: boolean;
}

/**
 * Sign-in with a Google ID token. The Google account (its `sub`) is the identity: once linked it
 * always signs in to the same Keel user, whatever its e-mail becomes. A first sign-in links to the
 * Keel account with the same e-mail only when that account has verified the address itself, so an
 * unconfirmed registration by someone else cannot capture the Google user; otherwise it creates an
 * account whose e-mail Google has verified. The reply carries Keel's own tokens, never Google's.
 */
export class GoogleSignInService {
  constructor(
    private readonly db: Kysely<DB>,
    private readonly auth: AuthService,
    private readonly verifier: GoogleTokenVerifier,
  ) {}

  /**
   * Verifies `idToken`, finds, links or creates the user, and starts a session on `device` (or one
   * named after the user agent). Throws 401 for a bad token, 403 for a disabled account, 409 when the
   * e-mail belongs to an unconfirmed account or one linked to another Google account, 401
   * `otp_required`/`otp_invalid` when the account has 2FA on and `otp` is not a valid code, 503 when
   * Google's keys are unavailable or Google sign-in is not configured.
   */
  async signIn(idToken: string, device: DeviceInput | undefined, meta: RequestMeta, otp?: string): Promise<GoogleSignIn> {
    const google = await this.verifier.verify(idToken);
    let resolved: Resolved;
    try {
      resolved = await this.resolve(google, meta);
    } catch (err) {
      if (err instanceof AppError) throw err;
      // A concurrent first sign-in of the same Google account (or e-mail) inserted first and this one
      // hit a unique constraint: resolve again against what the winner wrote.
      const winner = (await repo.identityBySubject(this.db, PROVIDER, google.subject)) ?? (await users.userByEmail(this.db, normalizeEmail(google.email)));
      if (!winner) throw err;
      resolved = await this.resolve(google, meta);
    }
    const { user, created, linked } = resolved;
    // Google proves the first factor only: an account with 2FA on still needs its code.
    await this.auth.checkSecondFactor(user, otp, meta);
    const pair = await this.auth.startSession(user.id, device ?? deviceFromRequest(meta));
    await this.auth.audit(created ? 'register.google' : 'login.google', user.id, meta, { device_id: pair.device_id, ...(linked ? { linked: true } : {}) });
    return { ...pair, user: toUserView(user), created };
  }

  private async resolve(google: GoogleIdentity, meta: RequestMeta): Promise<Resolved> {
    const now = new Date().toISOString();
    const identity = await repo.identityBySubject(this.db, PROVIDER, google.subject);
    const linkedUser = identity ? await users.userById(this.db, identity.user_id) : undefined;
    if (linkedUser) {
      await this.refuseDisabled(linkedUser, meta);
      return { user: linkedUser, created: false, linked: false };
    }

    const email = normalizeEmail(google.email);
    const owner = await users.userByEmail(this.db, email);
    if (owner) {
      await this.refuseDisabled(owner, meta);
      if (!owner.email_verified_at) {
        await this.auth.audit('login.failure', owner.id, meta, { method: 'google', reason: 'unverified_account_exists' });
        throw new AppError('unverified_account_exists', 'An account with this e-mail address was registered but never confirmed, so Google sign-in will not take it over. If it is yours, confirm the address with the link we sent (register again for a new link), then sign in with Google to link the two.', 409);
      }
      if ((await repo.identitiesOfUser(this.db, owner.id, PROVIDER)).length > 0) {
        // The address moved to another Google account (e.g. a recycled Workspace address): the
        // account stays with the Google account it was linked to.
        await this.auth.audit('login.failure', owner.id, meta, { method: 'google', reason: 'google_account_mismatch' });
        throw new AppError('google_account_mismatch', 'The Keel account with this e-mail address is linked to a different Google account.', 409);
      }
      await repo.insertIdentity(this.db, { user_id: owner.id, provider: PROVIDER, subject: google.subject, email }, now);
      return { user: owner, created: false, linked: true };
    }

    const user = await this.db.transaction().execute(async (trx) => {
      const row = await users.insertUser(trx, { email, name: google.name, password_hash: null, email_verified_at: now }, now);
      await repo.insertIdentity(trx, { user_id: row.id, provider: PROVIDER, subject: google.subject, email }, now);
      return row;
    });
    return { user, created: true, linked: false };
  }

  private async refuseDisabled(user: UserRow, meta: RequestMeta): Promise<void> {
    if (!user.disabled_at) return;
    await this.auth.audit('login.failure', user.id, meta, { method: 'google', reason: 'disabled' });
    throw new AppError('account_disabled', 'This account is disabled.', 403);
  }
}
