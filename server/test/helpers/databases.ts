import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe } from 'vitest';

/** A database a test run owns: its env for Keel, and how to throw it away. */
export interface TestDatabase {
  readonly kind: 'sqlite' | 'postgres';
  /** DATABASE_URL (and DATABASE_SCHEMA for Postgres) to hand to Keel. */
  readonly env: Record<string, string>;
  readonly dataDir: string;
  cleanup(): Promise<void>;
}

const PG_URL = process.env.TEST_DATABASE_URL;
if (process.env.CI && !PG_URL) {
  // CI must run the Postgres half too; failing here beats silently skipping it.
  throw new Error('CI is set but TEST_DATABASE_URL is not: the Postgres half of the suite would be skipped.');
}

export const postgresAvailable = Boolean(PG_URL);

export async function createSqliteDatabase(): Promise<TestDatabase> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'keel-test-'));
  return {
    kind: 'sqlite',
    env: { DATABASE_URL: path.join(dataDir, 'keel.db'), DATA_DIR: dataDir },
    dataDir,
    cleanup: async () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

/** A fresh schema in TEST_DATABASE_URL's database, dropped (with everything in it) on cleanup. */
export async function createPostgresDatabase(): Promise<TestDatabase> {
  if (!PG_URL) throw new Error('TEST_DATABASE_URL is not set');
  const schema = `keel_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`create schema "${schema}"`);
  const dataDir = mkdtempSync(path.join(tmpdir(), 'keel-test-'));
  return {
    kind: 'postgres',
    env: { DATABASE_URL: PG_URL, DATABASE_SCHEMA: schema, DATA_DIR: dataDir },
    dataDir,
    cleanup: async () => {
      await adminQuery(`drop schema if exists "${schema}" cascade`);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function adminQuery(text: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

export const DATABASE_KINDS: ReadonlyArray<'sqlite' | 'postgres'> = postgresAvailable ? ['sqlite', 'postgres'] : ['sqlite'];

/**
 * Runs the same tests once per database: always SQLite, and Postgres when TEST_DATABASE_URL is set
 * (always in CI). `db()` gives the database of the block being run.
 */
export function describeEachDatabase(title: string, body: (db: () => TestDatabase) => void): void {
  for (const kind of DATABASE_KINDS) {
    describe(`${title} [${kind}]`, () => {
      let database: TestDatabase | undefined;
      beforeAll(async () => {
        database = kind === 'sqlite' ? await createSqliteDatabase() : await createPostgresDatabase();
      });
      afterAll(async () => {
        await database?.cleanup();
      });
      body(() => {
        if (!database) throw new Error('database not created yet: call db() inside a test or hook');
        return database;
      });
    });
  }
}
