import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { loadConfig, type Config } from '../../src/config.js';
import type { KeelModule } from '../../src/platform/module.js';
import { serve, type RunningServer } from '../../src/serve.js';
import type { TestDatabase } from './databases.js';
import { appendLog, logFile, rememberSecretsIn } from './leaks.js';

export interface TestServer {
  readonly url: string;
  readonly server: RunningServer;
  readonly config: Config;
  /** Every log line the server wrote, as parsed JSON. */
  readonly logs: Array<Record<string, unknown>>;
  /** The raw log text, for "never appears in the logs" checks. */
  logText(): string;
  close(): Promise<void>;
}

/** Test configuration: a real config object from a test environment, not a hand-made literal. */
export function testConfig(db: TestDatabase, env: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    SECRET_KEY: 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz',
    RATE_LIMIT_MAX: '100000',
    AUTH_RATE_LIMIT_MAX: '100000',
    ...db.env,
    ...env,
  }, { persistDevSecret: false });
}

/** Starts a real Keel server on a loopback port, logging into memory. */
export async function startServer(db: TestDatabase, env: Record<string, string> = {}, extraModules: KeelModule[] = []): Promise<TestServer> {
  const config = testConfig(db, env);
  const chunks: string[] = [];
  const file = logFile(randomUUID());
  const logStream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = chunk.toString('utf8');
      chunks.push(text);
      appendLog(file, text);
      cb();
    },
  });
  const server = await serve(config, { logStream, extraModules });
  const logText = (): string => chunks.join('');
  return {
    url: server.url,
    server,
    config,
    get logs() {
      return logText().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    logText,
    close: () => server.stop('test'),
  };
}

export interface JsonResponse<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
}

/** fetch + JSON parse, for readable assertions. */
export async function request<T = Record<string, unknown>>(url: string, init: RequestInit & { json?: unknown } = {}): Promise<JsonResponse<T>> {
  const { json, ...rest } = init;
  rememberSecretsIn(json);
  const res = await fetch(url, {
    ...rest,
    ...(json !== undefined ? { body: JSON.stringify(json), headers: { 'content-type': 'application/json', ...(rest.headers as Record<string, string> | undefined) } } : {}),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
    rememberSecretsIn(body);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: body as T };
}

/** The API.md error shape, asserted field by field. */
export function expectErrorShape(body: unknown): { code: string; message: string; type: string; request_id: string; details?: Array<Record<string, unknown>> } {
  const err = (body as { error?: Record<string, unknown> }).error;
  if (!err || typeof err.code !== 'string' || typeof err.message !== 'string' || typeof err.type !== 'string' || typeof err.request_id !== 'string') {
    throw new Error(`not the API.md error shape: ${JSON.stringify(body)}`);
  }
  return err as ReturnType<typeof expectErrorShape>;
}
