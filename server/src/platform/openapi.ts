import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

/** Collects route schemas into an OpenAPI 3.1 document; call before any route is registered. */
export async function installOpenApi(app: FastifyInstance, config: Pick<Config, 'docsEnabled'>, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Keel API',
        version,
        description: 'The self-hosted backend for AI apps. Errors everywhere share one shape: `{ error: { code, message, type, request_id, details? } }`.',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'A Keel access token (JWT) or API key.' },
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        },
      },
      tags: [{ name: 'operations', description: 'Health, readiness, metrics' }, { name: 'identity', description: 'Accounts, sessions, devices, API keys, 2FA' }, { name: 'llm', description: 'The LLM gateway: OpenAI-compatible endpoints and presets' }, { name: 'usage', description: 'Metered usage and limits' }],
    },
  });
  if (!config.docsEnabled) return;
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true, uiConfig: { docExpansion: 'list', deepLinking: true } });
  app.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, () => Promise.resolve(app.swagger()));
}
