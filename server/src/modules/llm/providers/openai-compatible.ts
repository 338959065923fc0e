import type { ProviderConfig } from '../llm.config.js';
import { abortableSleep, backoffMs, parseRetryAfter } from '../../../platform/retry.js';
import {
  UpstreamError, upstreamErrorFor,
  type CallOptions, type ChatChunk, type ChatCompletion, type ChatRequest, type EmbeddingsRequest, type EmbeddingsResponse, type Provider, type RawStream,
} from './provider.js';
import { SseSplitter } from './sse-events.js';
import { createUpstreamClient, TransportError, type UpstreamClient, type UpstreamResponse } from './upstream-http.js';

/**
 * Any OpenAI-compatible upstream (OpenAI, Groq, Mistral, Together, OpenRouter, Ollama, vLLM,
 * llama.cpp): the body passes through (tools, response_format… untouched); streams ask for the usage
 * chunk; connect and idle timeouts; retries with backoff on 429/5xx/network errors, only before the
 * first byte. Calls share one keep-alive connection pool per provider.
 */
export function createOpenAICompatibleProvider(config: ProviderConfig, client: UpstreamClient = createUpstreamClient(config.baseUrl)): Provider {
  const what = `${config.name} (${hostOf(config.baseUrl)})`;
  const { connectTimeoutMs, idleTimeoutMs, maxRetries, retryBaseMs } = config.resilience;
  // The same for every call: built once.
  const headers: Readonly<Record<string, string>> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    ...(config.apiKey ? { authorization: `Bearer ${config.apiKey}` } : {}),
    ...config.headers,
  };

  /** POSTs (or GETs) with retries before the first byte; resolves with an OK response whose body is unread. */
  async function send(path: string, body: string | undefined, options: CallOptions): Promise<UpstreamResponse> {
    for (let attempt = 0; ; attempt++) {
      let response: UpstreamResponse;
      try {
        response = await client.send({ method: body === undefined ? 'GET' : 'POST', path, headers, body, signal: options.signal, connectTimeoutMs, idleTimeoutMs });
      } catch (err) {
        if (options.signal.aborted) throw aborted();
        const failure = transportFailure(err, what, connectTimeoutMs, idleTimeoutMs);
        if (failure.retryable && attempt < maxRetries) {
          await backoff(attempt, retryBaseMs, undefined, options.signal);
          continue;
        }
        throw failure;
      }
      if (response.status >= 200 && response.status < 300) return response;
      const retryAfter = parseRetryAfter(response.header('retry-after'));
      // The upstream's body may echo keys or prompts: it is dropped, never forwarded or logged.
      response.close();
      const failure = upstreamErrorFor(response.status, what, retryAfter);
      if (failure.retryable && attempt < maxRetries) {
        await backoff(attempt, retryBaseMs, retryAfter, options.signal);
        continue;
      }
      throw failure;
    }
  }

  async function readJson<T>(response: UpstreamResponse, options: CallOptions): Promise<T> {
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      throw options.signal.aborted ? aborted() : transportFailure(err, what, connectTimeoutMs, idleTimeoutMs);
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new UpstreamError('upstream_error', `${what} answered with something that is not JSON.`, 502, false);
    }
  }

  async function openStream(request: ChatRequest, options: CallOptions): Promise<RawStream> {
    const body = { ...request, stream: true, stream_options: { ...(request.stream_options as object | undefined), include_usage: true } };
    const response = await send('/chat/completions', JSON.stringify(body), options);
    return {
      async read() {
        if (options.signal.aborted) {
          response.close();
          throw aborted();
        }
        try {
          return await response.read();
        } catch (err) {
          throw options.signal.aborted ? aborted() : transportFailure(err, what, connectTimeoutMs, idleTimeoutMs);
        }
      },
      close: () => response.close(),
    };
  }

  return {
    name: config.name,
    kind: 'openai',
    async chat(request: ChatRequest, options: CallOptions): Promise<ChatCompletion> {
      const response = await send('/chat/completions', JSON.stringify({ ...request, stream: false }), options);
      return readJson<ChatCompletion>(response, options);
    },
    openStream,
    stream(request: ChatRequest, options: CallOptions): AsyncIterable<ChatChunk> {
      return { [Symbol.asyncIterator]: () => sseChunks(openStream(request, options), options.signal, what) };
    },
    async embeddings(request: EmbeddingsRequest, options: CallOptions): Promise<EmbeddingsResponse> {
      const response = await send('/embeddings', JSON.stringify(request), options);
      return readJson<EmbeddingsResponse>(response, options);
    },
    async check(options: CallOptions) {
      try {
        const response = await send('/models', undefined, options);
        response.close();
        return { ok: true, detail: `${what} answers` };
      } catch (err) {
        return { ok: false, detail: (err as Error).message };
      }
    },
  };
}

/** Parses the `data: {json}` events of a streamed body into chunks; `[DONE]` ends it. */
async function* sseChunks(opening: Promise<RawStream>, signal: AbortSignal, what: string): AsyncGenerator<ChatChunk> {
  const body = await opening;
  const splitter = new SseSplitter();
  try {
    for (let bytes = await body.read(); bytes !== undefined; bytes = await body.read()) {
      for (const { data } of splitter.push(bytes).blocks) {
        if (data === undefined) continue;
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
  } finally {
    // Stops the upstream request when the consumer stops early (client gone, error, limit).
    body.close();
  }
}

/** A transport failure (or anything unexpected) as the UpstreamError Keel reports. */
function transportFailure(err: unknown, what: string, connectTimeoutMs: number, idleTimeoutMs: number): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const failure = err instanceof TransportError ? err.failure : 'broken';
  switch (failure) {
    case 'aborted':
      return aborted();
    case 'connect-timeout':
      return new UpstreamError('upstream_timeout', `${what} did not answer within ${connectTimeoutMs} ms.`, 504, true);
    case 'unreachable':
      return new UpstreamError('upstream_unavailable', `${what} cannot be reached (${(err as TransportError).code ?? 'network error'}).`, 502, true);
    case 'idle':
      return new UpstreamError('upstream_timeout', `${what} went silent for ${idleTimeoutMs} ms.`, 504, false);
    default:
      return new UpstreamError('upstream_unavailable', `${what} broke off the stream.`, 502, false);
  }
}

function aborted(): UpstreamError {
  return new UpstreamError('upstream_aborted', 'The request was cancelled.', 499, false);
}

function backoff(attempt: number, baseMs: number, retryAfterSeconds: number | undefined, signal: AbortSignal): Promise<void> {
  return abortableSleep(backoffMs(attempt, baseMs, retryAfterSeconds), signal, aborted);
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
