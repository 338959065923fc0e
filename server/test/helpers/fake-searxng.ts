import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake SearXNG instance on a loopback port, speaking its JSON API:
 *
 * - `GET /search?q=…&format=json` → `{query, number_of_results, results: [{url, title, content, engine, engines,
 *   positions, score, category, parsed_url, template, publishedDate}], answers, corrections, infoboxes, suggestions,
 *   unresponsive_engines}`. Results come from `setResults` (a list or a function of the query), else
 *   {@link defaultResults}. Without `format=json` the answer is an HTML page; with `jsonEnabled: false` a
 *   `format=json` request gets 403, as a real instance whose settings.yml lacks `json` in `search.formats`.
 *   An empty `q` gets 400.
 * - `GET /healthz` → `OK`; anything else 404.
 */

export interface FakeSearxngResult {
  url: string;
  title: string;
  content?: string;
  engine?: string;
}

export interface FakeSearxngRequest {
  method: string;
  path: string;
  /** The query-string parameters (last value wins). */
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  receivedAt: number;
  /** Set when the client went away before the answer was complete. */
  abortedAt?: number;
}

export interface FakeSearxngOptions {
  results?: FakeSearxngResult[] | ((query: string) => FakeSearxngResult[]);
  /** Default true; false answers `format=json` with 403. */
  jsonEnabled?: boolean;
}

export interface FakeSearxng {
  /** Base URL without a trailing slash (what WEB_SEARCH_URL takes). */
  readonly url: string;
  readonly requests: FakeSearxngRequest[];
  setResults(results: FakeSearxngResult[] | ((query: string) => FakeSearxngResult[])): void;
  /** Settable: false makes `format=json` requests get 403. */
  jsonEnabled: boolean;
  /** Wait this long before answering each search. Settable; default 0. */
  delayMs: number;
  /** Answer the next `count` searches with `status` (default 500), an HTML error page as SearXNG sends. */
  failNext(count: number, status?: number): void;
  /** Forget requests, failures and delay; results and jsonEnabled back to the start options. */
  reset(): void;
  /** Stop listening and drop every connection. */
  close(): Promise<void>;
}

/** What the fake answers for `query` without `setResults`: ten results on example.com naming the query. */
export function defaultResults(query: string): FakeSearxngResult[] {
  const slug = query.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'empty';
  return Array.from({ length: 10 }, (_, i) => ({
    url: `https://example.com/${slug}/${i + 1}`,
    title: `Result ${i + 1} for ${query}`,
    content: `A page about ${query}, number ${i + 1}.`,
    engine: i % 2 === 0 ? 'duckduckgo' : 'wikipedia',
  }));
}

/** Starts the fake on 127.0.0.1 and an ephemeral port. */
export async function startFakeSearxng(options: FakeSearxngOptions = {}): Promise<FakeSearxng> {
  const requests: FakeSearxngRequest[] = [];
  let results = options.results;
  let jsonEnabled = options.jsonEnabled ?? true;
  let delayMs = 0;
  let failures: number[] = [];

  function send(res: ServerResponse, status: number, contentType: string, body: string): void {
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  function page(res: ServerResponse, status: number, title: string): void {
    send(res, status, 'text/html; charset=utf-8', `<!DOCTYPE html><html><head><title>${title}</title></head><body><h1>${title}</h1></body></html>`);
  }

  async function search(res: ServerResponse, rec: FakeSearxngRequest): Promise<void> {
    if (delayMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        res.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (res.destroyed) return;
    const failure = failures.shift();
    if (failure !== undefined) return page(res, failure, `${failure} Error - SearXNG`);
    const q = rec.query.q ?? '';
    const json = rec.query.format === 'json';
    if (json && !jsonEnabled) return page(res, 403, '403 Forbidden');
    if (q.trim() === '') return json ? send(res, 400, 'text/plain', 'Bad Request') : page(res, 200, 'SearXNG');
    if (!json) return page(res, 200, `${q} - SearXNG`);
    const list = typeof results === 'function' ? results(q) : results ?? defaultResults(q);
    const body = {
      query: q,
      number_of_results: list.length,
      results: list.map((r, i) => {
        const engine = r.engine ?? 'duckduckgo';
        let parsed: string[] = [];
        try {
          const u = new URL(r.url);
          parsed = [u.protocol.replace(':', ''), u.host, u.pathname, '', u.search.replace(/^\?/, ''), u.hash.replace(/^#/, '')];
        } catch {
          parsed = [];
        }
        return {
          url: r.url, title: r.title, content: r.content ?? '', engine, engines: [engine], positions: [i + 1],
          score: 1 / (i + 1), category: 'general', parsed_url: parsed, template: 'default.html', publishedDate: null,
        };
      }),
      answers: [], corrections: [], infoboxes: [], suggestions: [], unresponsive_engines: [],
    };
    send(res, 200, 'application/json', JSON.stringify(body));
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    const rec: FakeSearxngRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { ...req.headers },
      receivedAt: Date.now(),
    };
    requests.push(rec);
    res.on('close', () => {
      if (!res.writableFinished) rec.abortedAt ??= Date.now();
    });
    req.resume();
    if (rec.method === 'GET' && (rec.path === '/search' || rec.path === '/search/')) {
      search(res, rec).catch(() => res.destroy());
      return;
    }
    if (rec.method === 'GET' && rec.path === '/healthz') return send(res, 200, 'text/plain', 'OK');
    page(res, 404, '404 Not Found');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setResults(r) {
      results = r;
    },
    get jsonEnabled() {
      return jsonEnabled;
    },
    set jsonEnabled(value: boolean) {
      jsonEnabled = value;
    },
    get delayMs() {
      return delayMs;
    },
    set delayMs(value: number) {
      delayMs = value;
    },
    failNext(count, status = 500) {
      for (let i = 0; i < count; i++) failures.push(status);
    },
    reset() {
      requests.length = 0;
      failures = [];
      delayMs = 0;
      jsonEnabled = options.jsonEnabled ?? true;
      results = options.results;
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
