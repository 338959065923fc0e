import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, createSqliteDatabase, postgresAvailable, type TestDatabase } from '../helpers/databases.js';
import { migrations } from '../../src/db/migrations/index.js';
import { runKeel, spawnKeel } from '../helpers/process.js';

const STRONG = 'c0ffee4d2b9a8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f';

describe('keel CLI', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createSqliteDatabase();
  });
  afterAll(() => db.cleanup());

  it('gen-secret prints a fresh 32-byte hex secret that production accepts', async () => {
    const a = await runKeel(['gen-secret'], {});
    const b = await runKeel(['gen-secret'], {});
    expect(a.code).toBe(0);
    expect(a.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(a.stdout).not.toBe(b.stdout);
  });

  it('production refuses a placeholder secret, a * origin and a missing database in one message, before listening', async () => {
    const r = await runKeel(['serve'], { NODE_ENV: 'production', SECRET_KEY: 'change-me', CORS_ORIGINS: '*', PORT: '0' });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('Keel cannot start');
    for (const name of ['SECRET_KEY', 'CORS_ORIGINS', 'DATABASE_URL']) expect(r.stderr).toContain(name);
    expect(r.stdout).not.toContain('keel listening');
  });

  it('migrate applies pending migrations once; again it is a no-op; --status lists them', async () => {
    const env = { DATABASE_URL: `${db.dataDir}/cli.db`, DATA_DIR: db.dataDir };
    const first = await runKeel(['migrate'], env);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`applied ${Object.keys(migrations).length} migration(s) on sqlite`);
    const again = await runKeel(['migrate'], env);
    expect(again.stdout).toContain('database is up to date');
    const status = await runKeel(['migrate', '--status'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^applied {2}\d+_create_users$/m);
  });

  it('doctor passes a healthy configuration', async () => {
    const r = await runKeel(['doctor'], { DATABASE_URL: `${db.dataDir}/doctor.db`, DATA_DIR: db.dataDir, SECRET_KEY: STRONG });
    expect(r.stdout).toContain('✓ configuration is valid');
    expect(r.stdout).toContain('✓ database reachable (sqlite');
    expect(r.stdout).toContain('No problems found.');
    expect(r.code).toBe(0);
  });

  it('doctor explains an unreachable database in plain words', async () => {
    const r = await runKeel(['doctor'], { DATABASE_URL: 'postgres://keel@127.0.0.1:1/keel', DATA_DIR: db.dataDir });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/✗ cannot reach the database \(127\.0\.0\.1:1\/keel\): .*ECONNREFUSED|✗ cannot reach the database/);
    expect(r.stdout).toContain('1 problem(s) found.');
  });

  it('doctor lists every configuration problem', async () => {
    const r = await runKeel(['doctor'], { NODE_ENV: 'production', SECRET_KEY: 'a1b2c3d4e5f6g7h8' });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('✗ SECRET_KEY is too short');
    expect(r.stdout).toContain('✗ DATABASE_URL is not set');
  });

  it('an unknown command prints usage and exits 64', async () => {
    const r = await runKeel(['frobnicate'], {});
    expect(r.code).toBe(64);
    expect(r.stderr).toContain('usage: keel <command>');
  });
});

describe.runIf(postgresAvailable)('production start on Postgres', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createPostgresDatabase();
  });
  afterAll(() => db.cleanup());

  it('starts with a proper secret, CORS_ORIGINS and a Postgres DATABASE_URL, and stops on SIGTERM', async () => {
    const p = spawnKeel(['serve'], { ...db.env, NODE_ENV: 'production', SECRET_KEY: STRONG, CORS_ORIGINS: 'https://app.example.com', PORT: '0' });
    const url = await p.listening();
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(200);
    expect(health.headers.get('strict-transport-security')).toContain('max-age');
    expect((await fetch(`${url}/ready`)).status).toBe(200);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.stdout()).toContain('"msg":"shutdown complete"');
    expect(p.stdout()).not.toContain(STRONG);
  });
});
