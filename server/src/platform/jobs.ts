import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kysely, Selectable, Transaction } from 'kysely';
import type { Logger } from 'pino';
import { Counter, Histogram } from 'prom-client';
import type { Database } from '../db/database.js';
import type { DialectCapabilities } from '../db/dialect.js';
import { isDatabaseUnavailable } from '../db/errors.js';
import type { DB, JobsTable } from '../db/schema.js';
import { uuidv7 } from './ids.js';
import type { Metrics } from './metrics.js';

/**
 * Durable background jobs: a `jobs` row per job, claimed by a worker under a lease that the worker
 * renews while the handler runs. A row whose lease ran out (its process died) is claimed again, so
 * every job runs at least once; handlers should be idempotent. Several processes share one queue on
 * Postgres (`FOR UPDATE SKIP LOCKED`); on SQLite the single writer gives the same guarantee.
 */

export type JobRow = Selectable<JobsTable>;
export type JobStatus = 'pending' | 'running' | 'succeeded' | 'failed';
type Db = Kysely<DB> | Transaction<DB>;

export interface JobContext {
  /** The row as claimed: `status` running, `attempts` counting this run. */
  readonly job: JobRow;
  /** Aborted when the queue stops (shutdown) or the lease is lost; pass it to long I/O. */
  readonly signal: AbortSignal;
  /** A child logger carrying `job_id` and `job_type`. */
  readonly logger: Logger;
  /** Records progress (0..1; written at most every 250 ms) and renews the lease. Never throws. */
  progress(fraction: number): Promise<void>;
}

/** Does a job's work; what it resolves to is stored (as JSON) in `result`. Throwing retries the job. */
export type JobHandler = (payload: unknown, ctx: JobContext) => Promise<unknown>;

/** Thrown by a handler when retrying cannot help (bad input, a deleted resource): the job fails at once. */
export class PermanentJobError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PermanentJobError';
  }
}

export interface EnqueueOptions {
  type: string;
  /** The user the job works for (GET /jobs/{id} shows it to them only); null for system jobs. */
  ownerId: string | null;
  /** Any JSON value. */
  payload: unknown;
  /** Default: the type's `register` option, else 3. */
  maxAttempts?: number;
  /** Not before this time (default: now). */
  runAt?: Date;
}

