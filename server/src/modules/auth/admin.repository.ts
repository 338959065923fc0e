import { sql, type Kysely, type Transaction } from 'kysely';
import type { DB } from '../../db/schema.js';

type Db = Kysely<DB> | Transaction<DB>;

/** `%`, `_` and the escape character itself match literally in a LIKE pattern built from user input. */
const likeLiteral = (text: string): string => text.replace(/[\\%_]/g, (c) => `\\${c}`);

/** SQL for the administration routes; user updates and session revocation reuse auth.repository. */
export const adminRepository = {
  /**
   * Users newest first, keyset-paginated by id (UUIDv7 ids sort by time), optionally only those whose
   * e-mail starts with `emailPrefix` (e-mails are stored lower-cased, so pass it lower-cased).
   * Returns up to `limit + 1` rows so the caller can tell whether more follow.
   */
  usersPage: (db: Db, where: { emailPrefix?: string }, limit: number, before?: string) => {
    let q = db.selectFrom('users').selectAll().orderBy('id', 'desc').limit(limit + 1);
    // SQLite has no default LIKE escape character, so it is named for both dialects.
    if (where.emailPrefix) q = q.where(sql<boolean>`${sql.ref('email')} like ${`${likeLiteral(where.emailPrefix)}%`} escape '\\'`);
    if (before) q = q.where('id', '<', before);
    return q.execute();
  },
};
