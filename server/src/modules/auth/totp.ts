import { createHmac, randomInt } from 'node:crypto';
import type { Kysely } from 'kysely';
import { generateSecret, generateURI, verify } from 'otplib';
import type { Config } from '../../config.js';
import type { DB } from '../../db/schema.js';
import type { Principal } from '../../platform/auth.js';
import { decrypt, deriveKey, encrypt } from '../../platform/crypto.js';
import { AppError } from '../../platform/errors.js';
import { authRepository, type UserRow } from './auth.repository.js';
import type { AuthService, RequestMeta, SecondFactor } from './auth.service.js';
import { verifyPassword } from './passwords.js';
import { totpRepository as repo } from './totp.repository.js';

/** The issuer authenticator apps show next to the account. */
export const TOTP_ISSUER = 'Keel';
/** Recovery codes handed out when 2FA is enabled. */
export const RECOVERY_CODE_COUNT = 10;
/** One 30-s step either side of now: clock drift between phone and server, and typing time. */
const TOLERANCE_SECONDS = 30;
/** Crockford base32: 10 characters carry 50 random bits, and no two characters look alike. */
const RECOVERY_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const RECOVERY_LENGTH = 10;

/** How a code was proven: a TOTP code, or a recovery code (which is now spent). */
export type OtpProof = { method: 'totp' } | { method: 'recovery_code'; remaining: number };

const otpInvalid = (): AppError => AppError.unauthorized('The two-factor code is wrong, expired or already used.', 'otp_invalid');
const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * Time-based one-time passwords (RFC 6238) as Keel's second factor: setup, enable, disable, and the
 * check at login. The secret is stored AES-GCM-encrypted under a key derived from SECRET_KEY, the
 * recovery codes as HMACs; every code is accepted once, even by concurrent requests.
 */
export class TotpService implements SecondFactor {
  private readonly secretKey: Buffer;
  private readonly recoveryKey: Buffer;

  constructor(
    private readonly db: Kysely<DB>,
    config: Config,
    private readonly auth: AuthService,
  ) {
    this.secretKey = deriveKey(config.secretKey, 'totp');
    this.recoveryKey = deriveKey(config.secretKey, 'totp-recovery-code');
  }

  /** Passes users without 2FA; otherwise 401 `otp_required` without a code and `otp_invalid` unless it is a valid, unused code or recovery code. */
  async checkLogin(user: UserRow, otp: string | undefined): Promise<void> {
    if (!user.totp_enabled_at || !user.totp_secret_enc) return;
    if (otp === undefined || otp.trim() === '') {
      throw AppError.unauthorized('Two-factor authentication is on for this account: send the code from the authenticator app, or a recovery code, as `otp`.', 'otp_required');
    }
    if (!(await this.spend(user, otp, undefined))) throw otpInvalid();
  }

  /** Starts enrolment: a new secret, stored encrypted and pending until `enable` proves the app has it. 409 when 2FA is already on. */
  async setup(principal: Principal): Promise<{ secret: string; otpauth_url: string }> {
    const user = await this.requireUser(principal);
    const alreadyOn = (): AppError => AppError.conflict('Two-factor authentication is already on; disable it first to enrol a new authenticator.');
    if (user.totp_enabled_at) throw alreadyOn();
    const secret = generateSecret();
    if (!(await repo.setPendingSecret(this.db, user.id, encrypt(this.secretKey, secret), iso(Date.now())))) throw alreadyOn();
    return { secret, otpauth_url: generateURI({ issuer: TOTP_ISSUER, label: user.email ?? user.id, secret }) };
  }

  /** Turns 2FA on once `otp` matches the pending secret, and returns the recovery codes (the only time they are shown). */
  async enable(principal: Principal, otp: string, meta: RequestMeta): Promise<{ recovery_codes: string[] }> {
    const user = await this.requireUser(principal);
    if (user.totp_enabled_at) throw AppError.conflict('Two-factor authentication is already on.');
    const secretEnc = user.totp_secret_enc;
    if (!secretEnc) throw AppError.conflict('There is no authenticator to confirm: call POST /auth/2fa/setup first.');
    const step = await this.matchingStep(secretEnc, otp, null);
    // 400, not 401: the session is fine, the code in the body is what is wrong.
    if (step === undefined) throw AppError.badRequest('The code does not match the authenticator set up; check the device clock and try the current code.', [{ field: 'otp', message: 'is not a valid code' }], 'otp_invalid');

    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
    const now = iso(Date.now());
    const enabled = await this.db.transaction().execute(async (trx) => {
      if (!(await repo.enable(trx, user.id, secretEnc, step, now))) return false;
      await repo.replaceRecoveryCodes(trx, user.id, codes.map((c) => this.recoveryHash(c)), now);
      return true;
    });
    if (!enabled) throw AppError.conflict('Two-factor authentication was enabled or set up again meanwhile; start over with POST /auth/2fa/setup.');
    await this.auth.audit('2fa.enabled', user.id, meta);
    return { recovery_codes: codes.map((c) => `${c.slice(0, 5)}-${c.slice(5)}`) };
  }