/** The API.md shape of `GET /jobs/{id}`. */
export interface JobView {
  id: string;
  type: string;
  status: JobStatus;
  attempts: number;
  progress: number | null;
  error: string | null;
  result: unknown;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

export interface JobQueueOptions {
  /** Claim loops in this process; 0 = enqueue and view only. */
  workers: number;
  /** How long a claim holds before another worker may take the job over; renewed every third of it. */
  leaseMs: number;
  /** How often an idle worker looks for due jobs (an enqueue in this process wakes it sooner). */
  pollMs: number;
  /** `locked_by` of this process's claims; default `host:pid:random`. */
  workerId?: string;
  /** Base of the exponential retry backoff (default 1000 ms; capped at 10 minutes, with jitter). */
  retryBaseMs?: number;
}

const DEFAULT_MAX_ATTEMPTS = 3;
const RETRY_CAP_MS = 10 * 60_000;
const PROGRESS_WRITE_MS = 250;
const MAX_ERROR_CHARS = 2000;
const CLAIM_ERROR_LOG_MS = 30_000;

/** The only SQL of the job queue; every write to a claimed row checks the claim is still ours. */
interface Claim {
  readonly id: string;
  readonly workerId: string;
  readonly attempts: number;
}

const jobsRepository = {
  insert: (db: Db, values: JobRow) => db.insertInto('jobs').values(values).returningAll().executeTakeFirstOrThrow(),

  /**
   * Takes the oldest due job of `types`: pending and due, or running with an expired lease and
   * attempts left. One statement: on Postgres the candidate row is locked and skipped by concurrent
   * claimers; on SQLite the statement holds the write lock from its first read.
   */
  claim: (db: Db, dialect: DialectCapabilities, types: readonly string[], workerId: string, now: string, leaseUntil: string) => {
    const candidate = db.selectFrom('jobs').select('id')
      .where('type', 'in', types)
      .where((eb) => eb.or([
        eb.and([eb('status', '=', 'pending'), eb('run_at', '<=', now)]),
        eb.and([eb('status', '=', 'running'), eb('lease_expires_at', '<', now), eb('attempts', '<', eb.ref('max_attempts'))]),
      ]))
      .orderBy('run_at').orderBy('id').limit(1)
      .$if(dialect.skipLocked, (qb) => qb.forUpdate().skipLocked());
    return db.updateTable('jobs')
      .set((eb) => ({ status: 'running', attempts: eb('attempts', '+', 1), locked_by: workerId, lease_expires_at: leaseUntil, updated_at: now }))
      .where('id', '=', candidate)
      .returningAll()
      .executeTakeFirst();
  },

  /** Running jobs whose worker vanished on their last attempt: nothing may claim them again, so they fail. */
  failAbandoned: (db: Db, types: readonly string[], now: string) =>
    db.updateTable('jobs')
      .set({ status: 'failed', error: 'The worker running this job stopped (its lease expired) and no attempts are left.', locked_by: null, lease_expires_at: null, finished_at: now, updated_at: now })
      .where('type', 'in', types).where('status', '=', 'running').where('lease_expires_at', '<', now)
      .where((eb) => eb('attempts', '>=', eb.ref('max_attempts')))
      .execute(),

  /** Writes to a row only while the claim is ours; false when it is not (taken over, or deleted). */
  update: async (db: Db, claim: Claim, values: Partial<Omit<JobRow, 'id'>>): Promise<boolean> => {
    const r = await db.updateTable('jobs').set(values)
      .where('id', '=', claim.id).where('status', '=', 'running').where('locked_by', '=', claim.workerId).where('attempts', '=', claim.attempts)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  },

  anyActive: async (db: Db, type: string): Promise<boolean> =>
    (await db.selectFrom('jobs').select('id').where('type', '=', type).where('status', 'in', ['pending', 'running']).limit(1).executeTakeFirst()) !== undefined,

  view: (db: Db, ownerId: string, id: string) =>
    db.selectFrom('jobs').selectAll().where('id', '=', id).where('owner_id', '=', ownerId).executeTakeFirst(),
};

/** A row as `GET /jobs/{id}` shows it. */
export function toJobView(row: JobRow): JobView {
  return {
    id: row.id,
    type: row.type,
    status: row.status as JobStatus,
    attempts: row.attempts,
    progress: row.progress,
    error: row.error,
    result: row.result === null ? null : JSON.parse(row.result) as unknown,
    created_at: row.created_at,
    updated_at: row.updated_at,
    finished_at: row.finished_at,
  };
}

/** Why a running handler's signal was aborted. */
class JobAbortError extends Error {
  constructor(message: string, readonly kind: 'shutdown' | 'lease') {
    super(message);
    this.name = 'AbortError';
  }
}

interface Running {
  readonly row: JobRow;
  readonly claim: Claim;
  readonly controller: AbortController;
  readonly logger: Logger;
  /** Serializes this job's writes (renewals, progress, the outcome). */
  chain: Promise<void>;
  leaseUntil: number;
  /** When progress was last written (0: not yet), for throttling. */
  lastProgressWrite: number;
  progress: number | null;
  written: number | null;
  renewing: boolean;
  /** The outcome is being written: renewals and progress stop. */
  done: boolean;
  /** Still running past the stop deadline: the database is closing, so nothing more is written. */
  abandoned: boolean;
  timer?: NodeJS.Timeout;
  progressTimer?: NodeJS.Timeout;
}

type Outcome = 'succeeded' | 'retried' | 'failed' | 'released' | 'lost';

/**
 * The job queue of one process: `register` handlers (modules do, while the app is built), `enqueue`
 * from services (inside their own transaction when the job must commit with their rows), `start`
 * the claim loops, `stop` them at shutdown. Never throws from its loops: database errors are logged
 * and retried.
 */
export class JobQueue {
  private readonly handlers = new Map<string, { handler: JobHandler; maxAttempts: number }>();
  private readonly running = new Set<Running>();
  private readonly wakers = new Set<() => void>();
  /** Wake-ups that found no idle worker (all busy claiming or running): the next idle() skips its wait. */
  private missedWakes = 0;
  private readonly loops: Array<Promise<void>> = [];
  private readonly adhoc = new Set<Promise<unknown>>();
  private readonly workerId: string;
  private readonly retryBaseMs: number;
  private readonly processed: Counter<'type' | 'outcome'> | undefined;
  private readonly duration: Histogram<'type' | 'outcome'> | undefined;
  private started = false;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private lastSweep = 0;
  private claimFailing = false;
  private lastClaimErrorLog = 0;

