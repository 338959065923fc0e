import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { expect } from 'vitest';
import type { TestServer } from '../helpers/server.js';

/**
 * Shared bits of the LLM gateway tests: a keel.config file in a temp dir, the usage rows of a user,
 * and a raw SSE reader that keeps the arrival time of every event (for flush and heartbeat checks).
 */

export interface ConfigFile {
  /** The absolute path, for KEEL_CONFIG. */
  readonly path: string;
  remove(): void;
}

/** Writes `content` as keel.config.yaml (or .json) in a fresh temp dir; a string is written as it is. */
export function writeKeelConfig(content: unknown, format: 'yaml' | 'json' = 'yaml'): ConfigFile {
  const dir = mkdtempSync(path.join(tmpdir(), 'keel-llm-config-'));
  const file = path.join(dir, `keel.config.${format}`);
  writeFileSync(file, typeof content === 'string' ? content : format === 'yaml' ? toYaml(content) : JSON.stringify(content, null, 2));
  return { path: file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A user's usage_events rows, oldest first. */
export function usageRows(s: TestServer, userId: string) {
  return s.server.keel.context.database.db.selectFrom('usage_events').selectAll().where('user_id', '=', userId).orderBy('id').execute();
}

/**
 * A user's usage rows once there are at least `count`: the gateway writes a call's row just after the
 * call's response ended (off the client's path), so a test reading it right after the response waits.
 */
export async function usageRowsWhen(s: TestServer, userId: string, count: number, timeoutMs = 5000): Promise<Awaited<ReturnType<typeof usageRows>>> {
  await expect.poll(async () => (await usageRows(s, userId)).length, { timeout: timeoutMs, interval: 10 }).toBeGreaterThanOrEqual(count);
  return usageRows(s, userId);
}

export interface TimedSse {
  readonly status: number;
  readonly headers: Headers;
  /** Milliseconds from sending the request until the response headers arrived. */
  readonly headersAt: number;
  /** The raw body as received. */
  readonly raw: string;
  /** Events and comments in order, each with the time (ms since the request was sent, and epoch) it was read. */
  readonly items: ReadonlyArray<{ kind: 'event'; event: string; data: string; at: number; epoch: number } | { kind: 'comment'; text: string; at: number; epoch: number }>;
  /** When the body ended (ms since the request was sent). */
  readonly endedAt: number;
}

/**
 * POSTs `json` and reads the SSE body chunk by chunk, noting when each event and comment arrived.
 * `onItem` may return 'stop' to walk away (the connection is destroyed). Uses node:http on a
 * connection of its own (no keep-alive pool), so walking away leaves nothing behind.
 */
export function readSse(url: string, headers: Record<string, string>, json: unknown, onItem?: (item: TimedSse['items'][number]) => 'stop' | void): Promise<TimedSse> {
  const sent = performance.now();
  const body = JSON.stringify(json);
  return new Promise<TimedSse>((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: false, headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      const headersAt = performance.now() - sent;
      const responseHeaders = new Headers();
      for (const [name, value] of Object.entries(res.headers)) if (value !== undefined) responseHeaders.set(name, Array.isArray(value) ? value.join(', ') : value);
      const items: Array<TimedSse['items'][number]> = [];
      let raw = '';
      let buffer = '';
      let stopped = false;
      const finish = (): void => resolve({ status: res.statusCode ?? 0, headers: responseHeaders, headersAt, raw, items, endedAt: performance.now() - sent });
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        if (stopped) return;
        raw += text;
        buffer += text;
        let boundary: number;
        while (!stopped && (boundary = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          const at = performance.now() - sent;
          const epoch = Date.now();
          const lines = block.split('\n');
          let item: TimedSse['items'][number];
          if (lines.every((l) => l.startsWith(':'))) item = { kind: 'comment', text: lines.map((l) => l.slice(1).trim()).join('\n'), at, epoch };
          else {
            const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? 'message';
            const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
            item = { kind: 'event', event, data, at, epoch };
          }
          items.push(item);
          if (onItem?.(item) === 'stop') {
            stopped = true;
            req.destroy();
            finish();
          }
        }
      });
      res.on('end', () => {
        if (!stopped) finish();
      });
      res.on('error', (err) => {
        if (!stopped) reject(err);
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A loopback port nothing listens on. */
export async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
