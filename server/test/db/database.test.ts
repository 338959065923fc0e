import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { openDatabase, pgTimestampToIso, type Database } from '../../src/db/database.js';
import { isDatabaseUnavailable } from '../../src/db/errors.js';
import { migrateToLatest, migrationStatus } from '../../src/db/migrate.js';
import { migrations } from '../../src/db/migrations/index.js';
import { uuidv7 } from '../../src/platform/ids.js';
import { createLogger } from '../../src/platform/logger.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { testConfig } from '../helpers/server.js';

describeEachDatabase('database layer', (db) => {
  let database: Database;
  beforeAll(() => {
    database = openDatabase(testConfig(db()).database, createLogger({ logLevel: 'silent' }));
  });
  afterAll(() => database.close());

  it('applies every migration, and re-running is a no-op', async () => {
    // Another Keel schema in the same database must not hide this one's migration bookkeeping.
    const decoy = `${db().env.DATABASE_SCHEMA}_decoy`;
    if (database.dialect.name === 'postgres') {
      await sql.raw(`create schema "${decoy}"; create table "${decoy}".kysely_migration (name text); create table "${decoy}".kysely_migration_lock (id text)`).execute(database.db);
    }
    onTestFinished(async () => {
      if (database.dialect.name === 'postgres') await sql.raw(`drop schema if exists "${decoy}" cascade`).execute(database.db);
    });
    expect((await migrationStatus(database.db)).pending).toEqual(Object.keys(migrations));
    const first = await migrateToLatest(database.db);
    expect(first.applied).toEqual(Object.keys(migrations));
    const again = await migrateToLatest(database.db);
    expect(again.applied).toEqual([]);
    expect(await migrationStatus(database.db)).toEqual({ applied: Object.keys(migrations), pending: [] });
  });

  it('concurrent migration runs do not apply anything twice', async () => {
    const results = await Promise.all([migrateToLatest(database.db), migrateToLatest(database.db)]);
    expect(results.flatMap((r) => r.applied)).toEqual([]);
  });

  it('round-trips a user with ISO timestamps on both dialects, and e-mail is unique', async () => {
    const now = new Date().toISOString();
    const id = uuidv7();
    await database.db.insertInto('users').values({ id, email: 'ada@example.com', name: 'Ada', password_hash: null, email_verified_at: null, disabled_at: null, created_at: now, updated_at: now }).execute();
    const row = await database.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ id, email: 'ada@example.com', role: 'user', created_at: now });
    await expect(database.db.insertInto('users').values({ id: uuidv7(), email: 'ada@example.com', name: null, password_hash: null, email_verified_at: null, disabled_at: null, created_at: now, updated_at: now }).execute()).rejects.toThrow();
    // several accounts without e-mail (anonymous devices) may coexist
    for (let i = 0; i < 2; i++) await database.db.insertInto('users').values({ id: uuidv7(), email: null, name: null, password_hash: null, email_verified_at: null, disabled_at: null, created_at: now, updated_at: now }).execute();
    const count = await database.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    expect(count.n).toBe(3);
  });

  it('JSON columns read back as JSON text on both dialects', async () => {
    const now = new Date().toISOString();
    const id = uuidv7();
    await database.db.insertInto('users').values({ id, email: null, name: null, password_hash: null, limits: JSON.stringify({ requests_per_minute: 5 }), created_at: now, updated_at: now }).execute();
    const row = await database.db.selectFrom('users').select('limits').where('id', '=', id).executeTakeFirstOrThrow();
    expect(typeof row.limits).toBe('string');
    expect(JSON.parse(row.limits!)).toEqual({ requests_per_minute: 5 });
  });

  it('sets the connection up as documented', async () => {
    if (database.dialect.name === 'sqlite') {
      const pragma = async (name: string) => Object.values((await sql.raw<Record<string, unknown>>(`pragma ${name}`).execute(database.db)).rows[0] ?? {})[0];
      expect(await pragma('journal_mode')).toBe('wal');
      expect(await pragma('foreign_keys')).toBe(1);
      expect(Number(await pragma('busy_timeout'))).toBeGreaterThanOrEqual(1000);
    } else {
      const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(database.db);
      expect(rows[0]?.schema).toBe(db().env.DATABASE_SCHEMA);
    }
  });
});

describe('database helpers', () => {
  it('uuidv7 ids are RFC 9562 version 7 and sort by creation time, also within one millisecond', () => {
    const a = uuidv7(Date.now() + 10_000);
    const b = uuidv7(Date.now() + 10_001);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a < b).toBe(true);
    const burst = Array.from({ length: 1000 }, () => uuidv7(Date.now() + 20_000));
    expect([...burst].sort()).toEqual(burst);
    expect(new Set(burst).size).toBe(1000);
    for (const id of burst) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('reads Postgres timestamps as ISO 8601 UTC', () => {
    expect(pgTimestampToIso('2026-11-22 01:02:03.45+00', true)).toBe('2026-11-22T01:02:03.450Z');
    expect(pgTimestampToIso('2026-11-22 03:02:03+02', true)).toBe('2026-11-22T01:02:03.000Z');
    expect(pgTimestampToIso('2026-11-22 01:02:03', false)).toBe('2026-11-22T01:02:03.000Z');
  });

  it.each([
    [{ code: 'ECONNREFUSED' }, true],
    [Object.assign(new AggregateError([{ code: 'ECONNREFUSED' }]), {}), true],
    [{ code: '57P01', message: 'terminating connection due to administrator command' }, true],
    [{ code: '08006' }, true],
    [new Error('Connection terminated unexpectedly'), true],
    [new Error('timeout exceeded when trying to connect'), true],
    [{ code: 'SQLITE_BUSY' }, true],
    [{ code: '42P01', message: 'relation "x" does not exist' }, false],
    [{ code: 'SQLITE_CONSTRAINT_UNIQUE' }, false],
    [new Error('boom'), false],
  ])('isDatabaseUnavailable(%o) is %s', (err, expected) => {
    expect(isDatabaseUnavailable(err)).toBe(expected);
  });
});
