import { Migrator, sql, type Kysely, type MigrationResult } from 'kysely';
import { dialectOf } from './migration-helpers.js';
import { migrations } from './migrations/index.js';

const MIGRATION_TABLE = 'kysely_migration';

async function migrator<T>(db: Kysely<T>): Promise<Migrator> {
  // Kysely looks for its bookkeeping tables in every schema unless told which one; another Keel
  // schema in the same database (a second deployment, a test run) would then hide ours. Pin them to
  // the schema this connection writes to (DATABASE_SCHEMA or the search_path default).
  let migrationTableSchema: string | undefined;
  if (dialectOf(db as Kysely<unknown>).name === 'postgres') {
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
    migrationTableSchema = rows[0]?.schema;
  }
  return new Migrator({ db, provider: { getMigrations: async () => migrations }, ...(migrationTableSchema ? { migrationTableSchema } : {}) });
}

/**
 * Applies every pending migration in order; a no-op when none is pending. Kysely takes a lock first, so
 * two Keel processes starting together on one Postgres do not both run a migration.
 */
export async function migrateToLatest<T>(db: Kysely<T>): Promise<{ applied: string[] }> {
  const { error, results } = await (await migrator(db)).migrateToLatest();
  if (error) {
    const failed = results?.find((r: MigrationResult) => r.status === 'Error');
    const why = error instanceof Error ? error.message : JSON.stringify(error);
    throw new Error(failed ? `migration ${failed.migrationName} failed: ${why}` : `migrations failed: ${why}`, { cause: error });
  }
  return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
}

/** Which known migrations the database has and which it lacks; reads only, creates nothing. */
export async function migrationStatus<T>(db: Kysely<T>): Promise<{ applied: string[]; pending: string[] }> {
  const known = Object.keys(migrations).sort();
  let applied: string[] = [];
  try {
    const { rows } = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)}`.execute(db);
    applied = rows.map((r) => r.name);
  } catch (err) {
    if (!isMissingTable(err)) throw err;
  }
  const done = new Set(applied);
  return { applied: known.filter((n) => done.has(n)), pending: known.filter((n) => !done.has(n)) };
}

function isMissingTable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === '42P01' || /no such table/i.test(e?.message ?? '');
}
