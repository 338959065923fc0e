import type { Kysely, Selectable, Transaction } from 'kysely';
import type { DB, DevicesTable, UsersTable } from '../../db/schema.js';
import { uuidv7 } from '../../platform/ids.js';

export type UserRow = Selectable<UsersTable>;
export type DeviceRow = Selectable<DevicesTable>;
type Db = Kysely<DB> | Transaction<DB>;

export interface NewDevice {
  name: string;
  type: string;
  platform: string | null;
  public_key: string | null;
}

/** The only place identity SQL is written. Every function takes the executor, so callers choose the transaction. */
export const authRepository = {
  /** Finds a user by normalized e-mail. */
  userByEmail: (db: Db, email: string) => db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst(),

  userById: (db: Db, id: string) => db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst(),

  insertUser: async (db: Db, values: { email: string | null; name: string | null; password_hash: string | null; email_verified_at?: string | null; role?: string }, now: string): Promise<UserRow> => {
    const row = { id: uuidv7(), email: values.email, name: values.name, password_hash: values.password_hash, email_verified_at: values.email_verified_at ?? null, created_at: now, updated_at: now, ...(values.role ? { role: values.role } : {}) };
    return db.insertInto('users').values(row).returningAll().executeTakeFirstOrThrow();
  },

  updateUser: (db: Db, id: string, values: Partial<Pick<UserRow, 'email' | 'name' | 'password_hash' | 'email_verified_at' | 'role' | 'disabled_at' | 'password_changed_at' | 'limits' | 'totp_secret_enc' | 'totp_enabled_at' | 'totp_last_step'>>, now: string) =>
    db.updateTable('users').set({ ...values, updated_at: now }).where('id', '=', id).returningAll().executeTakeFirst(),

  insertDevice: (db: Db, userId: string, device: NewDevice, now: string) =>
    db.insertInto('devices').values({ id: uuidv7(), user_id: userId, ...device, created_at: now, last_seen_at: now }).returningAll().executeTakeFirstOrThrow(),

  devicesOf: (db: Db, userId: string) =>
    db.selectFrom('devices').selectAll().where('user_id', '=', userId).where('revoked_at', 'is', null).orderBy('created_at', 'asc').execute(),

  deviceOf: (db: Db, userId: string, deviceId: string) =>
    db.selectFrom('devices').selectAll().where('id', '=', deviceId).where('user_id', '=', userId).where('revoked_at', 'is', null).executeTakeFirst(),

  revokeDevice: (db: Db, deviceId: string, now: string) =>
    db.updateTable('devices').set({ revoked_at: now }).where('id', '=', deviceId).where('revoked_at', 'is', null).executeTakeFirst(),

  touchDevice: (db: Db, deviceId: string, now: string) => db.updateTable('devices').set({ last_seen_at: now }).where('id', '=', deviceId).execute(),

  insertSession: (db: Db, values: { user_id: string; device_id: string; expires_at: string }, now: string) =>
    db.insertInto('sessions').values({ id: uuidv7(), ...values, created_at: now, last_used_at: now }).returningAll().executeTakeFirstOrThrow(),

  /** Ends sessions: one, a device's, or all of a user's (optionally all but one). */
  revokeSessions: (db: Db, where: { sessionId?: string; deviceId?: string; userId?: string; exceptSessionId?: string }, reason: string, now: string) => {
    let q = db.updateTable('sessions').set({ revoked_at: now, revoked_reason: reason }).where('revoked_at', 'is', null);
    if (where.sessionId) q = q.where('id', '=', where.sessionId);
    if (where.deviceId) q = q.where('device_id', '=', where.deviceId);
    if (where.userId) q = q.where('user_id', '=', where.userId);
    if (where.exceptSessionId) q = q.where('id', '!=', where.exceptSessionId);
    return q.executeTakeFirst();
  },

  /** What authenticating an access token needs, in one indexed query. */
  sessionForAuth: (db: Db, sessionId: string) =>
    db.selectFrom('sessions')
      .innerJoin('devices', 'devices.id', 'sessions.device_id')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['sessions.id', 'sessions.user_id', 'sessions.device_id', 'sessions.expires_at', 'sessions.revoked_at', 'devices.revoked_at as device_revoked_at', 'devices.last_seen_at', 'users.role', 'users.disabled_at'])
      .where('sessions.id', '=', sessionId)
      .executeTakeFirst(),

  insertRefreshToken: (db: Db, values: { session_id: string; token_hash: string; expires_at: string }, now: string) =>
    db.insertInto('refresh_tokens').values({ id: uuidv7(), ...values, created_at: now }).execute(),

  refreshTokenByHash: (db: Db, hash: string) =>
    db.selectFrom('refresh_tokens')
      .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
      .innerJoin('devices', 'devices.id', 'sessions.device_id')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(['refresh_tokens.id', 'refresh_tokens.session_id', 'refresh_tokens.expires_at', 'refresh_tokens.used_at', 'sessions.user_id', 'sessions.device_id', 'sessions.revoked_at as session_revoked_at', 'sessions.expires_at as session_expires_at', 'devices.revoked_at as device_revoked_at', 'users.disabled_at'])
      .where('refresh_tokens.token_hash', '=', hash)
      .executeTakeFirst(),

  /** Marks a refresh token spent; true only for the caller that spent it (the race winner). */
  spendRefreshToken: async (db: Db, id: string, now: string): Promise<boolean> => {
    const r = await db.updateTable('refresh_tokens').set({ used_at: now }).where('id', '=', id).where('used_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  },

  touchSession: (db: Db, sessionId: string, now: string) => db.updateTable('sessions').set({ last_used_at: now }).where('id', '=', sessionId).execute(),

  insertOneTimeToken: (db: Db, values: { user_id: string; purpose: 'verify_email' | 'reset_password'; token_hash: string; email: string | null; expires_at: string }, now: string) =>
    db.insertInto('one_time_tokens').values({ id: uuidv7(), ...values, created_at: now }).execute(),

  /** Spends a one-time token atomically: returns it only to the one caller that spent it while valid. */
  spendOneTimeToken: async (db: Db, purpose: 'verify_email' | 'reset_password', hash: string, now: string) => {
    const row = await db.selectFrom('one_time_tokens').selectAll().where('token_hash', '=', hash).where('purpose', '=', purpose).executeTakeFirst();
    if (!row || row.used_at !== null || row.expires_at <= now) return undefined;
    const r = await db.updateTable('one_time_tokens').set({ used_at: now }).where('id', '=', row.id).where('used_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1 ? row : undefined;
  },

  /** Older unused tokens of the same purpose stop working when a new one is issued. */
  expireOneTimeTokens: (db: Db, userId: string, purpose: 'verify_email' | 'reset_password', now: string) =>
    db.updateTable('one_time_tokens').set({ used_at: now }).where('user_id', '=', userId).where('purpose', '=', purpose).where('used_at', 'is', null).execute(),

  insertPairingCode: (db: Db, values: { user_id: string; code_hash: string; expires_at: string }, now: string) =>
    db.insertInto('pairing_codes').values({ id: uuidv7(), ...values, created_at: now }).execute(),

  spendPairingCode: async (db: Db, hash: string, now: string) => {
    const row = await db.selectFrom('pairing_codes').selectAll().where('code_hash', '=', hash).executeTakeFirst();
    if (!row || row.used_at !== null || row.expires_at <= now) return undefined;
    const r = await db.updateTable('pairing_codes').set({ used_at: now }).where('id', '=', row.id).where('used_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1 ? row : undefined;
  },

  apiKeyByPrefix: (db: Db, prefix: string) =>
    db.selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .select(['api_keys.id', 'api_keys.user_id', 'api_keys.secret_hash', 'api_keys.scopes', 'api_keys.expires_at', 'api_keys.revoked_at', 'api_keys.last_used_at', 'users.role', 'users.disabled_at'])
      .where('api_keys.prefix', '=', prefix)
      .executeTakeFirst(),

  touchApiKey: (db: Db, id: string, now: string) => db.updateTable('api_keys').set({ last_used_at: now }).where('id', '=', id).execute(),

  insertAudit: (db: Db, values: { user_id: string | null; event: string; ip: string | null; user_agent: string | null; details: string | null }, now: string) =>
    db.insertInto('audit_events').values({ id: uuidv7(), ...values, created_at: now }).execute(),

  /** Audit events newest first, keyset-paginated by id (UUIDv7 ids sort by time). */
  auditPage: (db: Db, where: { userId?: string }, limit: number, before?: string) => {
    let q = db.selectFrom('audit_events').selectAll().orderBy('id', 'desc').limit(limit + 1);
    if (where.userId) q = q.where('user_id', '=', where.userId);
    if (before) q = q.where('id', '<', before);
    return q.execute();
  },
};
