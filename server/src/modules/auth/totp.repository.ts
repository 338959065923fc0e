import type { Kysely, Transaction } from 'kysely';
import type { DB } from '../../db/schema.js';
import { uuidv7 } from '../../platform/ids.js';

type Db = Kysely<DB> | Transaction<DB>;

/** The SQL of two-factor authentication: the user's TOTP columns and the recovery codes. */
export const totpRepository = {
  /** Stores a new pending (not yet enabled) secret; false when 2FA is already on, so setup cannot replace an active secret. */
  setPendingSecret: async (db: Db, userId: string, secretEnc: string, now: string): Promise<boolean> => {
    const r = await db.updateTable('users')
      .set({ totp_secret_enc: secretEnc, totp_last_step: null, updated_at: now })
      .where('id', '=', userId)
      .where('totp_enabled_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  },

  /**
   * Turns 2FA on for exactly the pending secret that was verified, recording the step of the code
   * that proved it; false when it was enabled meanwhile or the pending secret was replaced.
   */
  enable: async (db: Db, userId: string, secretEnc: string, step: number, now: string): Promise<boolean> => {
    const r = await db.updateTable('users')
      .set({ totp_enabled_at: now, totp_last_step: step, updated_at: now })
      .where('id', '=', userId)
      .where('totp_enabled_at', 'is', null)
      .where('totp_secret_enc', '=', secretEnc)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  },

  /** Clears the secret, the enabled mark and the last step; the caller deletes the recovery codes in the same transaction. */
  disable: (db: Db, userId: string, now: string) =>
    db.updateTable('users').set({ totp_secret_enc: null, totp_enabled_at: null, totp_last_step: null, updated_at: now }).where('id', '=', userId).execute(),

  /**
   * Records `step` as the last accepted TOTP step only if it is newer than the recorded one: true for
   * exactly one of several concurrent callers presenting the same code.
   */
  acceptStep: async (db: Db, userId: string, step: number, now: string): Promise<boolean> => {
    const r = await db.updateTable('users')
      .set({ totp_last_step: step, updated_at: now })
      .where('id', '=', userId)
      .where('totp_enabled_at', 'is not', null)
      .where((eb) => eb.or([eb('totp_last_step', 'is', null), eb('totp_last_step', '<', step)]))
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  },

  /** Replaces every recovery code of the user with the given hashes. */
  replaceRecoveryCodes: async (db: Db, userId: string, hashes: readonly string[], now: string): Promise<void> => {
    await db.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
    if (hashes.length === 0) return;
    await db.insertInto('recovery_codes').values(hashes.map((code_hash) => ({ id: uuidv7(), user_id: userId, code_hash, created_at: now, used_at: null }))).execute();
  },

  /** Spends an unused recovery code of the user; true for exactly one caller per code. */
  spendRecoveryCode: async (db: Db, userId: string, hash: string, now: string): Promise<boolean> => {
    const r = await db.updateTable('recovery_codes')
      .set({ used_at: now })
      .where('user_id', '=', userId)
      .where('code_hash', '=', hash)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  },

  /** How many recovery codes the user has left. */
  unusedRecoveryCodes: async (db: Db, userId: string): Promise<number> => {
    const row = await db.selectFrom('recovery_codes').select((eb) => eb.fn.countAll<number | string>().as('n')).where('user_id', '=', userId).where('used_at', 'is', null).executeTakeFirstOrThrow();
    return Number(row.n);
  },

  /** Deletes every recovery code of the user. */
  deleteRecoveryCodes: (db: Db, userId: string) => db.deleteFrom('recovery_codes').where('user_id', '=', userId).execute(),
};
