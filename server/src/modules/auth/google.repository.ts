import type { Kysely, Selectable, Transaction } from 'kysely';
import type { DB, IdentitiesTable } from '../../db/schema.js';
import { uuidv7 } from '../../platform/ids.js';

export type IdentityRow = Selectable<IdentitiesTable>;
type Db = Kysely<DB> | Transaction<DB>;

/** SQL for external identities (an account at a provider such as Google, linked to a Keel user). */
export const googleRepository = {
  /** The identity a provider's account id is linked to, if any (unique per provider and subject). */
  identityBySubject: (db: Db, provider: string, subject: string) =>
    db.selectFrom('identities').selectAll().where('provider', '=', provider).where('subject', '=', subject).executeTakeFirst(),

  /** The user's identities at one provider, oldest first. */
  identitiesOfUser: (db: Db, userId: string, provider: string) =>
    db.selectFrom('identities').selectAll().where('user_id', '=', userId).where('provider', '=', provider).orderBy('created_at', 'asc').execute(),

  /** Links a provider account to a user; throws on a (provider, subject) already linked. */
  insertIdentity: (db: Db, values: { user_id: string; provider: string; subject: string; email: string | null }, now: string): Promise<IdentityRow> =>
    db.insertInto('identities').values({ id: uuidv7(), ...values, created_at: now }).returningAll().executeTakeFirstOrThrow(),
};
