import type { Logger } from 'pino';
import type { Principal } from '../../platform/auth.js';
import type { LlmGateway, MeteredUsage } from '../llm/llm.service.js';
import type { KnowledgeService, SearchResult } from './knowledge.service.js';
import type { WebSearch } from './web-search/index.js';

export interface Citation {
  n: number;
  chunk_id: string | null;
  document_id: string | null;
  filename: string;
  text: string;
  /** Set for a web result (the optional web-search fallback). */
  url?: string;
}

export interface AnswerInput {
  query: string;
  collectionIds?: readonly string[];
  limit: number;
}

export interface AnswerUsage {
  prompt_tokens: number;
  completion_tokens: number;
  estimated: boolean;
  cost_usd: number;
}

/** What `/search/llm` streams: the sources first, then the answer's text, then the totals. */
export type AnswerEvent =
  | { type: 'citations'; citations: Citation[] }
  | { type: 'delta'; text: string }
  | { type: 'done'; answer: string; citations: Citation[]; usage: AnswerUsage | null };

export const NOTHING_FOUND = 'I could not find anything relevant to that in your documents, so I cannot answer it from them.';

const INSTRUCTIONS = [
  'Answer the question using only the numbered sources below.',
  'After each statement, cite the sources that support it as [n], for example [1] or [2][3].',
  'If the sources do not contain the answer, say plainly that the documents do not say, and do not guess.',
  'Never cite a number that is not in the list.',
].join(' ');

/**
 * Answers a question from the caller's documents: retrieve, then ask the configured preset with the
 * passages numbered, so `[n]` in the answer is `citations[n-1]` (n counts from 1). When nothing
 * relevant is found (and no web search is configured) it says so without calling a model at all.
 */
export class AnswerService {
  constructor(
    private readonly knowledge: KnowledgeService,
    private readonly gateway: LlmGateway,
    private readonly webSearch: { readonly client: WebSearch; readonly maxResults: number } | undefined,
    private readonly preset: string,
    private readonly logger: Logger,
  ) {}

  async *answer(principal: Principal, input: AnswerInput, meta: { requestId: string; signal: AbortSignal; endpoint: string }): AsyncGenerator<AnswerEvent> {
    const citations = await this.sources(principal, input, meta.signal);
    yield { type: 'citations', citations };
    if (citations.length === 0) {
      yield { type: 'delta', text: NOTHING_FOUND };
      yield { type: 'done', answer: NOTHING_FOUND, citations, usage: null };
      return;
    }
    const request = {
      model: this.preset,
      messages: [
        { role: 'system' as const, content: `${INSTRUCTIONS}\n\n${citations.map(formatSource).join('\n\n')}` },
        { role: 'user' as const, content: input.query },
      ],
    };
    const stream = await this.gateway.stream(principal, request, { endpoint: meta.endpoint, requestId: meta.requestId, signal: meta.signal });
    let answer = '';
    for await (const chunk of stream) {
      const text = chunk.choices.map((c) => (typeof c.delta.content === 'string' ? c.delta.content : '')).join('');
      if (text) {
        answer += text;
        yield { type: 'delta', text };
      }
    }
    const usage = await stream.metered;
    yield { type: 'done', answer, citations, usage: toUsage(usage) };
  }

  private async sources(principal: Principal, input: AnswerInput, signal: AbortSignal): Promise<Citation[]> {
    const found = await this.knowledge.relevant(principal, input.query, input.collectionIds ?? [], input.limit, signal);
    if (found.length > 0) return found.map(toCitation);
    if (!this.webSearch) return [];
    try {
      const web = await this.webSearch.client.search(input.query, { limit: Math.min(input.limit, this.webSearch.maxResults), signal });
      return web.map((r, i) => ({ n: i + 1, chunk_id: null, document_id: null, filename: r.title, text: r.snippet, url: r.url }));
    } catch (err) {
      // The fallback is a bonus: when it is down, the answer is "nothing found", not an error.
      this.logger.warn({ err }, 'web search fallback failed');
      return [];
    }
  }
}

function toCitation(r: SearchResult, i: number): Citation {
  return { n: i + 1, chunk_id: r.chunk_id, document_id: r.document_id, filename: r.filename, text: r.text };
}

function formatSource(c: Citation): string {
  return `[${c.n}] ${c.filename}${c.url ? ` (${c.url})` : ''}\n${c.text}`;
}

function toUsage(u: MeteredUsage): AnswerUsage {
  return { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, estimated: u.estimated, cost_usd: u.cost_usd };
}
