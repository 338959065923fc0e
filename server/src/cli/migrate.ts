import type { Config } from '../config.js';
import { openDatabase } from '../db/database.js';
import { migrateToLatest, migrationStatus } from '../db/migrate.js';
import { createLogger } from '../platform/logger.js';

/** `keel migrate`: apply pending migrations (idempotent), or with --status only list them. */
export async function runMigrate(config: Config, statusOnly: boolean): Promise<number> {
  const database = openDatabase(config.database, createLogger({ logLevel: 'warn' }));
  try {
    if (statusOnly) {
      const { applied, pending } = await migrationStatus(database.db);
      for (const name of applied) process.stdout.write(`applied  ${name}\n`);
      for (const name of pending) process.stdout.write(`pending  ${name}\n`);
      return pending.length === 0 ? 0 : 1;
    }
    const { applied } = await migrateToLatest(database.db);
    process.stdout.write(applied.length === 0 ? `database is up to date (${database.dialect.name})\n` : `applied ${applied.length} migration(s) on ${database.dialect.name}:\n${applied.map((n) => `  ${n}\n`).join('')}`);
    return 0;
  } finally {
    await database.close();
  }
}
