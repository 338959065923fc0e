import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * A Redis client for shared state across Keel instances. Commands fail fast while Redis is down
 * (no offline queue, one retry) so callers can degrade instead of hanging; the client keeps
 * reconnecting in the background.
 */
export function createRedis(url: string, logger: Logger, name = 'keel'): Redis {
  const client = new Redis(url, {
    connectionName: name,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  let lastLogged = 0;
  client.on('error', (err: Error) => {
    // Reconnect attempts repeat the same error; log at most every 10 s.
    if (Date.now() - lastLogged > 10_000) {
      lastLogged = Date.now();
      logger.warn({ err: { message: err.message } }, 'redis unavailable');
    }
  });
  return client;
}

/** Resolves once the client is connected, or rejects after `timeoutMs`. */
export async function waitForRedis(client: Redis, timeoutMs = 3000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
  });
}

/** Closes politely when connected, and stops reconnect attempts either way. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  client.disconnect();
}
