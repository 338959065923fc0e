import type { FastifyBaseLogger } from 'fastify';
import type { Config } from './config.js';
import { buildApp, type BuildOptions, type KeelApp } from './app.js';

export interface RunningServer {
  readonly keel: KeelApp;
  readonly url: string;
  /** Graceful stop: drain, finish in-flight requests and streams up to the deadline, close the database. */
  stop(reason?: string): Promise<void>;
}

/**
 * Builds Keel and listens on HOST:PORT. With `handleSignals`, the first SIGTERM/SIGINT stops it
 * gracefully and exits; a second one exits at once.
 */
export async function serve(config: Config, options: BuildOptions & { handleSignals?: boolean } = {}): Promise<RunningServer> {
  const keel = await buildApp(config, options);
  const { app } = keel;
  const url = await app.listen({ host: config.host, port: config.port });
  app.log.info({ url, database: config.database.kind, env: config.env, redis: Boolean(config.redisUrl) }, 'keel listening');

  let stopping: Promise<void> | undefined;
  const stop = (reason = 'stop'): Promise<void> => {
    stopping ??= (async () => {
      app.log.info({ reason, deadline_ms: config.shutdownTimeoutMs }, 'shutting down: no new connections, finishing in-flight requests');
      keel.beginShutdown();
      // Past the deadline, whatever is still open (a stalled stream, a slow client) is cut so the
      // process can exit; before it, requests and streams finish normally.
      const deadline = setTimeout(() => {
        app.log.warn('shutdown deadline reached: closing remaining connections');
        app.server.closeAllConnections();
      }, config.shutdownTimeoutMs);
      deadline.unref();
      // Connections that turn idle after close() began (a response just finished) are closed too.
      const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
      sweep.unref();
      try {
        await app.close();
      } finally {
        clearTimeout(deadline);
        clearInterval(sweep);
      }
      app.log.info('shutdown complete');
    })();
    return stopping;
  };

  if (options.handleSignals) exitOnSignals(app.log, stop, () => stopping !== undefined);
  return { keel, url, stop };
}

/**
 * SIGTERM and SIGINT run `stop` once and exit 0 (1 if it failed); a second signal while stopping
 * exits at once. Shared by `keel serve` and `keel worker`.
 */
export function exitOnSignals(log: FastifyBaseLogger, stop: (reason: string) => Promise<void>, isStopping: () => boolean): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    if (isStopping()) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stop(signal).then(() => process.exit(0), (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
