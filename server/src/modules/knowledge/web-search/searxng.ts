import type { Logger } from 'pino';
import { AppError } from '../../../platform/errors.js';
import type { WebSearch, WebSearchResult } from './web-search.js';

/** Longest snippet kept from one result; SearXNG's `content` is normally a sentence or two. */
const MAX_SNIPPET_CHARS = 1000;

/**
 * Searches a self-hosted SearXNG instance: `GET {url}/search?q=…&format=json`, one page of results
 * (about ten), de-duplicated by URL, cut to `limit`. Failures are logged with the host and reason,
 * never the query, and thrown as AppError `web_search_unavailable` (or `web_search_aborted`).
 */
export function createSearxngSearch(config: { url: string; timeoutMs: number }, logger: Logger): WebSearch {
  const base = config.url.replace(/\/+$/, '');
  const host = hostOf(base);
  const what = `The web search (SearXNG at ${host})`;

  const failure = (reason: string, message: string, status: number, extra: Record<string, unknown> = {}): AppError => {
    logger.warn({ host, reason, ...extra }, 'web search failed');
    return new AppError('web_search_unavailable', message, status);
  };

  return {
    async search(query, { limit, signal }) {
      if (query.trim() === '' || limit <= 0) return [];
      if (signal?.aborted) throw aborted();
      const url = new URL(`${base}/search`);
      url.searchParams.set('q', query);
      url.searchParams.set('format', 'json');
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(), config.timeoutMs);
      let json: unknown;
      try {
        const response = await fetch(url, {
          headers: { accept: 'application/json', 'user-agent': 'Keel' },
          signal: signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal,
        });
        if (!response.ok) {
          await response.body?.cancel().catch(() => undefined);
          const status = response.status;
          if (status === 403) throw failure('forbidden', `${what} refused format=json: add \`json\` to \`search.formats\` in its settings.yml.`, 502, { status });
          if (status === 429) throw failure('rate_limited', `${what} is rate limiting Keel: exempt Keel's address in its limiter, or turn the limiter off for this private instance.`, 503, { status });
          throw failure('upstream_error', `${what} is unavailable (HTTP ${status}).`, 502, { status });
        }
        const text = await response.text();
        try {
          json = JSON.parse(text) as unknown;
        } catch {
          throw failure('bad_response', `${what} answered with something that is not JSON.`, 502);
        }
      } catch (err) {
        if (err instanceof AppError) throw err;
        if (signal?.aborted) throw aborted();
        if (timeout.signal.aborted) throw failure('timeout', `${what} did not answer within ${config.timeoutMs} ms.`, 504);
        const code = (err as { cause?: { code?: string } }).cause?.code ?? 'network error';
        throw failure('unreachable', `${what} cannot be reached (${code}).`, 503, { code });
      } finally {
        clearTimeout(timer);
      }
      const results = (json as { results?: unknown } | null)?.results;
      if (!Array.isArray(results)) throw failure('bad_response', `${what} answered without a results list.`, 502);
      return mapResults(results, limit);
    },
  };
}

function mapResults(results: unknown[], limit: number): WebSearchResult[] {
  const seen = new Set<string>();
  const out: WebSearchResult[] = [];
  for (const item of results) {
    if (out.length >= limit) break;
    const r = (item ?? {}) as { url?: unknown; title?: unknown; content?: unknown };
    if (typeof r.url !== 'string' || !/^https?:\/\//i.test(r.url) || seen.has(r.url)) continue;
    seen.add(r.url);
    const title = typeof r.title === 'string' ? clean(r.title) : '';
    const snippet = typeof r.content === 'string' ? clean(r.content).slice(0, MAX_SNIPPET_CHARS) : '';
    out.push({ title: title || r.url, url: r.url, snippet });
  }
  return out;
}

function clean(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function aborted(): AppError {
  return new AppError('web_search_aborted', 'The web search was cancelled.', 499);
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'invalid URL';
  }
}
