/** The optional web-search fallback. Read once by {@link readWebSearchConfig}, frozen. */
export interface WebSearchConfig {
  /** Base URL of a self-hosted SearXNG instance, no trailing slash; undefined → web search off. */
  readonly url: string | undefined;
  readonly timeoutMs: number;
  /** Most web results used in one answer. */
  readonly maxResults: number;
}

/** The variables {@link readWebSearchConfig} reads, in the shape of config.ts's CONFIG_VARIABLES. */
export const WEB_SEARCH_VARIABLES: ReadonlyArray<{ name: string; default: string; description: string }> = [
  { name: 'WEB_SEARCH_URL', default: '(none: web search off)', description: 'A self-hosted SearXNG instance (e.g. `http://localhost:8888`, with `json` in `search.formats` of its settings.yml) that `POST /search/llm` answers from when the documents have nothing relevant.' },
  { name: 'WEB_SEARCH_TIMEOUT_MS', default: '10000', description: 'Longest wait for one web search.' },
  { name: 'WEB_SEARCH_MAX_RESULTS', default: '5', description: 'Most web results used in one answer.' },
  { name: 'ENABLE_WEB_SEARCH', default: '(on when WEB_SEARCH_URL is set)', description: 'Seed 002\'s switch: `false` turns web search off even with `WEB_SEARCH_URL`; `true` without `WEB_SEARCH_URL` is an error.' },
];

export class WebSearchConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Web search configuration is invalid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'WebSearchConfigError';
  }
}

/** Reads WEB_SEARCH_* (and ENABLE_WEB_SEARCH) from an environment; throws WebSearchConfigError listing every problem. */
export function readWebSearchConfig(env: Record<string, string | undefined>): WebSearchConfig {
  const problems: string[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === '' ? undefined : v;
  };
  const number = (name: string, def: number, min: number, max: number, integer: boolean): number => {
    const raw = get(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      problems.push(`${name} must be a ${integer ? 'whole ' : ''}number between ${min} and ${max} (got "${raw}").`);
      return def;
    }
    return n;
  };

  let url = get('WEB_SEARCH_URL')?.replace(/\/+$/, '').replace(/\/search$/, '');
  const enabledRaw = get('ENABLE_WEB_SEARCH')?.toLowerCase();
  if (enabledRaw !== undefined) {
    if (['0', 'false', 'no', 'off'].includes(enabledRaw)) url = undefined;
    else if (!['1', 'true', 'yes', 'on'].includes(enabledRaw)) problems.push(`ENABLE_WEB_SEARCH must be true or false (got "${enabledRaw}").`);
    else if (url === undefined) problems.push('ENABLE_WEB_SEARCH is true but WEB_SEARCH_URL is not set: point it at a self-hosted SearXNG instance (or set ENABLE_WEB_SEARCH=false).');
  }
  if (url !== undefined) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      problems.push(`WEB_SEARCH_URL is not a URL (got "${url}").`);
    }
    if (parsed && parsed.protocol !== 'http:' && parsed.protocol !== 'https:') problems.push('WEB_SEARCH_URL must be an http:// or https:// URL.');
    if (parsed && (parsed.username !== '' || parsed.password !== '')) problems.push('WEB_SEARCH_URL must not contain credentials.');
    if (parsed?.search) problems.push('WEB_SEARCH_URL must not contain a query string: give the SearXNG base URL.');
  }
  const config: WebSearchConfig = {
    url,
    timeoutMs: number('WEB_SEARCH_TIMEOUT_MS', 10_000, 100, 600_000, true),
    maxResults: number('WEB_SEARCH_MAX_RESULTS', 5, 1, 50, true),
  };
  if (problems.length > 0) throw new WebSearchConfigError(problems);
  return Object.freeze(config);
}
