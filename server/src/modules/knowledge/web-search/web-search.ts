/** One web result, as the knowledge base cites it. */
export interface WebSearchResult {
  title: string;
  url: string;
  /** The engine's summary of the page; may be empty. */
  snippet: string;
}

/** Searches the public web; the knowledge base's fallback when a collection has nothing relevant. */
export interface WebSearch {
  /**
   * At most `limit` results, best first, distinct URLs (http/https only). An empty query gives [].
   * Throws AppError `web_search_unavailable` when the engine fails or times out, `web_search_aborted`
   * when `signal` fires.
   */
  search(query: string, options: { limit: number; signal?: AbortSignal }): Promise<WebSearchResult[]>;
}
