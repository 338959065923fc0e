import type { KeelModule } from '../../platform/module.js';
import { llmRoutes } from './llm.routes.js';
import type { LlmGateway } from './llm.service.js';

/** The LLM gateway module: OpenAI-compatible `/v1/*` and the preset routes. */
export function llmModule(gateway: LlmGateway): KeelModule {
  return async (app, ctx) => {
    await llmRoutes(app, ctx, gateway, ctx.config.llm.heartbeatSeconds * 1000);
  };
}
