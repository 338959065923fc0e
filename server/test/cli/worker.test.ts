import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../src/db/database.js';
import { JobQueue, type JobRow } from '../../src/platform/jobs.js';
import { createLogger } from '../../src/platform/logger.js';
import { createSqliteDatabase, type TestDatabase } from '../helpers/databases.js';
import { runKeel, spawnKeel, type KeelProcess } from '../helpers/process.js';
import { testConfig } from '../helpers/server.js';

const WORKER_WITH_PROBE = fileURLToPath(new URL('../fixtures/worker-with-probe.ts', import.meta.url));

/** Resolves once the process has logged "keel worker ready". */
function ready(p: KeelProcess, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (p.stdout().includes('"msg":"keel worker ready"')) {
        clearInterval(poll);
        resolve();
      } else if (Date.now() - started > timeoutMs || p.child.exitCode !== null) {
        clearInterval(poll);
        reject(new Error(`keel worker did not start:\n${p.stdout()}\n${p.stderr()}`));
      }
    }, 50);
  });
}

async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('keel worker', () => {
  let db: TestDatabase;
  let database: Database | undefined;
  beforeAll(async () => {
    db = await createSqliteDatabase();
  });
  afterAll(async () => {
    await database?.close();
    await db.cleanup();
  });
  const env = (extra: Record<string, string> = {}) => ({ ...db.env, NODE_ENV: 'test', SECRET_KEY: 'worker-test-secret-0123456789abcdefghijkl', JOB_POLL_MS: '50', ...extra });

  it('starts without listening, says it is ready, and exits 0 on SIGTERM', async () => {
    const p = spawnKeel(['worker'], env());
    await ready(p);
    expect(p.stdout()).toContain('"msg":"job workers started"');
    expect(p.stdout()).not.toContain('keel listening');
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    const out = p.stdout();
    expect(out.indexOf('shutting down')).toBeGreaterThan(-1);
    expect(out.indexOf('shutting down')).toBeLessThan(out.indexOf('shutdown complete'));
  });

  it('refuses JOB_WORKERS=0', async () => {
    const r = await runKeel(['worker'], env({ JOB_WORKERS: '0' }));
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('JOB_WORKERS');
  });

  it('runs a job enqueued by another process; on SIGTERM hands a running job back and exits 0', async () => {
    const p = spawnKeel([], env({ JOB_WORKERS: '1' }), WORKER_WITH_PROBE);
    await ready(p);
    // The test plays the API process: it only enqueues (its schema was migrated by the worker).
    database = openDatabase(testConfig(db).database, createLogger({ logLevel: 'silent' }));
    const api = new JobQueue(database, createLogger({ logLevel: 'silent' }), { workers: 0, leaseMs: 30_000, pollMs: 1000 });
    const row = (id: string): Promise<JobRow> => database!.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

    const echo = await api.enqueue(database.db, { type: 'probe.echo', ownerId: null, payload: { hello: 'worker' } });
    const done = await eventually(async () => {
      const r = await row(echo.id);
      return r.status === 'succeeded' ? r : undefined;
    });
    expect(JSON.parse(done.result!)).toEqual({ echo: { hello: 'worker' } });

    const sleeper = await api.enqueue(database.db, { type: 'probe.sleep', ownerId: null, payload: { ms: 60_000 } });
    await eventually(async () => ((await row(sleeper.id)).status === 'running' ? true : undefined));
    const signalledAt = Date.now();
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(5000);
    expect(await row(sleeper.id)).toMatchObject({ status: 'pending', attempts: 0, locked_by: null, lease_expires_at: null });
    expect(p.stdout()).toContain('job interrupted by shutdown');
  });
});
