import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createWebSearch, readWebSearchConfig, type WebSearch, type WebSearchConfig } from '../../../src/modules/knowledge/web-search/index.js';
import { AppError } from '../../../src/platform/errors.js';
import { createLogger } from '../../../src/platform/logger.js';
import { startFakeSearxng, type FakeSearxng } from '../../helpers/fake-searxng.js';

let fake: FakeSearxng;
let logLines: string[] = [];
const logger = createLogger({ logLevel: 'debug' }, { write: (line: string) => void logLines.push(line) });

function search(overrides: Partial<WebSearchConfig> = {}): WebSearch {
  const ws = createWebSearch({ url: fake.url, timeoutMs: 2000, maxResults: 5, ...overrides }, logger);
  if (!ws) throw new Error('expected web search');
  return ws;
}

async function failure(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  fake = await startFakeSearxng();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => {
  fake.reset();
  logLines = [];
});

describe('SearXNG web search', () => {
  it('asks /search with q and format=json, and maps results to title, url and snippet', async () => {
    fake.setResults([
      { url: 'https://en.wikipedia.org/wiki/Car', title: '  Car -\n Wikipedia ', content: 'A car is a\tmotor vehicle with wheels.' },
      { url: 'https://example.org/no-snippet', title: 'No snippet' },
    ]);
    const results = await search().search('what is a car?', { limit: 5 });
    expect(results).toEqual([
      { title: 'Car - Wikipedia', url: 'https://en.wikipedia.org/wiki/Car', snippet: 'A car is a motor vehicle with wheels.' },
      { title: 'No snippet', url: 'https://example.org/no-snippet', snippet: '' },
    ]);
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]).toMatchObject({ method: 'GET', path: '/search', query: { q: 'what is a car?', format: 'json' } });
  });

  it('honours the limit, drops duplicate and non-http URLs, and keeps the engine order', async () => {
    expect((await search().search('keel backend', { limit: 3 })).map((r) => r.url)).toEqual([
      'https://example.com/keel-backend/1', 'https://example.com/keel-backend/2', 'https://example.com/keel-backend/3',
    ]);
    fake.setResults([
      { url: 'javascript:alert(1)', title: 'bad' },
      { url: 'https://a.example/', title: 'A' },
      { url: 'https://a.example/', title: 'A again' },
      { url: 'https://b.example/', title: '' },
    ]);
    expect(await search().search('x', { limit: 10 })).toEqual([
      { title: 'A', url: 'https://a.example/', snippet: '' },
      { title: 'https://b.example/', url: 'https://b.example/', snippet: '' },
    ]);
  });

  it('asks nothing for an empty query or a zero limit', async () => {
    expect(await search().search('   ', { limit: 5 })).toEqual([]);
    expect(await search().search('x', { limit: 0 })).toEqual([]);
    expect(fake.requests).toHaveLength(0);
  });

  it('times out a slow instance as web_search_unavailable (504), logging the host but not the query', async () => {
    fake.delayMs = 1000;
    const err = await failure(search({ timeoutMs: 100 }).search('a very private question', { limit: 5 }));
    expect(err).toMatchObject({ code: 'web_search_unavailable', statusCode: 504 });
    expect(err.message).toContain('100 ms');
    expect(logLines.join('\n')).toContain(new URL(fake.url).host);
    expect(logLines.join('\n')).not.toContain('private question');
  });

  it('explains a 403 (JSON not enabled), and maps other failures', async () => {
    fake.jsonEnabled = false;
    const forbidden = await failure(search().search('x', { limit: 5 }));
    expect(forbidden).toMatchObject({ code: 'web_search_unavailable', statusCode: 502 });
    expect(forbidden.message).toContain('search.formats');

    fake.reset();
    fake.failNext(1, 500);
    expect(await failure(search().search('x', { limit: 5 }))).toMatchObject({ code: 'web_search_unavailable', statusCode: 502 });
    fake.failNext(1, 429);
    expect(await failure(search().search('x', { limit: 5 }))).toMatchObject({ code: 'web_search_unavailable', statusCode: 503 });

    const down = createWebSearch({ url: `http://127.0.0.1:${await closedPort()}`, timeoutMs: 2000, maxResults: 5 }, logger)!;
    expect(await failure(down.search('x', { limit: 5 }))).toMatchObject({ code: 'web_search_unavailable', statusCode: 503 });
  });

  it('stops when the signal is aborted', async () => {
    fake.delayMs = 5000;
    const controller = new AbortController();
    const pending = search().search('x', { limit: 5, signal: controller.signal });
    await expect.poll(() => fake.requests.length).toBe(1);
    controller.abort();
    expect(await failure(pending)).toMatchObject({ code: 'web_search_aborted', statusCode: 499 });
    await expect.poll(() => fake.requests[0]!.abortedAt).toBeDefined();
  });

  it('is off when WEB_SEARCH_URL is unset', () => {
    expect(createWebSearch(readWebSearchConfig({}), logger)).toBeUndefined();
    expect(createWebSearch(readWebSearchConfig({ WEB_SEARCH_URL: fake.url }), logger)).toBeDefined();
  });
});
