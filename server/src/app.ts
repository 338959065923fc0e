import { readFileSync } from 'node:fs';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { DestinationStream, Logger } from 'pino';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/database.js';
import { migrateToLatest } from './db/migrate.js';
import { authModule } from './modules/auth/index.js';
import { chatModule } from './modules/chat/index.js';
import { ChatService } from './modules/chat/chat.service.js';
import { AuthService } from './modules/auth/auth.service.js';
import { jobsModule } from './modules/jobs/index.js';
import { createKnowledge, type Knowledge } from './modules/knowledge/index.js';
import { llmModule } from './modules/llm/index.js';
import { LlmGateway } from './modules/llm/llm.service.js';
import { createProviders } from './modules/llm/providers/index.js';
import { opsRoutes } from './modules/ops/ops.routes.js';
import { createUsage } from './modules/usage/index.js';
import { createGuards, type Guards } from './platform/auth.js';
import { ErasureRegistry } from './platform/erasure.js';
import { JobQueue } from './platform/jobs.js';
import { createMailer } from './platform/mailer.js';
import { installErrorHandling } from './platform/error-handler.js';
import { createLogger } from './platform/logger.js';
import { createMetrics, instrumentRequests, type Metrics } from './platform/metrics.js';
import { createPubSub } from './platform/pubsub.js';
import type { KeelModule, Lifecycle, ModuleContext } from './platform/module.js';
import { installOpenApi } from './platform/openapi.js';
import { installRateLimit } from './platform/rate-limit.js';
import { closeRedis, createRedis } from './platform/redis.js';
import { requestIdFor } from './platform/request-id.js';
import { AccessLog } from './platform/request-log.js';
import { installSecurity } from './platform/security.js';
import { schemaCompiler } from './platform/validation.js';
import { installWebConsole } from './web.js';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The capabilities Keel serves, in registration order. Each later issue appends its module here. */
function modules(services: { auth: AuthService; guards: Guards; usage: KeelModule; gateway: LlmGateway; chat: ChatService; knowledge: Knowledge }): KeelModule[] {
  return [opsRoutes, authModule(services.auth, services.guards), services.usage, llmModule(services.gateway), chatModule(services.chat, services.auth.authenticateCredential), jobsModule, services.knowledge.module];
}

export interface BuildOptions {
  /** Where log lines go (tests read them); stdout by default. */
  logStream?: DestinationStream;
  /** Use this logger instead of creating one. */
  logger?: Logger;
  /** Extra modules after the built-in ones (tests add probes). */
  extraModules?: readonly KeelModule[];
}

export interface KeelApp {
  readonly app: FastifyInstance;
  readonly context: ModuleContext;
  /** Services modules offer each other (the knowledge module grounds chat through `chat.useRetriever`). */
  readonly services: { readonly chat: ChatService; readonly knowledge: Knowledge };
  /** Marks the instance as draining: /ready answers 503 and streams are told to finish. */
  beginShutdown(): void;
}

/**
 * The one place where Keel is wired together: logger, database (migrated when configured), Redis,
 * metrics, the cross-cutting hooks, then every module. Closing the Fastify app closes what it opened.
 */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<KeelApp> {
  const logger = options.logger ?? createLogger(config, options.logStream);
  const database = openDatabase(config.database, logger);
  const redis = config.redisUrl ? createRedis(config.redisUrl, logger) : undefined;
  try {
    if (config.database.migrateOnStart) {
      const { applied } = await migrateToLatest(database.db);
      if (applied.length > 0) logger.info({ applied }, 'migrations applied');
    }
    return await assemble(config, options, logger, database, redis, createMetrics());
  } catch (err) {
    await Promise.allSettled([database.close(), redis ? closeRedis(redis) : undefined]);
    throw err;
  }
}

async function assemble(config: Config, options: BuildOptions, logger: Logger, database: Database, redis: Redis | undefined, metrics: Metrics): Promise<KeelApp> {
  const shutdown = new AbortController();
  const lifecycle: Lifecycle = {
    get draining() {
      return shutdown.signal.aborted;
    },
    signal: shutdown.signal,
  };
  const erasure = new ErasureRegistry();
  const mailer = createMailer({ smtpUrl: config.smtpUrl, from: config.mailFrom, dataDir: config.dataDir, logger });
  const auth = new AuthService(database.db, config, mailer, erasure, logger);
  const guards = createGuards(auth.authenticate);
  const usage = createUsage(database, config.llm.limits);
  const gateway = new LlmGateway(config.llm, createProviders(config.llm), usage.service, logger);
  const pubsub = createPubSub(config, logger);
  const chat = new ChatService(database.db, gateway, pubsub, logger, { maxMessageChars: config.chat.maxMessageChars, defaultPreset: config.chat.defaultPreset, titlePreset: config.chat.titlePreset });
  const jobs = new JobQueue(database, logger, config.jobs, metrics);
  const context: ModuleContext = { config, database, redis, logger, metrics, lifecycle, version: VERSION, guards, erasure, mailer, pubsub, jobs };
  const knowledge = await createKnowledge({ config, database, jobs, gateway, logger });
  chat.useRetriever(knowledge);

  const app = Fastify({
    loggerInstance: logger,
    genReqId: requestIdFor,
    requestIdHeader: false,
    logController: new AccessLog(),
    bodyLimit: config.bodyLimitBytes,
    trustProxy: config.trustProxy,
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as FastifyInstance;
  app.setValidatorCompiler(schemaCompiler());

  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    done();
  });
  // While draining, each finished response closes its connection, so keep-alive clients move to
  // another instance and the process is not held open by idle sockets until the deadline.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (shutdown.signal.aborted) void reply.header('connection', 'close');
    done(null, payload);
  });
  instrumentRequests(app, metrics);
  await installSecurity(app, config);
  await installRateLimit(app, config, redis);
  await installOpenApi(app, config, VERSION);
  const web = await installWebConsole(app, config.webDir);
  installErrorHandling(app, config, web.serveIndex);

  for (const mod of [...modules({ auth, guards, usage: usage.module, gateway, chat, knowledge }), ...(options.extraModules ?? [])]) {
    await app.register(async (scope) => mod(scope, context));
  }

  app.addHook('onClose', async () => {
    // Jobs and generations still running are stopped and stored before the database closes.
    await Promise.all([jobs.stop(config.shutdownTimeoutMs), chat.shutdown()]);
    // Usage rows are written just after their responses; the last ones land before the database closes.
    await gateway.drain();
    await Promise.allSettled([database.close(), redis ? closeRedis(redis) : undefined, pubsub.close()]);
  });
  await app.ready();
  // Every module has registered its job handlers by now.
  jobs.start();
  await knowledge.afterStart();
  return {
    app, context, services: { chat, knowledge },
    beginShutdown: () => {
      shutdown.abort();
      // Draining: stop claiming and hand running jobs back now; onClose waits for the same stop.
      void jobs.stop(config.shutdownTimeoutMs);
    },
  };
}
