import { sql, type Kysely } from 'kysely';
import { dialectOf } from '../migration-helpers.js';

/**
 * Metering: one `usage_events` row per gateway call (never prompt or output text), and
 * `usage_counters`, the per-period totals that budgets are checked and reserved against atomically.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  const ts = sql.raw(dialectOf(db).timestampType);
  await db.schema
    .createTable('usage_events')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('api_key_id', 'text')
    .addColumn('device_id', 'text')
    .addColumn('request_id', 'text')
    .addColumn('endpoint', 'text', (c) => c.notNull())
    .addColumn('provider', 'text', (c) => c.notNull())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('prompt_tokens', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('completion_tokens', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('total_tokens', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('estimated', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('cost_usd', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('latency_ms', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('ttft_ms', 'integer')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('error_code', 'text')
    .addColumn('message_id', 'text')
    .addColumn('created_at', ts, (c) => c.notNull())
    .execute();
  await db.schema.createIndex('usage_events_user_created_idx').on('usage_events').columns(['user_id', 'created_at']).execute();
  await db.schema.createIndex('usage_events_key_created_idx').on('usage_events').columns(['api_key_id', 'created_at']).execute();
  await db.schema.createIndex('usage_events_created_idx').on('usage_events').column('created_at').execute();

  await db.schema
    .createTable('usage_counters')
    // e.g. `user:<id>:day:2026-11-22`, `key:<id>:month:2026-11`
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('requests', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('tokens_used', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('tokens_reserved', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('cost_used', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('cost_reserved', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_at', ts, (c) => c.notNull())
    .execute();
  await db.schema.createIndex('usage_counters_user_idx').on('usage_counters').column('user_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('usage_counters').execute();
  await db.schema.dropTable('usage_events').execute();
}