  constructor(
    private readonly database: Database,
    private readonly logger: Logger,
    private readonly options: JobQueueOptions,
    metrics?: Metrics,
  ) {
    if (!Number.isInteger(options.workers) || options.workers < 0) throw new RangeError('workers must be a whole number ≥ 0');
    if (!(options.leaseMs > 0) || !(options.pollMs > 0)) throw new RangeError('leaseMs and pollMs must be positive');
    this.workerId = options.workerId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.retryBaseMs = options.retryBaseMs ?? 1000;
    if (metrics) {
      this.processed = new Counter({ name: 'keel_jobs_processed_total', help: 'Job runs by type and outcome (succeeded, retried, failed, released at shutdown, lost lease)', labelNames: ['type', 'outcome'], registers: [metrics.registry] });
      this.duration = new Histogram({
        name: 'keel_job_duration_seconds', help: 'Time a job handler ran, by type and outcome', labelNames: ['type', 'outcome'],
        buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900], registers: [metrics.registry],
      });
    }
  }

  /** Handles jobs of `type` in this process; only registered types are claimed here. */
  register(type: string, handler: JobHandler, options: { maxAttempts?: number } = {}): void {
    if (this.handlers.has(type)) throw new Error(`a handler for job type "${type}" is already registered`);
    this.handlers.set(type, { handler, maxAttempts: validAttempts(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS) });
  }

  /**
   * Inserts a pending job with `db`, which may be the caller's transaction so that the job commits
   * (or rolls back) with the caller's own rows. Wakes an idle worker of this process; workers of
   * other processes find it within `pollMs`.
   */
  async enqueue(db: Kysely<DB> | Transaction<DB>, options: EnqueueOptions): Promise<JobRow> {
    const now = new Date().toISOString();
    const row = await jobsRepository.insert(db, {
      id: uuidv7(),
      type: options.type,
      owner_id: options.ownerId,
      status: 'pending',
      payload: JSON.stringify(options.payload ?? null),
      result: null,
      error: null,
      progress: null,
      attempts: 0,
      max_attempts: validAttempts(options.maxAttempts ?? this.handlers.get(options.type)?.maxAttempts ?? DEFAULT_MAX_ATTEMPTS),
      run_at: options.runAt ? options.runAt.toISOString() : now,
      locked_by: null,
      lease_expires_at: null,
      created_at: now,
      updated_at: now,
      finished_at: null,
    });
    this.wakeOne();
    // Inside a transaction the row is invisible until the caller commits: look again shortly after.
    if (db.isTransaction) setTimeout(() => this.wakeOne(), 50).unref();
    return row;
  }

  /** The job as its owner sees it; undefined when it does not exist or belongs to someone else. */
  async view(ownerId: string, id: string): Promise<JobView | undefined> {
    const row = await jobsRepository.view(this.database.db, ownerId, id);
    return row && toJobView(row);
  }

  /** Whether a job of `type` is waiting or running anywhere (for jobs that should be queued once). */
  hasActive(type: string): Promise<boolean> {
    return jobsRepository.anyActive(this.database.db, type);
  }

  /** Starts `workers` claim loops (none when 0). Call once every handler is registered. */
  start(): void {
    if (this.started || this.stopping) return;
    this.started = true;
    for (let i = 0; i < this.options.workers; i++) {
      // loop() handles its own errors; this is the last line of defence against an unhandled rejection.
      this.loops.push(this.loop().catch((err: unknown) => this.logger.error({ err }, 'job worker loop crashed')));
    }
    if (this.options.workers > 0) this.logger.info({ workers: this.options.workers, worker_id: this.workerId, types: [...this.handlers.keys()] }, 'job workers started');
  }

