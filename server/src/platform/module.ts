import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Database } from '../db/database.js';
import type { Guards } from './auth.js';
import type { ErasureRegistry } from './erasure.js';
import type { JobQueue } from './jobs.js';
import type { Mailer } from './mailer.js';
import type { Metrics } from './metrics.js';
import type { PubSub } from './pubsub.js';

/** The process's shutdown state: long-lived streams watch `signal` to finish cleanly before the deadline. */
export interface Lifecycle {
  readonly draining: boolean;
  readonly signal: AbortSignal;
}

/** What every capability module is given: its dependencies are arguments, never globals. */
export interface ModuleContext {
  readonly config: Config;
  readonly database: Database;
  readonly redis: Redis | undefined;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly lifecycle: Lifecycle;
  readonly version: string;
  /** One-line authorization guards for route `preHandler`s. */
  readonly guards: Guards;
  /** Where a module registers how to erase a user's data (DELETE /me). */
  readonly erasure: ErasureRegistry;
  readonly mailer: Mailer;
  /** Events across instances (in-process without Redis). */
  readonly pubsub: PubSub;
  /** Durable background jobs: modules `register` handlers while they are registered, and `enqueue` from services. */
  readonly jobs: JobQueue;
}

/** A capability: registers its routes (and hooks) inside its own encapsulated Fastify scope. */
export type KeelModule = (app: FastifyInstance, ctx: ModuleContext) => Promise<void>;
