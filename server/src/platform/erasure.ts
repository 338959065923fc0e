import type { Kysely, Transaction } from 'kysely';
import type { DB } from '../db/schema.js';

export type Eraser = (userId: string, trx: Transaction<DB>) => Promise<void>;

/**
 * `DELETE /me` erases an account and everything it owns in every module. Rows that reference the
 * user go by foreign-key cascade; a module that owns more (files on disk, rows without a foreign key)
 * registers an eraser here, and all of them run in the one transaction that deletes the user.
 */
export class ErasureRegistry {
  private readonly erasers = new Map<string, Eraser>();

  register(module: string, eraser: Eraser): void {
    this.erasers.set(module, eraser);
  }

  async eraseUser(db: Kysely<DB>, userId: string): Promise<void> {
    await db.transaction().execute(async (trx) => {
      for (const eraser of this.erasers.values()) await eraser(userId, trx);
      await trx.deleteFrom('users').where('id', '=', userId).execute();
    });
  }
}
