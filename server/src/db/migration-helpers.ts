import { PostgresAdapter, type Kysely } from 'kysely';
import { DIALECTS, type DialectCapabilities } from './dialect.js';

/** The capabilities of the database a migration runs on. */
export function dialectOf(db: Kysely<unknown>): DialectCapabilities {
  return db.getExecutor().adapter instanceof PostgresAdapter ? DIALECTS.postgres : DIALECTS.sqlite;
}
