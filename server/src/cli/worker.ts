import { buildApp, type BuildOptions, type KeelApp } from '../app.js';
import type { Config } from '../config.js';
import { exitOnSignals } from '../serve.js';

export interface RunningWorker {
  readonly keel: KeelApp;
  /** Graceful stop: stop claiming, hand running jobs back (up to SHUTDOWN_TIMEOUT_MS), close the database. */
  stop(reason?: string): Promise<void>;
}

/**
 * `keel worker`: builds Keel exactly as `keel serve` does (migrations, every module registering its
 * job handlers) and runs JOB_WORKERS claim loops, without listening for HTTP. With `handleSignals`,
 * the first SIGTERM/SIGINT stops it gracefully and exits 0; a second one exits at once.
 */
export async function startWorker(config: Config, options: BuildOptions & { handleSignals?: boolean } = {}): Promise<RunningWorker> {
  if (config.jobs.workers < 1) throw new Error('keel worker needs JOB_WORKERS of at least 1 (it is 0).');
  const keel = await buildApp(config, options);
  const { app } = keel;
  app.log.info({ workers: config.jobs.workers, database: config.database.kind, env: config.env }, 'keel worker ready');

  let stopping: Promise<void> | undefined;
  const stop = (reason = 'stop'): Promise<void> => {
    stopping ??= (async () => {
      app.log.info({ reason, deadline_ms: config.shutdownTimeoutMs }, 'shutting down: no new jobs, finishing or handing back running ones');
      keel.beginShutdown();
      await app.close();
      app.log.info('shutdown complete');
    })();
    return stopping;
  };

  if (options.handleSignals) exitOnSignals(app.log, stop, () => stopping !== undefined);
  return { keel, stop };
}
