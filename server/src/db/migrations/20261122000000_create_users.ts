import { sql, type Kysely } from 'kysely';
import { dialectOf } from '../migration-helpers.js';

export async function up(db: Kysely<unknown>): Promise<void> {
  const d = dialectOf(db);
  await db.schema
    .createTable('users')
    .addColumn('id', 'text', (c) => c.primaryKey())
    // Stored normalized (trimmed, lower-cased) so uniqueness is case-insensitive on both dialects.
    .addColumn('email', 'text', (c) => c.unique())
    .addColumn('name', 'text')
    .addColumn('password_hash', 'text')
    .addColumn('role', 'text', (c) => c.notNull().defaultTo('user'))
    .addColumn('email_verified_at', sql.raw(d.timestampType))
    .addColumn('disabled_at', sql.raw(d.timestampType))
    .addColumn('created_at', sql.raw(d.timestampType), (c) => c.notNull())
    .addColumn('updated_at', sql.raw(d.timestampType), (c) => c.notNull())
    .execute();
  await db.schema.createIndex('users_created_at_idx').on('users').column('created_at').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('users').execute();
}
