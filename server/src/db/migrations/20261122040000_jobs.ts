import { sql, type Kysely } from 'kysely';
import { dialectOf } from '../migration-helpers.js';

/**
 * Durable background jobs (platform/jobs.ts): a row per job, claimed by a worker under a lease. A job
 * whose lease runs out (its process died) is claimed again; `attempts` counts every claim.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  const ts = sql.raw(dialectOf(db).timestampType);
  await db.schema
    .createTable('jobs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('type', 'text', (c) => c.notNull())
    // The user a job works for (null for system jobs); a user's jobs go when the user does.
    .addColumn('owner_id', 'text', (c) => c.references('users.id').onDelete('cascade'))
    // pending | running | succeeded | failed
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('result', 'text')
    .addColumn('error', 'text')
    .addColumn('progress', 'double precision')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('run_at', ts, (c) => c.notNull())
    .addColumn('locked_by', 'text')
    .addColumn('lease_expires_at', ts)
    .addColumn('created_at', ts, (c) => c.notNull())
    .addColumn('updated_at', ts, (c) => c.notNull())
    .addColumn('finished_at', ts)
    .execute();
  await db.schema.createIndex('jobs_claim_idx').on('jobs').columns(['status', 'run_at']).execute();
  await db.schema.createIndex('jobs_owner_idx').on('jobs').columns(['owner_id', 'id']).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('jobs').execute();
}