  /**
   * Stops claiming, aborts the signals of running handlers and waits for them up to `deadlineMs`. A
   * handler that gives up because of the abort has its job put back (pending, the attempt not
   * counted) for another process; one still running at the deadline keeps its row until the lease
   * expires. Idempotent; never rejects.
   */
  stop(deadlineMs = 10_000): Promise<void> {
    this.stopped ??= this.shutdown(deadlineMs);
    return this.stopped;
  }

  /** Test helper: claims and runs one due job; false when there was none. */
  async runOnce(): Promise<boolean> {
    if (this.stopping) return false;
    // Tracked as a whole, so stop() also waits for a claim in flight.
    const run = this.claim().then(async (row) => {
      if (row) await this.execute(row);
      return row !== undefined;
    });
    this.adhoc.add(run);
    try {
      return await run;
    } finally {
      this.adhoc.delete(run);
    }
  }

  private async shutdown(deadlineMs: number): Promise<void> {
    this.stopping = true;
    for (const wake of [...this.wakers]) wake();
    for (const run of this.running) run.controller.abort(new JobAbortError('the job queue is stopping', 'shutdown'));
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      Promise.allSettled([...this.loops, ...this.adhoc]).then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), deadlineMs);
      }),
    ]);
    clearTimeout(timer);
    if (!finished) {
      for (const run of this.running) {
        run.abandoned = true;
        clearInterval(run.timer);
        clearTimeout(run.progressTimer);
      }
      this.logger.warn({ jobs: [...this.running].map((r) => r.row.id) }, 'jobs still running at the stop deadline: their leases will expire and another worker will run them again');
    }
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      let row: JobRow | undefined;
      try {
        row = await this.claim();
        failures = 0;
      } catch {
        failures += 1;
        await this.idle(Math.min(this.options.pollMs * 2 ** Math.min(failures, 10), Math.max(this.options.pollMs, 5000)));
        continue;
      }
      if (row) await this.execute(row);
      else await this.idle(this.options.pollMs);
    }
  }

  /** Claims one due job of a registered type, after failing abandoned ones; logs database errors (throttled) and rethrows. */
  private async claim(): Promise<JobRow | undefined> {
    const types = [...this.handlers.keys()];
    if (types.length === 0) return undefined;
    const nowMs = Date.now();
    const now = new Date(nowMs).toISOString();
    try {
      if (nowMs - this.lastSweep >= this.options.pollMs) {
        this.lastSweep = nowMs;
        await jobsRepository.failAbandoned(this.database.db, types, now);
      }
      const row = await jobsRepository.claim(this.database.db, this.database.dialect, types, this.workerId, now, new Date(nowMs + this.options.leaseMs).toISOString());
      if (this.claimFailing) {
        this.claimFailing = false;
        this.logger.info('job queue: the database answers again; claiming resumed');
      }
      return row;
    } catch (err) {
      if (!this.claimFailing || Date.now() - this.lastClaimErrorLog >= CLAIM_ERROR_LOG_MS) {
        this.lastClaimErrorLog = Date.now();
        const unavailable = isDatabaseUnavailable(err);
        this.logger[unavailable ? 'warn' : 'error']({ err }, unavailable ? 'job queue: database unavailable; will retry' : 'job queue: claiming a job failed; will retry');
      }
      this.claimFailing = true;
      throw err;
    }
  }

  private async execute(row: JobRow): Promise<void> {
    const claim: Claim = { id: row.id, workerId: row.locked_by ?? this.workerId, attempts: row.attempts };
    const logger = this.logger.child({ job_id: row.id, job_type: row.type });
    const run: Running = {
      row, claim, logger, controller: new AbortController(), chain: Promise.resolve(),
      leaseUntil: row.lease_expires_at ? Date.parse(row.lease_expires_at) : Date.now() + this.options.leaseMs, lastProgressWrite: 0, progress: row.progress, written: row.progress,
      renewing: false, done: false, abandoned: false,
    };
    this.running.add(run);
    if (this.stopping) run.controller.abort(new JobAbortError('the job queue is stopping', 'shutdown'));
    run.timer = setInterval(() => this.tick(run), Math.max(10, Math.floor(this.options.leaseMs / 3)));
    run.timer.unref();
    const started = performance.now();
    const ctx: JobContext = {
      job: row,
      signal: run.controller.signal,
      logger,
      progress: async (fraction) => {
        if (run.done || !Number.isFinite(fraction)) return;
        run.progress = Math.min(1, Math.max(0, fraction));
        const wait = run.lastProgressWrite + PROGRESS_WRITE_MS - Date.now();
        if (wait <= 0) {
          run.lastProgressWrite = Date.now();
          await this.renew(run);
        } else if (!run.progressTimer) {
          // Throttled: the latest value is written when the interval is up.
          run.progressTimer = setTimeout(() => {
            run.progressTimer = undefined;
            run.lastProgressWrite = Date.now();
            void this.renew(run);
          }, wait);
          run.progressTimer.unref();
        }
      },
    };
    logger.debug({ attempt: row.attempts }, 'job started');
    let outcome: Outcome;
    try {
      // Claimed just as the queue began to stop: hand it back without starting it.
      if (this.stopping) throw run.controller.signal.reason;
      const registered = this.handlers.get(row.type);
      if (!registered) throw new PermanentJobError(`No handler is registered for job type "${row.type}".`);
      const value = await registered.handler(parseJson(row.payload, 'payload'), ctx);
      let result: string | null;
      try {
        result = value === undefined ? null : JSON.stringify(value);
      } catch (err) {
        throw new PermanentJobError('The job\'s result cannot be stored as JSON.', { cause: err });
      }
      outcome = await this.settle(run, 'succeeded', (now) => ({ status: 'succeeded', result, error: null, progress: 1, locked_by: null, lease_expires_at: null, finished_at: now, updated_at: now }));
    } catch (err) {
      outcome = await this.settleError(run, err);
    } finally {
      clearInterval(run.timer);
      clearTimeout(run.progressTimer);
      this.running.delete(run);
    }
    const seconds = (performance.now() - started) / 1000;
    this.processed?.inc({ type: row.type, outcome });
    this.duration?.observe({ type: row.type, outcome }, seconds);
  }

  private async settleError(run: Running, err: unknown): Promise<Outcome> {
    const { row, logger } = run;
    const message = errorMessage(err, run.controller.signal);
    if (err instanceof PermanentJobError) {
      logger.warn({ err, attempt: row.attempts }, 'job failed permanently');
      return this.settle(run, 'failed', (now) => ({ status: 'failed', error: message, locked_by: null, lease_expires_at: null, finished_at: now, updated_at: now }));
    }
    const reason: unknown = run.controller.signal.reason;
    if (this.stopping && reason instanceof JobAbortError && reason.kind === 'shutdown') {
      logger.info('job interrupted by shutdown: put back for another worker');
      // The interrupted run is not the job's fault, so it does not use up an attempt.
      return this.settle(run, 'released', (now) => ({ status: 'pending', attempts: row.attempts - 1, run_at: now, locked_by: null, lease_expires_at: null, updated_at: now }));
    }
    if (row.attempts < row.max_attempts) {
      const delay = retryDelay(this.retryBaseMs, row.attempts);
      logger.warn({ err, attempt: row.attempts, max_attempts: row.max_attempts, retry_in_ms: delay }, 'job failed; will retry');
      return this.settle(run, 'retried', (now, nowMs) => ({ status: 'pending', error: message, run_at: new Date(nowMs + delay).toISOString(), locked_by: null, lease_expires_at: null, updated_at: now }));
    }
    logger.warn({ err, attempt: row.attempts, max_attempts: row.max_attempts }, 'job failed: no attempts left');
    return this.settle(run, 'failed', (now) => ({ status: 'failed', error: message, locked_by: null, lease_expires_at: null, finished_at: now, updated_at: now }));
  }

  /**
   * Writes the outcome if the claim is still ours, after any renewal in flight. A database error is
   * retried a few times within the lease; past that the lease expires and the job runs again.
   */
  private async settle(run: Running, outcome: Outcome, values: (now: string, nowMs: number) => Partial<Omit<JobRow, 'id'>>): Promise<Outcome> {
    run.done = true;
    await run.chain;
    for (let attempt = 1; ; attempt++) {
      if (run.abandoned) {
        run.logger.warn({ outcome }, 'job finished after the stop deadline: outcome not recorded; it will run again');
        return 'lost';
      }
      const nowMs = Date.now();
      try {
        const ours = await jobsRepository.update(this.database.db, run.claim, values(new Date(nowMs).toISOString(), nowMs));
        if (ours) {
          if (outcome === 'succeeded') run.logger.info({ attempt: run.row.attempts }, 'job succeeded');
          return outcome;
        }
        run.logger.warn({ outcome }, 'job outcome discarded: its lease was lost (another worker took it over, or it was deleted)');
        return 'lost';
      } catch (err) {
        if (attempt >= 3 || Date.now() + 1000 * attempt >= run.leaseUntil) {
          run.logger.error({ err, outcome }, 'could not record the job\'s outcome; it will run again when its lease expires');
          return 'lost';
        }
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  }

  /** The renewal timer: renews unless one is in flight; aborts the handler once the lease has run out unrenewed. */
  private tick(run: Running): void {
    if (run.done || run.abandoned) return;
    if (Date.now() >= run.leaseUntil) {
      this.lose(run, 'the lease expired before it could be renewed');
      return;
    }
    if (run.renewing) return;
    run.renewing = true;
    void this.renew(run).finally(() => {
      run.renewing = false;
    });
  }

  /** Extends the lease (and writes progress when it changed); a renewal that finds the row taken aborts the handler. */
  private renew(run: Running): Promise<void> {
    run.chain = run.chain.then(async () => {
      if (run.done || run.abandoned || run.controller.signal.aborted) return;
      const nowMs = Date.now();
      const progress = run.progress;
      try {
        const ours = await jobsRepository.update(this.database.db, run.claim, {
          lease_expires_at: new Date(nowMs + this.options.leaseMs).toISOString(),
          updated_at: new Date(nowMs).toISOString(),
          ...(progress !== run.written ? { progress } : {}),
        });
        if (run.done) return;
        if (!ours) {
          this.lose(run, 'another worker took the job over (or it was deleted)');
          return;
        }
        run.leaseUntil = nowMs + this.options.leaseMs;
        run.written = progress;
      } catch (err) {
        run.logger.warn({ err }, 'renewing the job\'s lease failed');
        if (Date.now() >= run.leaseUntil) this.lose(run, 'the lease expired while the database was unreachable');
      }
    });
    return run.chain;
  }

  private lose(run: Running, why: string): void {
    if (run.controller.signal.aborted) return;
    run.logger.warn({ reason: why }, 'job lease lost: aborting its handler');
    run.controller.abort(new JobAbortError(`Lease lost: ${why}.`, 'lease'));
  }

  /** Waits `ms`, or less when an enqueue wakes this worker or the queue stops. */
  private idle(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    if (this.missedWakes > 0) {
      this.missedWakes -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  private wakeOne(): void {
    const [first] = this.wakers;
    if (first) first();
    else if (this.started) this.missedWakes = Math.min(this.missedWakes + 1, this.options.workers);
  }
}

function validAttempts(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`maxAttempts must be a whole number ≥ 1 (got ${n})`);
  return n;
}

/** Exponential backoff with "equal jitter": half the delay fixed, half random, capped. */
export function retryDelay(baseMs: number, attempt: number): number {
  const exp = Math.min(Math.max(RETRY_CAP_MS, baseMs), baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new PermanentJobError(`The job's ${what} is not valid JSON.`, { cause: err });
  }
}

function errorMessage(err: unknown, signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  const base = signal.aborted && reason instanceof JobAbortError && reason.kind === 'lease'
    ? reason.message
    : err instanceof Error ? err.message || err.name : String(err);
  return base.length > MAX_ERROR_CHARS ? `${base.slice(0, MAX_ERROR_CHARS - 1)}…` : base;
}
