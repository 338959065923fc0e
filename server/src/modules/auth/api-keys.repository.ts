import type { Kysely, Selectable, Transaction } from 'kysely';
import type { ApiKeysTable, DB } from '../../db/schema.js';
import { uuidv7 } from '../../platform/ids.js';

export type ApiKeyRow = Selectable<ApiKeysTable>;
type Db = Kysely<DB> | Transaction<DB>;

/** The columns a key's owner may see: everything but the secret's hash. */
const PUBLIC_COLUMNS = ['id', 'name', 'prefix', 'scopes', 'created_at', 'expires_at', 'last_used_at'] as const;

/** SQL for API key management (authentication's lookup by prefix lives in auth.repository). */
export const apiKeysRepository = {
  /** Stores a new key; `secret_hash` is the only trace of the secret. Returns the row without the hash. */
  insert: (db: Db, values: { user_id: string; name: string; prefix: string; secret_hash: string; scopes: string; expires_at: string | null }, now: string) =>
    db.insertInto('api_keys').values({ id: uuidv7(), ...values, created_at: now }).returning(PUBLIC_COLUMNS).executeTakeFirstOrThrow(),

  /** A user's unrevoked keys, newest first, keyset-paginated by id (UUIDv7 ids sort by time); returns up to `limit + 1` rows so the caller can tell whether more follow. */
  pageOf: (db: Db, userId: string, limit: number, before?: string) => {
    let q = db.selectFrom('api_keys').select(PUBLIC_COLUMNS).where('user_id', '=', userId).where('revoked_at', 'is', null).orderBy('id', 'desc').limit(limit + 1);
    if (before) q = q.where('id', '<', before);
    return q.execute();
  },

  /**
   * Revokes one of `userId`'s unrevoked keys and returns its prefix, or undefined when there was none.
   * The owner is part of the condition, so another user's id changes nothing and looks like an unknown one.
   */
  revoke: (db: Db, userId: string, id: string, now: string) =>
    db.updateTable('api_keys').set({ revoked_at: now }).where('id', '=', id).where('user_id', '=', userId).where('revoked_at', 'is', null).returning(['prefix']).executeTakeFirst(),
};
