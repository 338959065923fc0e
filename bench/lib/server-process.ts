import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

export const LOOPBACK = '127.0.0.1';

export interface ServerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** True when SIGTERM was not enough and the process had to be killed. */
  readonly killed: boolean;
}

export interface ServerProcess {
  /** e.g. http://127.0.0.1:43117 */
  readonly baseUrl: string;
  readonly pid: number | undefined;
  /** SIGTERM, wait for the exit (SIGKILL after `timeoutMs`). Safe to call more than once. */
  stop(timeoutMs?: number): Promise<ServerExit>;
}

export interface StartServerOptions {
  /** The built CLI, server/dist/main.js. */
  readonly entry: string;
  /** Working directory: a temp dir, so no stray `.env` is read. */
  readonly cwd: string;
  /** The complete environment of the child (HOST and PORT are added). */
  readonly env: Readonly<Record<string, string>>;
  readonly readyTimeoutMs?: number;
}

const STDERR_TAIL_BYTES = 16 * 1024;

/** The only variables a child (the server, the fake upstream) inherits, so a shell's or a `.env`'s Keel settings cannot skew a run. */
export const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'TZ'] as const;

/** `INHERITED_ENV` as set in this process. */
export function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of INHERITED_ENV) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/**
 * The server's complete environment (README "How the server is run"): production mode, a fresh
 * secret, no rate limiting, production's log level, `dataDir` as DATA_DIR, plus `extra` (the
 * database, and for the gateway suite the upstream).
 */
export function serverEnv(dataDir: string, extra: Readonly<Record<string, string>>): Record<string, string> {
  return {
    ...inheritedEnv(),
    NODE_ENV: 'production',
    SECRET_KEY: randomBytes(32).toString('hex'),
    CORS_ORIGINS: 'http://localhost',
    // The global limiter (600 requests a minute per address) would answer 429 to nearly all of a load
    // test, and the auth limits (20 a minute per address, per e-mail, per refresh token) to the rest.
    RATE_LIMIT_ENABLED: 'false',
    // Production's level, so the access log is written and costs what it costs; stdout goes to /dev/null.
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    ...extra,
  };
}

/** A TCP port nothing listens on right now (the OS picks it; the tiny race until the child binds is accepted). */
export async function freePort(host = LOOPBACK): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('could not read the port of a probe socket');
  return address.port;
}

/**
 * Starts `node <entry> serve` on a free loopback port and resolves once GET /ready answers 200.
 * Stdout (the JSON log) goes to /dev/null so logging costs what it costs in production without
 * the benchmark reading it; the tail of stderr is kept to explain a failed start.
 */
export async function startServer(options: StartServerOptions): Promise<ServerProcess> {
  const port = await freePort();
  const baseUrl = `http://${LOOPBACK}:${port}`;
  const child = spawn(process.execPath, [options.entry, 'serve'], {
    cwd: options.cwd,
    env: { ...options.env, HOST: LOOPBACK, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });

  let stderrTail = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-STDERR_TAIL_BYTES);
  });

  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve();
    });
    child.once('error', (err) => {
      spawnError = err;
      exitInfo ??= { code: null, signal: null };
      resolve();
    });
  });

  let stopping: Promise<ServerExit> | undefined;
  const stop = (timeoutMs = 20_000): Promise<ServerExit> => {
    stopping ??= (async () => {
      let killed = false;
      if (exitInfo === undefined) {
        child.kill('SIGTERM');
        const timer = new AbortController();
        const timedOut = await Promise.race([
          exited.then(() => false),
          delay(timeoutMs, true, { signal: timer.signal }),
        ]);
        timer.abort();
        if (timedOut && exitInfo === undefined) {
          killed = true;
          child.kill('SIGKILL');
          await exited;
        }
      }
      const info = exitInfo ?? { code: null, signal: null };
      return { ...info, killed };
    })();
    return stopping;
  };

  const describeFailure = (what: string): Error => {
    const why = spawnError ? ` (${spawnError.message})` : exitInfo ? ` (exited with ${exitInfo.signal ?? `code ${exitInfo.code}`})` : '';
    const tail = stderrTail.trim();
    return new Error(`${what}${why}${tail ? `\n--- server stderr ---\n${tail}` : ''}`);
  };

  try {
    await waitForReady(baseUrl, options.readyTimeoutMs ?? 30_000, () => exitInfo !== undefined);
  } catch (err) {
    if (exitInfo !== undefined) throw describeFailure('the server stopped before it was ready');
    await stop(5_000);
    throw describeFailure((err as Error).message);
  }
  return { baseUrl, pid: child.pid, stop };
}

/** Polls GET /ready until it answers 200, the process dies, or the deadline passes. */
async function waitForReady(baseUrl: string, timeoutMs: number, hasExited: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (hasExited()) throw new Error('the server exited');
    try {
      const res = await fetch(`${baseUrl}/ready`, { signal: AbortSignal.timeout(2_000) });
      const body = await res.text();
      if (res.status === 200) return;
      last = `GET /ready answered ${res.status}: ${body.slice(0, 300)}`;
    } catch (err) {
      last = `GET /ready failed: ${(err as Error).message}`;
    }
    await delay(100);
  }
  throw new Error(`the server was not ready within ${timeoutMs} ms (${last})`);
}