  /**
   * Turns 2FA off after re-authentication: every credential sent (`password`, `otp`) must be valid and
   * at least one must be sent. Clears the secret and the recovery codes.
   */
  async disable(principal: Principal, input: { otp?: string; password?: string }, meta: RequestMeta): Promise<void> {
    if (input.otp === undefined && input.password === undefined) {
      throw AppError.badRequest('Confirm with your password or a two-factor code: send `password` or `otp`.', [{ field: 'password', message: 'or otp is required' }]);
    }
    const user = await this.requireUser(principal);
    if (!user.totp_enabled_at) throw AppError.conflict('Two-factor authentication is not on.');

    if (input.password !== undefined && !(await verifyPassword(user.password_hash, input.password))) {
      await this.auth.audit('2fa.disable_failed', user.id, meta, { reason: 'invalid_credentials' });
      throw AppError.unauthorized('The password is wrong.', 'invalid_credentials');
    }
    let method = 'password';
    if (input.otp !== undefined) {
      const proof = await this.spend(user, input.otp, meta);
      if (!proof) {
        await this.auth.audit('2fa.disable_failed', user.id, meta, { reason: 'otp_invalid' });
        throw otpInvalid();
      }
      if (input.password === undefined) method = proof.method;
    }

    const now = iso(Date.now());
    await this.db.transaction().execute(async (trx) => {
      await repo.disable(trx, user.id, now);
      await repo.deleteRecoveryCodes(trx, user.id);
    });
    await this.auth.audit('2fa.disabled', user.id, meta, { method });
  }

  /**
   * Accepts `otp` once: a TOTP code of a step newer than the last accepted one, or an unused recovery
   * code. Undefined when it is neither.
   */
  private async spend(user: UserRow, otp: string, meta: RequestMeta | undefined): Promise<OtpProof | undefined> {
    if (!user.totp_secret_enc) return undefined;
    const now = iso(Date.now());
    const step = await this.matchingStep(user.totp_secret_enc, otp, user.totp_last_step);
    if (step !== undefined) {
      // The read above is not the guard: only the conditional update decides, so two requests with
      // one code cannot both pass.
      return (await repo.acceptStep(this.db, user.id, step, now)) ? { method: 'totp' } : undefined;
    }
    const recovery = normalizeRecoveryCode(otp);
    if (!recovery || !(await repo.spendRecoveryCode(this.db, user.id, this.recoveryHash(recovery), now))) return undefined;
    const remaining = await repo.unusedRecoveryCodes(this.db, user.id);
    await this.auth.audit('2fa.recovery_code_used', user.id, meta, { remaining });
    return { method: 'recovery_code', remaining };
  }

  /** The time step `otp` is the code of, within ±1 step of now and newer than `afterStep`. */
  private async matchingStep(secretEnc: string, otp: string, afterStep: number | null): Promise<number | undefined> {
    const token = otp.replace(/\s/g, '');
    if (!/^\d{6}$/.test(token)) return undefined;
    const result = await verify({ secret: this.decryptSecret(secretEnc), token, epochTolerance: TOLERANCE_SECONDS });
    if (!result.valid || !('timeStep' in result)) return undefined;
    if (afterStep !== null && result.timeStep <= afterStep) return undefined;
    return result.timeStep;
  }

  private decryptSecret(secretEnc: string): string {
    try {
      return decrypt(this.secretKey, secretEnc);
    } catch (cause) {
      throw new Error('A TOTP secret cannot be decrypted: was SECRET_KEY changed after 2FA was enabled?', { cause });
    }
  }

  private recoveryHash(normalizedCode: string): string {
    // Keyed, so a database dump alone cannot be searched for the (50-bit) codes.
    return createHmac('sha256', this.recoveryKey).update(normalizedCode).digest('hex');
  }

  private async requireUser(principal: Principal): Promise<UserRow> {
    const user = await authRepository.userById(this.db, principal.userId);
    if (!user) throw AppError.unauthorized();
    return user;
  }
}

/** A recovery code in canonical form (10 characters, 50 random bits); it is shown as `xxxxx-xxxxx`. */
function newRecoveryCode(): string {
  let code = '';
  for (let i = 0; i < RECOVERY_LENGTH; i++) code += RECOVERY_ALPHABET[randomInt(RECOVERY_ALPHABET.length)];
  return code;
}

/** The canonical form of a typed recovery code (case, dashes and spaces ignored; o/i/l read as 0/1), or undefined if it cannot be one. */
export function normalizeRecoveryCode(input: string): string | undefined {
  const code = input.toLowerCase().replace(/[\s-]/g, '').replace(/o/g, '0').replace(/[il]/g, '1');
  if (code.length !== RECOVERY_LENGTH || [...code].some((c) => !RECOVERY_ALPHABET.includes(c))) return undefined;
  return code;
}
