import type { ProviderConfig } from '../llm.config.js';
import {
  UpstreamError, upstreamErrorFor,
  type CallOptions, type ChatChunk, type ChatCompletion, type ChatRequest, type EmbeddingsRequest, type EmbeddingsResponse, type Provider,
} from './provider.js';

/**
 * Any OpenAI-compatible upstream (OpenAI, Groq, Mistral, Together, OpenRouter, Ollama, vLLM,
 * llama.cpp): the body passes through (tools, response_format… untouched); streams ask for the usage
 * chunk; connect and idle timeouts; retries with backoff on 429/5xx/network errors, only before the
 * first byte.
 */
export function createOpenAICompatibleProvider(config: ProviderConfig): Provider {
  const what = `${config.name} (${hostOf(config.baseUrl)})`;
  const headers = (): Record<string, string> => ({
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    ...(config.apiKey ? { authorization: `Bearer ${config.apiKey}` } : {}),
    ...config.headers,
  });

  /** POSTs (or GETs) with retries before the first byte; resolves with an OK response whose body is unread. */
  async function send(path: string, body: unknown, options: CallOptions, method = 'POST'): Promise<Response> {
    const { connectTimeoutMs, maxRetries, retryBaseMs } = config.resilience;
    for (let attempt = 0; ; attempt++) {
      const connect = new AbortController();
      const timer = setTimeout(() => connect.abort(), connectTimeoutMs);
      let response: Response;
      try {
        response = await fetch(`${config.baseUrl}${path}`, {
          method,
          headers: headers(),
          ...(method === 'POST' ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.any([options.signal, connect.signal]),
        });
      } catch (err) {
        clearTimeout(timer);
        if (options.signal.aborted) throw aborted();
        const failure = connect.signal.aborted
          ? new UpstreamError('upstream_timeout', `${what} did not answer within ${connectTimeoutMs} ms.`, 504, true)
          : new UpstreamError('upstream_unavailable', `${what} cannot be reached (${(err as { cause?: { code?: string } }).cause?.code ?? 'network error'}).`, 502, true);
        if (attempt < maxRetries) {
          await backoff(attempt, retryBaseMs, undefined, options.signal);
          continue;
        }
        throw failure;
      }
      clearTimeout(timer);
      if (response.ok) return response;
      const retryAfter = retryAfterSeconds(response.headers.get('retry-after'));
      // The upstream's body may echo keys or prompts: it is drained, never forwarded or logged.
      await response.body?.cancel().catch(() => undefined);
      const failure = upstreamErrorFor(response.status, what, retryAfter);
      if (failure.retryable && attempt < maxRetries) {
        await backoff(attempt, retryBaseMs, retryAfter, options.signal);
        continue;
      }
      throw failure;
    }
  }

  async function readJson<T>(response: Response, options: CallOptions): Promise<T> {
    const text = await withIdleTimeout(response.text(), config.resilience.idleTimeoutMs, options.signal, what);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new UpstreamError('upstream_error', `${what} answered with something that is not JSON.`, 502, false);
    }
  }

  return {
    name: config.name,
    kind: 'openai',
    async chat(request: ChatRequest, options: CallOptions): Promise<ChatCompletion> {
      const response = await send('/chat/completions', { ...request, stream: false }, options);
      return readJson<ChatCompletion>(response, options);
    },
    stream(request: ChatRequest, options: CallOptions): AsyncIterable<ChatChunk> {
      const body = { ...request, stream: true, stream_options: { ...(request.stream_options as object | undefined), include_usage: true } };
      return {
        [Symbol.asyncIterator]: () => sseChunks(send('/chat/completions', body, options), config.resilience.idleTimeoutMs, options.signal, what),
      };
    },
    async embeddings(request: EmbeddingsRequest, options: CallOptions): Promise<EmbeddingsResponse> {
      const response = await send('/embeddings', request, options);
      return readJson<EmbeddingsResponse>(response, options);
    },
    async check(options: CallOptions) {
      try {
        const response = await send('/models', undefined, options, 'GET');
        await response.body?.cancel();
        return { ok: true, detail: `${what} answers` };
      } catch (err) {
        return { ok: false, detail: (err as Error).message };
      }
    },
  };
}

/** Parses `data: {json}` events of an SSE body into chunks; `[DONE]` ends it; silence longer than idleMs fails. */
async function* sseChunks(responsePromise: Promise<Response>, idleMs: number, signal: AbortSignal, what: string): AsyncGenerator<ChatChunk> {
  const response = await responsePromise;
  if (!response.body) throw new UpstreamError('upstream_error', `${what} sent an empty stream.`, 502, false);
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { done, value } = await withIdleTimeout(reader.read(), idleMs, signal, what);
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let boundary: number;
      while ((boundary = buffer.search(/\r?\n\r?\n/)) !== -1) {
        const event = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, '');
        const data = event.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        if (!data) continue;
        if (data === '[DONE]') return;
        let parsed: ChatChunk & { error?: unknown };
        try {
          parsed = JSON.parse(data) as ChatChunk & { error?: unknown };
        } catch {
          throw new UpstreamError('upstream_error', `${what} sent a malformed stream event.`, 502, false);
        }
        if (parsed.error) throw new UpstreamError('upstream_error', `${what} reported an error mid-stream.`, 502, false);
        yield parsed;
      }
    }
    if (signal.aborted) throw aborted();
  } catch (err) {
    if (err instanceof UpstreamError) throw err;
    if (signal.aborted) throw aborted();
    throw new UpstreamError('upstream_unavailable', `${what} broke off the stream.`, 502, false);
  } finally {
    // Stops the upstream request when the consumer stops early (client gone, error, limit).
    await reader.cancel().catch(() => undefined);
  }
}

/** Awaits `promise`, failing with upstream_timeout after `ms` of silence or upstream_aborted on abort. */
async function withIdleTimeout<T>(promise: Promise<T>, ms: number, signal: AbortSignal, what: string): Promise<T> {
  if (signal.aborted) throw aborted();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new UpstreamError('upstream_timeout', `${what} went silent for ${ms} ms.`, 504, false)), ms);
        onAbort = () => reject(aborted());
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

function aborted(): UpstreamError {
  return new UpstreamError('upstream_aborted', 'The request was cancelled.', 499, false);
}

async function backoff(attempt: number, baseMs: number, retryAfterSeconds: number | undefined, signal: AbortSignal): Promise<void> {
  const computed = baseMs * 2 ** attempt * (0.5 + Math.random());
  const ms = retryAfterSeconds !== undefined && retryAfterSeconds <= 30 ? Math.max(retryAfterSeconds * 1000, computed) : computed;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(aborted());
    }, { once: true });
  });
}

function retryAfterSeconds(header: string | null): number | undefined {
  if (!header) return undefined;
  const n = Number(header);
  if (Number.isFinite(n)) return n;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.round((date - Date.now()) / 1000));
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
