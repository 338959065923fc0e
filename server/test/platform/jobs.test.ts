import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { openDatabase, type Database } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { uuidv7 } from '../../src/platform/ids.js';
import { JobQueue, PermanentJobError, retryDelay, type JobContext, type JobHandler, type JobQueueOptions, type JobRow } from '../../src/platform/jobs.js';
import { createLogger } from '../../src/platform/logger.js';
import { createMetrics } from '../../src/platform/metrics.js';
import { createPostgresDatabase, describeEachDatabase, postgresAvailable, type TestDatabase } from '../helpers/databases.js';
import { testConfig } from '../helpers/server.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/** Polls until `check` returns a value (not undefined/false) or the time is up. */
async function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A logger that keeps its lines, for "it was logged" checks. */
function memoryLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  return { logger: createLogger({ logLevel: 'debug' }, stream), lines: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** A promise with its resolver, for handlers that wait on the test. */
function gate<T = void>() {
  let open!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    open = r;
  });
  return { promise, open };
}

describeEachDatabase('job queue', (db) => {
  let database: Database;
  let ownerId: string;
  const queues: JobQueue[] = [];
  const silent = createLogger({ logLevel: 'silent' });

  const queue = (options: Partial<JobQueueOptions> = {}, handlers: Record<string, JobHandler> = {}, logger = silent, on = database): JobQueue => {
    const q = new JobQueue(on, logger, { workers: 0, leaseMs: 5000, pollMs: 20, retryBaseMs: 20, ...options });
    for (const [type, handler] of Object.entries(handlers)) q.register(type, handler);
    queues.push(q);
    return q;
  };
  const row = (id: string): Promise<JobRow> => database.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  /** A job type no other test uses, so no queue claims another test's jobs. */
  const uniqueType = (label: string) => `test.${label}.${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    database = openDatabase(testConfig(db()).database, silent);
    await migrateToLatest(database.db);
    ownerId = uuidv7();
    const now = new Date().toISOString();
    await database.db.insertInto('users').values({ id: ownerId, email: null, name: 'Owner', password_hash: null, created_at: now, updated_at: now }).execute();
  });
  afterEach(async () => {
    await Promise.all(queues.splice(0).map((q) => q.stop(2000)));
  });
  afterAll(() => database.close());

  it('runs a job: progress and result land in the row, the owner can view it, others cannot', async () => {
    const type = uniqueType('result');
    const halfway = gate();
    const metrics = createMetrics();
    const seen: Array<{ payload: unknown; attempts: number }> = [];
    const q = new JobQueue(database, silent, { workers: 1, leaseMs: 5000, pollMs: 1000 }, metrics);
    queues.push(q);
    q.register(type, async (payload, ctx) => {
      seen.push({ payload, attempts: ctx.job.attempts });
      await ctx.progress(0.5);
      await halfway.promise;
      return { words: 42, echo: payload };
    });
    q.start();
    const job = await q.enqueue(database.db, { type, ownerId, payload: { doc: 'a' } });
    expect(job).toMatchObject({ status: 'pending', attempts: 0, max_attempts: 3, owner_id: ownerId, payload: '{"doc":"a"}' });

    // poll is 1 s: the enqueue itself woke the idle worker
    const running = await eventually(async () => {
      const r = await row(job.id);
      return r.status === 'running' && r.progress === 0.5 ? r : undefined;
    }, 900, 'the job to report progress');
    expect(running.attempts).toBe(1);
    expect(running.locked_by).toBeTruthy();
    expect(Date.parse(running.lease_expires_at!)).toBeGreaterThan(Date.now());
    expect((await q.view(ownerId, job.id))).toMatchObject({ status: 'running', progress: 0.5, result: null, finished_at: null });

    halfway.open();
    const done = await eventually(async () => ((await row(job.id)).status === 'succeeded' ? row(job.id) : undefined));
    expect(done).toMatchObject({ progress: 1, attempts: 1, error: null, locked_by: null, lease_expires_at: null });
    expect(JSON.parse(done.result!)).toEqual({ words: 42, echo: { doc: 'a' } });
    expect(Date.parse(done.finished_at!)).toBeGreaterThanOrEqual(Date.parse(done.created_at));
    expect(seen).toEqual([{ payload: { doc: 'a' }, attempts: 1 }]);

    const view = await q.view(ownerId, job.id);
    expect(view).toEqual({
      id: job.id, type, status: 'succeeded', attempts: 1, progress: 1, error: null, result: { words: 42, echo: { doc: 'a' } },
      created_at: done.created_at, updated_at: done.updated_at, finished_at: done.finished_at,
    });
    expect(await q.view(uuidv7(), job.id)).toBeUndefined();
    expect(await q.view(ownerId, uuidv7())).toBeUndefined();
    expect(await metrics.registry.getSingleMetricAsString('keel_jobs_processed_total')).toContain(`keel_jobs_processed_total{type="${type}",outcome="succeeded"} 1`);
  });

  it('progress is clamped and throttled; the latest value is written when the interval is up', async () => {
    const type = uniqueType('progress');
    const finish = gate();
    // a long lease: renewals (every third of it) do not write the progress here
    const q = queue({ workers: 1, leaseMs: 60_000 }, {
      [type]: async (_payload, ctx) => {
        await ctx.progress(-1);
        await ctx.progress(0.2);
        await ctx.progress(Number.NaN);
        await ctx.progress(0.3);
        await finish.promise;
      },
    });
    q.start();
    const job = await q.enqueue(database.db, { type, ownerId, payload: {} });
    await eventually(async () => (await row(job.id)).progress === 0, 1000, 'the first progress');
    await eventually(async () => (await row(job.id)).progress === 0.3, 1000, 'the throttled progress');
    finish.open();
    await eventually(async () => (await row(job.id)).status === 'succeeded');
    expect(await row(job.id)).toMatchObject({ progress: 1, result: null });
  });

  it('a job enqueued in a transaction commits with it, or not at all', async () => {
    const type = uniqueType('tx');
    const ran: unknown[] = [];
    const q = queue({ workers: 1, pollMs: 5000 }, { [type]: async (payload) => ran.push(payload) });
    q.start();
    await expect(database.db.transaction().execute(async (trx) => {
      await q.enqueue(trx, { type, ownerId, payload: 'rolled back' });
      throw new Error('the caller fails after enqueuing');
    })).rejects.toThrow('the caller fails');
    const committed = await database.db.transaction().execute((trx) => q.enqueue(trx, { type, ownerId, payload: 'committed' }));
    // poll is 5 s: the worker was woken again after the commit
    await eventually(async () => (await row(committed.id)).status === 'succeeded', 2000, 'the committed job to run');
    const rows = await database.db.selectFrom('jobs').select(['payload', 'status']).where('type', '=', type).execute();
    expect(rows).toEqual([{ payload: '"committed"', status: 'succeeded' }]);
    expect(ran).toEqual(['committed']);
  });

  it('retries a failing job with growing backoff, then fails it after max attempts', async () => {
    const type = uniqueType('retry');
    const calls: number[] = [];
    const q = queue({ retryBaseMs: 100 }, {
      [type]: async () => {
        calls.push(Date.now());
        throw new Error(`boom ${calls.length}`);
      },
    });
    const job = await q.enqueue(database.db, { type, ownerId, payload: null });

    expect(await q.runOnce()).toBe(true);
    const first = await row(job.id);
    expect(first).toMatchObject({ status: 'pending', attempts: 1, error: 'boom 1', locked_by: null, lease_expires_at: null, finished_at: null });
    // not due yet: backoff of 50–100 ms after the first failure
    const wait1 = Date.parse(first.run_at) - Date.parse(first.updated_at);
    expect(wait1).toBeGreaterThanOrEqual(50);
    expect(wait1).toBeLessThanOrEqual(100);
    expect(await q.runOnce()).toBe(false);

    await eventually(() => q.runOnce(), 2000, 'the second attempt');
    const second = await row(job.id);
    expect(second).toMatchObject({ status: 'pending', attempts: 2, error: 'boom 2' });
    const wait2 = Date.parse(second.run_at) - Date.parse(second.updated_at);
    expect(wait2).toBeGreaterThanOrEqual(100);
    expect(wait2).toBeLessThanOrEqual(200);

    await eventually(() => q.runOnce(), 2000, 'the third attempt');
    expect(await row(job.id)).toMatchObject({ status: 'failed', attempts: 3, error: 'boom 3', locked_by: null });
    expect((await row(job.id)).finished_at).not.toBeNull();
    expect(calls).toHaveLength(3);
    expect(calls[1]! - calls[0]!).toBeGreaterThanOrEqual(50);
    expect(calls[2]! - calls[1]!).toBeGreaterThanOrEqual(100);
    expect(await q.runOnce()).toBe(false);
  });

  it('a retry can succeed; maxAttempts comes from enqueue, else from register', async () => {
    const type = uniqueType('flaky');
    let calls = 0;
    const q = new JobQueue(database, silent, { workers: 0, leaseMs: 5000, pollMs: 20, retryBaseMs: 1 });
    queues.push(q);
    q.register(type, async () => {
      calls += 1;
      if (calls === 1) throw new Error('transient');
      return 'ok';
    }, { maxAttempts: 5 });
    const job = await q.enqueue(database.db, { type, ownerId, payload: {} });
    expect(job.max_attempts).toBe(5);
    expect((await q.enqueue(database.db, { type, ownerId: null, payload: {}, maxAttempts: 1, runAt: new Date(Date.now() + 60_000) })).max_attempts).toBe(1);
    await eventually(async () => (await q.runOnce()) && (await row(job.id)).status === 'succeeded', 2000, 'the retry to succeed');
    expect(await row(job.id)).toMatchObject({ status: 'succeeded', attempts: 2, error: null, result: '"ok"' });
  });

  it('PermanentJobError fails the job at once, without retrying', async () => {
    const type = uniqueType('permanent');
    let calls = 0;
    const q = queue({}, {
      [type]: async () => {
        calls += 1;
        throw new PermanentJobError('the document is gone');
      },
    });
    const job = await q.enqueue(database.db, { type, ownerId, payload: {}, maxAttempts: 5 });
    expect(await q.runOnce()).toBe(true);
    expect(await row(job.id)).toMatchObject({ status: 'failed', attempts: 1, error: 'the document is gone' });
    expect(await q.runOnce()).toBe(false);
    expect(calls).toBe(1);
  });

  it('a job runs only where its type is registered, and not before run_at', async () => {
    const type = uniqueType('elsewhere');
    const other = uniqueType('other');
    const q = queue({}, { [other]: async () => 'x' });
    const job = await q.enqueue(database.db, { type, ownerId, payload: {} });
    expect(await q.runOnce()).toBe(false);
    expect((await row(job.id)).status).toBe('pending');
    const later = await q.enqueue(database.db, { type: other, ownerId, payload: {}, runAt: new Date(Date.now() + 60_000) });
    expect(await q.runOnce()).toBe(false);
    expect((await row(later.id)).status).toBe('pending');
  });

  it('a job whose worker died (lease expired) is taken over by another worker and completes; attempts count both', async () => {
    const type = uniqueType('lease');
    const claimed = gate<JobContext>();
    // Worker A: claims, then hangs and ignores its signal, like a process that froze or was killed.
    const a = queue({ workers: 1, leaseMs: 300, workerId: 'worker-a' }, {
      [type]: (_payload, ctx) => {
        claimed.open(ctx);
        return new Promise(() => {});
      },
    });
    a.start();
    const job = await a.enqueue(database.db, { type, ownerId, payload: { n: 1 } });
    const ctxA = await claimed.promise;
    expect(await row(job.id)).toMatchObject({ status: 'running', attempts: 1, locked_by: 'worker-a' });
    // A renews its lease while it is alive…
    await sleep(450);
    expect(Date.parse((await row(job.id)).lease_expires_at!)).toBeGreaterThan(Date.now());
    // …and stops renewing when it dies: stop() gives up on the hung handler after 50 ms.
    await a.stop(50);
    expect(ctxA.signal.aborted).toBe(true);

    const seen: number[] = [];
    const b = queue({ leaseMs: 300, workerId: 'worker-b' }, {
      [type]: async (_payload, ctx) => {
        seen.push(ctx.job.attempts);
        return 'finished by b';
      },
    });
    expect(await b.runOnce()).toBe(false); // A's lease has not expired yet
    await eventually(() => b.runOnce(), 2000, 'B to take the job over');
    expect(await row(job.id)).toMatchObject({ status: 'succeeded', attempts: 2, result: '"finished by b"', locked_by: null });
    expect(seen).toEqual([2]);
  });

  it('a worker whose job was taken over loses it: its signal aborts and its outcome is discarded', async () => {
    const type = uniqueType('lost');
    const claimed = gate();
    let aborted: unknown;
    const { logger, lines } = memoryLogger();
    const a = queue({ workers: 1, leaseMs: 300, workerId: 'worker-a' }, {
      [type]: (_payload, ctx) => new Promise((_resolve, reject) => {
        claimed.open();
        ctx.signal.addEventListener('abort', () => {
          aborted = ctx.signal.reason;
          reject(new Error('gave up'));
        });
      }),
    }, logger);
    a.start();
    const job = await a.enqueue(database.db, { type, ownerId, payload: {} });
    await claimed.promise;
    // A stalls long enough for its lease to expire (simulated), and B takes the job.
    await database.db.updateTable('jobs').set({ lease_expires_at: new Date(Date.now() - 1000).toISOString() }).where('id', '=', job.id).execute();
    const b = queue({ workerId: 'worker-b' }, { [type]: async () => 'b won' });
    expect(await b.runOnce()).toBe(true);
    await eventually(async () => aborted !== undefined, 2000, 'A to notice');
    expect(String(aborted)).toMatch(/lease lost/i);
    await eventually(async () => lines().some((l) => l.msg === 'job outcome discarded: its lease was lost (another worker took it over, or it was deleted)'), 2000, 'A to discard its outcome');
    expect(await row(job.id)).toMatchObject({ status: 'succeeded', attempts: 2, result: '"b won"', error: null });
  });

  it('a job whose worker died on its last attempt is failed, not run again', async () => {
    const type = uniqueType('last');
    const claimed = gate();
    const a = queue({ workers: 1, leaseMs: 200 }, {
      [type]: () => {
        claimed.open();
        return new Promise(() => {});
      },
    });
    a.start();
    const job = await a.enqueue(database.db, { type, ownerId, payload: {}, maxAttempts: 1 });
    await claimed.promise;
    await a.stop(20);
    let ran = false;
    const b = queue({ leaseMs: 200 }, {
      [type]: async () => {
        ran = true;
      },
    });
    await eventually(async () => {
      await b.runOnce();
      return (await row(job.id)).status === 'failed';
    }, 2000, 'the job to be failed');
    expect(await row(job.id)).toMatchObject({ status: 'failed', attempts: 1, locked_by: null });
    expect((await row(job.id)).error).toMatch(/lease expired/);
    expect(ran).toBe(false);
  });

  it('stop() aborts running handlers and hands their jobs back without using up an attempt', async () => {
    const type = uniqueType('stop');
    const claimed = gate();
    let signalled = false;
    const q = queue({ workers: 2 }, {
      [type]: (_payload, ctx) => new Promise((_resolve, reject) => {
        claimed.open();
        ctx.signal.addEventListener('abort', () => {
          signalled = true;
          reject(ctx.signal.reason as Error);
        });
      }),
    });
    q.start();
    const job = await q.enqueue(database.db, { type, ownerId, payload: {} });
    await claimed.promise;
    const started = Date.now();
    await q.stop(5000);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(signalled).toBe(true);
    expect(await row(job.id)).toMatchObject({ status: 'pending', attempts: 0, locked_by: null, lease_expires_at: null });
    // a stopped queue claims nothing more
    expect(await q.runOnce()).toBe(false);
    const again = queue({}, { [type]: async () => 'second run' });
    expect(await again.runOnce()).toBe(true);
    expect(await row(job.id)).toMatchObject({ status: 'succeeded', attempts: 1 });
  });

  it('two queues on separate connections (like two processes) run 50 jobs, each exactly once', async () => {
    const type = uniqueType('many');
    const runs: Array<{ id: string; by: string }> = [];
    const second = openDatabase(testConfig(db()).database, silent);
    try {
      const handler = (by: string): JobHandler => async (_payload, ctx) => {
        runs.push({ id: ctx.job.id, by });
        await sleep(5 + Math.random() * 15);
        return by;
      };
      const a = queue({ workers: 4, workerId: 'process-a' }, { [type]: handler('a') });
      const b = queue({ workers: 4, workerId: 'process-b' }, { [type]: handler('b') }, silent, second);
      a.start();
      b.start();
      const ids = new Set<string>();
      for (let i = 0; i < 50; i++) ids.add((await a.enqueue(database.db, { type, ownerId, payload: { i } })).id);
      await eventually(async () => {
        const r = await database.db.selectFrom('jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('type', '=', type).where('status', '=', 'succeeded').executeTakeFirstOrThrow();
        return Number(r.n) === 50;
      }, 20_000, 'all 50 jobs to succeed');
      expect(runs).toHaveLength(50);
      expect(new Set(runs.map((r) => r.id))).toEqual(ids);
      expect(new Set(runs.map((r) => r.by))).toEqual(new Set(['a', 'b']));
      const attempts = await database.db.selectFrom('jobs').select('attempts').where('type', '=', type).execute();
      expect(attempts.every((r) => r.attempts === 1)).toBe(true);
      await Promise.all([a.stop(), b.stop()]);
    } finally {
      await second.close();
    }
  });

  it('a database error while polling is logged and retried, never thrown', async () => {
    const type = uniqueType('broken');
    // A database without the jobs table: every claim fails.
    const elsewhere: Record<string, string> = db().kind === 'sqlite' ? { DATABASE_URL: `${db().dataDir}/unmigrated.db` } : { DATABASE_SCHEMA: `keel_missing_${randomUUID().slice(0, 8)}` };
    const broken = openDatabase(testConfig(db(), elsewhere).database, silent);
    onTestFinished(() => broken.close());
    const { logger, lines } = memoryLogger();
    const q = queue({ workers: 2, pollMs: 10 }, { [type]: async () => 'x' }, logger, broken);
    q.start();
    await eventually(async () => lines().some((l) => String(l.msg).startsWith('job queue:') && l.level !== 'info'), 2000, 'the failure to be logged');
    await sleep(200);
    // throttled: one line per 30 s however often it retries
    expect(lines().filter((l) => String(l.msg).startsWith('job queue:')).length).toBe(1);
    await q.stop(1000);
  });
});

describe('retry backoff', () => {
  it('grows exponentially with jitter and is capped', () => {
    for (let i = 0; i < 100; i++) {
      const d1 = retryDelay(1000, 1);
      const d4 = retryDelay(1000, 4);
      expect(d1).toBeGreaterThanOrEqual(500);
      expect(d1).toBeLessThanOrEqual(1000);
      expect(d4).toBeGreaterThanOrEqual(4000);
      expect(d4).toBeLessThanOrEqual(8000);
      expect(retryDelay(1000, 40)).toBeLessThanOrEqual(10 * 60_000);
    }
  });
});

// Postgres goes away under a running queue and comes back: the queue logs, keeps retrying, and runs
// the job once the database answers again.
describe.runIf(postgresAvailable)('job queue through a database outage [postgres]', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let direct: Database;
  let viaProxy: Database;
  beforeAll(async () => {
    db = await createPostgresDatabase();
    direct = openDatabase(testConfig(db).database, createLogger({ logLevel: 'silent' }));
    await migrateToLatest(direct.db);
    const target = new URL(db.env.DATABASE_URL!);
    proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    viaProxy = openDatabase(testConfig(db, { DATABASE_URL: url.toString(), DATABASE_CONNECT_TIMEOUT_MS: '500' }).database, createLogger({ logLevel: 'silent' }));
  });
  afterAll(async () => {
    await viaProxy?.close();
    await direct?.close();
    await proxy?.close();
    await db?.cleanup();
  });

  it('logs, retries and recovers by itself', async () => {
    const { logger, lines } = memoryLogger();
    const q = new JobQueue(viaProxy, logger, { workers: 2, leaseMs: 5000, pollMs: 50 });
    q.register('test.outage', async () => 'after the outage');
    q.start();
    try {
      await proxy.cut();
      const job = await q.enqueue(direct.db, { type: 'test.outage', ownerId: null, payload: {} });
      await eventually(async () => lines().some((l) => l.msg === 'job queue: database unavailable; will retry'), 5000, 'the outage to be logged');
      expect((await direct.db.selectFrom('jobs').select('status').where('id', '=', job.id).executeTakeFirstOrThrow()).status).toBe('pending');
      await proxy.restore();
      await eventually(async () => (await direct.db.selectFrom('jobs').select('status').where('id', '=', job.id).executeTakeFirstOrThrow()).status === 'succeeded', 15_000, 'the job to run after the outage');
      expect(lines().some((l) => l.msg === 'job queue: the database answers again; claiming resumed')).toBe(true);
    } finally {
      await q.stop(2000);
    }
  });
});
