import type { Kysely } from 'kysely';
import type { DB } from '../../db/schema.js';
import type { Principal } from '../../platform/auth.js';
import { randomToken } from '../../platform/crypto.js';
import { AppError } from '../../platform/errors.js';
import { adminRepository } from './admin.repository.js';
import { authRepository, type UserRow } from './auth.repository.js';
import { normalizeEmail, toUserView, type AuthService, type RequestMeta, type UserView } from './auth.service.js';
import { hashPassword, passwordProblem } from './passwords.js';

export const ROLES = ['user', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Limits are free-form JSON that the usage module reads; this bounds what an admin can store. */
export const LIMITS_MAX_BYTES = 8192;

/** A user as administrators see them: the profile plus what admins manage. */
export interface AdminUserView extends UserView {
  disabled_at: string | null;
  limits: Record<string, unknown> | null;
  updated_at: string;
}

export interface UserChanges {
  role?: Role;
  disabled?: boolean;
  limits?: Record<string, unknown> | null;
}

/** What `ensureAdmin` did, for the operator to read. */
export interface EnsureAdminResult {
  user: AdminUserView;
  outcome: 'created' | 'promoted' | 'already_admin';
  /** Set when Keel chose the password: shown to the operator once, stored only as its argon2id hash. */
  generatedPassword?: string;
  /** Whether the password was set now (a new account, or an unverified one being claimed). */
  passwordSet: boolean;
  /** The account had been disabled and was enabled again. */
  reenabled: boolean;
}

/**
 * Administration of users: list and search, change role, disable (which ends every session at once;
 * keys stop too, because authentication checks the owner), set limits, read the audit log of all users,
 * and create the first admin from the command line.
 */
export class AdminService {
  constructor(
    private readonly db: Kysely<DB>,
    private readonly auth: Pick<AuthService, 'audit' | 'auditOf'>,
  ) {}

  /** Users newest first; `q` keeps those whose e-mail starts with it (case-insensitive). */
  async listUsers(limit: number, cursor: string | undefined, q: string | undefined): Promise<{ items: AdminUserView[]; next_cursor: string | null }> {
    const prefix = q?.trim().toLowerCase();
    const rows = await adminRepository.usersPage(this.db, prefix ? { emailPrefix: prefix } : {}, limit, cursor);
    const items = rows.slice(0, limit).map(toAdminUserView);
    return { items, next_cursor: rows.length > limit ? items[items.length - 1]!.id : null };
  }

  /**
   * Changes a user's role, disabled state and limits; only fields that differ are written and audited
   * (`admin.user_updated`, on the changed user, naming the admin). Disabling ends all the user's
   * sessions in the same transaction. An admin cannot demote or disable themself (400), so the last
   * admin cannot lock everyone out. Unknown id → 404.
   */
  async updateUser(principal: Principal, id: string, changes: UserChanges, meta: RequestMeta): Promise<AdminUserView> {
    if (id === principal.userId && changes.role === 'user') throw AppError.badRequest('You cannot remove your own admin role; another administrator can.', [{ field: 'role', message: 'cannot demote yourself' }]);
    if (id === principal.userId && changes.disabled === true) throw AppError.badRequest('You cannot disable your own account; another administrator can.', [{ field: 'disabled', message: 'cannot disable yourself' }]);
    const limits = changes.limits === undefined ? undefined : limitsText(changes.limits);

    const user = await authRepository.userById(this.db, id);
    if (!user) throw AppError.notFound('User');
    const now = new Date().toISOString();
    const set: Parameters<typeof authRepository.updateUser>[2] = {};
    const changed: Record<string, unknown> = {};
    if (changes.role !== undefined && changes.role !== user.role) {
      set.role = changes.role;
      changed.role = { from: user.role, to: changes.role };
    }
    if (changes.disabled !== undefined && changes.disabled !== (user.disabled_at !== null)) {
      set.disabled_at = changes.disabled ? now : null;
      changed.disabled = changes.disabled;
    }
    if (limits !== undefined && limits !== limitsText(readLimits(user.limits))) {
      set.limits = limits;
      changed.limits = changes.limits;
    }
    if (Object.keys(changed).length === 0) return toAdminUserView(user);

    const updated = await this.db.transaction().execute(async (trx) => {
      const row = await authRepository.updateUser(trx, id, set, now);
      if (changes.disabled === true) await authRepository.revokeSessions(trx, { userId: id }, 'user_disabled', now);
      return row;
    });
    if (!updated) throw AppError.notFound('User');
    await this.auth.audit('admin.user_updated', id, meta, { admin_id: principal.userId, changes: changed });
    return toAdminUserView(updated);
  }

  /** Security events across users (or one user's), newest first. */
  async auditLog(limit: number, cursor: string | undefined, userId: string | undefined) {
    return this.auth.auditOf(userId, limit, cursor);
  }

  /**
   * `keel create-admin`: makes `email` a verified, enabled admin. A new account gets `password` (or a
   * generated one, returned once). An existing verified account is promoted and keeps its password. An
   * unverified registration is claimed: its password is replaced, because whoever registered it never
   * proved they own the address. 400 for a malformed e-mail or a password the policy refuses.
   */
  async ensureAdmin(emailInput: string, password: string | undefined): Promise<EnsureAdminResult> {
    const email = normalizeEmail(emailInput);
    if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) throw AppError.badRequest(`"${emailInput}" is not an e-mail address.`, [{ field: 'email', message: 'is not an e-mail address' }]);
    const now = new Date().toISOString();
    const existing = await authRepository.userByEmail(this.db, email);

    if (existing?.email_verified_at) {
      const reenabled = existing.disabled_at !== null;
      if (existing.role === 'admin' && !reenabled) return { user: toAdminUserView(existing), outcome: 'already_admin', passwordSet: false, reenabled };
      const user = (await authRepository.updateUser(this.db, existing.id, { role: 'admin', disabled_at: null }, now))!;
      await this.auth.audit('admin.promoted', user.id, undefined, { via: 'cli', previous_role: existing.role, reenabled });
      return { user: toAdminUserView(user), outcome: existing.role === 'admin' ? 'already_admin' : 'promoted', passwordSet: false, reenabled };
    }

    const chosen = password ?? generatePassword();
    const problem = passwordProblem(chosen, email);
    if (problem) throw AppError.badRequest(problem, [{ field: 'password', message: problem }]);
    const passwordHash = await hashPassword(chosen);
    const generated = password === undefined ? { generatedPassword: chosen } : {};
    if (existing) {
      const user = await this.db.transaction().execute(async (trx) => {
        await authRepository.expireOneTimeTokens(trx, existing.id, 'verify_email', now);
        return (await authRepository.updateUser(trx, existing.id, { role: 'admin', disabled_at: null, email_verified_at: now, password_hash: passwordHash, password_changed_at: now }, now))!;
      });
      await this.auth.audit('admin.promoted', user.id, undefined, { via: 'cli', previous_role: existing.role, claimed_unverified: true });
      return { user: toAdminUserView(user), outcome: 'promoted', ...generated, passwordSet: true, reenabled: existing.disabled_at !== null };
    }
    const user = await authRepository.insertUser(this.db, { email, name: null, password_hash: passwordHash, email_verified_at: now, role: 'admin' }, now);
    await this.auth.audit('admin.created', user.id, undefined, { via: 'cli' });
    return { user: toAdminUserView(user), outcome: 'created', ...generated, passwordSet: true, reenabled: false };
  }
}

/** The admin view of a user row. */
export function toAdminUserView(u: UserRow): AdminUserView {
  return { ...toUserView(u), disabled_at: u.disabled_at, limits: readLimits(u.limits), updated_at: u.updated_at };
}

/** `users.limits` (JSON text on both dialects, see db/database.ts) as an object. */
export function readLimits(stored: string | null): Record<string, unknown> | null {
  return stored === null ? null : (JSON.parse(stored) as Record<string, unknown>);
}

function limitsText(limits: Record<string, unknown> | null): string | null {
  if (limits === null) return null;
  const text = JSON.stringify(limits);
  if (Buffer.byteLength(text) > LIMITS_MAX_BYTES) throw AppError.badRequest(`limits must be at most ${LIMITS_MAX_BYTES} bytes of JSON.`, [{ field: 'limits', message: 'is too large' }]);
  return text;
}

/** 24 characters from 144 random bits: far beyond any guessing, and easy to paste. */
function generatePassword(): string {
  return randomToken(18);
}
