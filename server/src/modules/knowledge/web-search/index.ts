import type { Logger } from 'pino';
import { createSearxngSearch } from './searxng.js';
import type { WebSearchConfig } from './web-search.config.js';
import type { WebSearch } from './web-search.js';

export type { WebSearch, WebSearchResult } from './web-search.js';
export { readWebSearchConfig, WEB_SEARCH_VARIABLES, WebSearchConfigError, type WebSearchConfig } from './web-search.config.js';

/** The configured web search, or undefined when WEB_SEARCH_URL is unset (the default: off). Makes no request. */
export function createWebSearch(config: WebSearchConfig, logger: Logger): WebSearch | undefined {
  return config.url === undefined ? undefined : createSearxngSearch({ url: config.url, timeoutMs: config.timeoutMs }, logger);
}
