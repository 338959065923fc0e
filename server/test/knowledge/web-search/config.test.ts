import { describe, expect, it } from 'vitest';
import { readWebSearchConfig, WEB_SEARCH_VARIABLES, WebSearchConfigError } from '../../../src/modules/knowledge/web-search/index.js';

function problemsOf(env: Record<string, string>): string[] {
  try {
    readWebSearchConfig(env);
    return [];
  } catch (err) {
    if (err instanceof WebSearchConfigError) return [...err.problems];
    throw err;
  }
}

describe('readWebSearchConfig', () => {
  it('is off by default, with the documented defaults, frozen', () => {
    const config = readWebSearchConfig({});
    expect(config).toEqual({ url: undefined, timeoutMs: 10_000, maxResults: 5 });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('takes the SearXNG base URL (a trailing slash or /search is dropped) and the numbers', () => {
    expect(readWebSearchConfig({ WEB_SEARCH_URL: 'http://searx:8080/', WEB_SEARCH_TIMEOUT_MS: '2500', WEB_SEARCH_MAX_RESULTS: '8' }))
      .toEqual({ url: 'http://searx:8080', timeoutMs: 2500, maxResults: 8 });
    expect(readWebSearchConfig({ WEB_SEARCH_URL: 'https://example.org/searxng/search' }).url).toBe('https://example.org/searxng');
  });

  it('follows seed 002\'s ENABLE_WEB_SEARCH switch', () => {
    expect(readWebSearchConfig({ WEB_SEARCH_URL: 'http://searx:8080', ENABLE_WEB_SEARCH: 'false' }).url).toBeUndefined();
    expect(readWebSearchConfig({ WEB_SEARCH_URL: 'http://searx:8080', ENABLE_WEB_SEARCH: 'true' }).url).toBe('http://searx:8080');
    expect(problemsOf({ ENABLE_WEB_SEARCH: 'true' })).toEqual([expect.stringContaining('WEB_SEARCH_URL is not set')]);
    expect(problemsOf({ ENABLE_WEB_SEARCH: 'sometimes' })).toEqual([expect.stringContaining('true or false')]);
  });

  it('reports every problem at once, naming the variable', () => {
    const problems = problemsOf({ WEB_SEARCH_URL: 'searx', WEB_SEARCH_TIMEOUT_MS: 'soon', WEB_SEARCH_MAX_RESULTS: '0' });
    expect(problems).toHaveLength(3);
    for (const name of ['WEB_SEARCH_URL', 'WEB_SEARCH_TIMEOUT_MS', 'WEB_SEARCH_MAX_RESULTS']) expect(problems.join('\n')).toContain(name);
    expect(problemsOf({ WEB_SEARCH_URL: 'ftp://searx' })).toEqual([expect.stringContaining('http:// or https://')]);
    expect(problemsOf({ WEB_SEARCH_URL: 'http://u:p@searx' })).toEqual([expect.stringContaining('credentials')]);
    expect(problemsOf({ WEB_SEARCH_URL: 'http://searx/?q=x' })).toEqual([expect.stringContaining('query string')]);
  });

  it('lists every variable it reads, in the CONFIG_VARIABLES shape', () => {
    expect(WEB_SEARCH_VARIABLES.map((v) => v.name)).toEqual(['WEB_SEARCH_URL', 'WEB_SEARCH_TIMEOUT_MS', 'WEB_SEARCH_MAX_RESULTS', 'ENABLE_WEB_SEARCH']);
    for (const v of WEB_SEARCH_VARIABLES) expect(Object.keys(v).sort()).toEqual(['default', 'description', 'name']);
  });
});
