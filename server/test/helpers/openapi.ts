import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/platform/logger.js';

/** The OpenAPI document of the app as built for production (no test probes), on an in-memory database. */
export async function generateOpenApi(): Promise<unknown> {
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: ':memory:', SECRET_KEY: 'openapi-generation-0123456789abcdefghijkl' }, { persistDevSecret: false });
  const { app } = await buildApp(config, { logger: createLogger({ logLevel: 'silent' }) });
  try {
    return app.swagger();
  } finally {
    await app.close();
  }
}
