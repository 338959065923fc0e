import type { Database } from '../../db/database.js';
import type { KeelModule } from '../../platform/module.js';
import { usageRoutes } from './usage.routes.js';
import { UsageService, type Limits } from './usage.service.js';

/** The configured limits: `config.llm.limits` (`LlmConfig.limits`) fits as is. */
export interface UsageLimits {
  readonly user: Limits;
  readonly apiKey: Limits;
}

/**
 * Wiring: one UsageService per process serves both the gateway (which reserves and settles) and the
 * usage routes. In app.ts, where the database is open before any module is registered:
 *
 *     const usage = createUsage(database, config.llm.limits);
 *     const gateway = new LlmGateway(config.llm, providers, usage.service, logger);
 *     // modules: …, usage.module, llmModule(gateway)
 */
export function createUsage(database: Pick<Database, 'db' | 'dialect'>, limits: UsageLimits): { service: UsageService; module: KeelModule } {
  const service = new UsageService(database.db, limits, database.dialect);
  return { service, module: usageModule(service) };
}

/** The usage routes (`GET /usage`, `GET /usage/logs`, `GET /admin/usage`) over an existing service. */
export function usageModule(usage: UsageService): KeelModule {
  return async (app, ctx) => {
    await usageRoutes(app, ctx, usage);
  };
}
