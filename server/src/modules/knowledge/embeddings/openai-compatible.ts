import type { Logger } from 'pino';
import { abortableSleep, backoffMs, parseRetryAfter } from '../../../platform/retry.js';
import { abortedError, EmbeddingsError, type Embedder, type EmbedOptions } from './embedder.js';
import type { EmbeddingsConfig } from './embeddings.config.js';
import { decodeEmbedding, normalize } from './vectors.js';

const DEFAULT_MAX_RETRIES = 2;
const DEFAULT_RETRY_BASE_MS = 250;

/**
 * `POST {baseUrl}/embeddings` of any OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp, TEI…),
 * following the LLM provider's conventions: Bearer key, a timeout per request, bounded retries with
 * backoff on 429/5xx/network errors/timeouts (an upstream Retry-After up to 30 s wins), and upstream
 * bodies drained, never forwarded or logged.
 */
export function createOpenAICompatibleEmbedder(config: EmbeddingsConfig, logger: Logger): Embedder {
  if (config.kind !== 'openai' || !config.baseUrl || !config.model) throw new Error('createOpenAICompatibleEmbedder needs an openai embeddings config with baseUrl and model');
  const baseUrl = config.baseUrl;
  const model = config.model;
  const maxRetries = config.maxRetries ?? DEFAULT_MAX_RETRIES;
  const retryBaseMs = config.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
  const host = hostOf(baseUrl);
  const what = `The embeddings server (${host})`;
  let dimensions = config.dimensions;

  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json',
    ...(config.apiKey ? { authorization: `Bearer ${config.apiKey}` } : {}),
  };

  /** One request, timeout included (headers and body); resolves with the parsed JSON. */
  async function attempt(body: string, signal: AbortSignal | undefined): Promise<unknown> {
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), config.timeoutMs);
    try {
      const response = await fetch(`${baseUrl}/embeddings`, {
        method: 'POST',
        headers,
        body,
        signal: signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal,
      });
      if (!response.ok) {
        // The body may echo the key or the texts: drained, never read into a message or a log.
        await response.body?.cancel().catch(() => undefined);
        throw failureFor(response.status, what, parseRetryAfter(response.headers.get('retry-after')));
      }
      const text = await response.text();
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new EmbeddingsError('bad_response', `${what} answered with something that is not JSON.`, 502, false);
      }
    } catch (err) {
      if (err instanceof EmbeddingsError) throw err;
      if (signal?.aborted) throw abortedError();
      if (timeout.signal.aborted) throw new EmbeddingsError('timeout', `${what} did not answer within ${config.timeoutMs} ms.`, 504, true);
      const code = (err as { cause?: { code?: string } }).cause?.code ?? 'network error';
      throw new EmbeddingsError('unreachable', `${what} cannot be reached (${code}).`, 503, true);
    } finally {
      clearTimeout(timer);
    }
  }

  async function embedBatch(batch: readonly string[], signal: AbortSignal | undefined): Promise<Float32Array[]> {
    // OpenAI refuses empty strings in `input`; a blank text embeds like a space instead of failing its whole batch.
    const input = batch.map((t) => (t.trim() === '' ? ' ' : t));
    const body = JSON.stringify({ model, input, encoding_format: 'float', ...(config.dimensions !== undefined ? { dimensions: config.dimensions } : {}) });
    for (let n = 0; ; n++) {
      if (signal?.aborted) throw abortedError();
      try {
        return vectorsOf(await attempt(body, signal), batch.length);
      } catch (err) {
        if (!(err instanceof EmbeddingsError) || !err.retryable || n >= maxRetries) throw err;
        logger.warn({ host, reason: err.reason, upstream_status: err.upstreamStatus, retry: n + 1, max_retries: maxRetries }, 'embeddings request failed; retrying');
        await abortableSleep(backoffMs(n, retryBaseMs, err.retryAfterSeconds), signal, abortedError);
      }
    }
  }

  /** Vectors of a response body, in input order, checked and normalised. */
  function vectorsOf(json: unknown, count: number): Float32Array[] {
    const bad = (why: string): EmbeddingsError => new EmbeddingsError('bad_response', `${what} sent an unusable answer (${why}).`, 502, false);
    const data = (json as { data?: unknown } | null)?.data;
    if (!Array.isArray(data) || data.length !== count) throw bad(`expected ${count} embeddings`);
    const out = new Array<Float32Array | undefined>(count);
    data.forEach((item: unknown, position) => {
      const entry = (item ?? {}) as { index?: unknown; embedding?: unknown };
      const index = entry.index === undefined ? position : entry.index;
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= count || out[index]) throw bad('bad or repeated index');
      const vector = decodeEmbedding(entry.embedding);
      if (!vector || vector.length === 0) throw bad('an embedding is not a list of numbers');
      out[index] = vector;
    });
    const vectors = out as Float32Array[];
    const length = vectors[0]!.length;
    if (vectors.some((v) => v.length !== length)) throw bad('embeddings of different lengths');
    if (dimensions !== undefined && length !== dimensions) {
      throw bad(config.dimensions !== undefined
        ? `${length} dimensions where EMBEDDINGS_DIMENSIONS is ${config.dimensions}; the model may not support shortening`
        : `${length} dimensions where earlier answers had ${dimensions}; did the model change?`);
    }
    dimensions = length;
    return vectors.map(normalize);
  }

  const embedder: Embedder = {
    model: config.dimensions !== undefined ? `${model}@${config.dimensions}` : model,
    get dimensions() {
      return dimensions;
    },
    async embed(texts: readonly string[], options: EmbedOptions = {}): Promise<Float32Array[]> {
      const vectors: Float32Array[] = [];
      for (let i = 0; i < texts.length; i += config.batchSize) {
        vectors.push(...(await embedBatch(texts.slice(i, i + config.batchSize), options.signal)));
      }
      return vectors;
    },
    async check() {
      try {
        await embedder.embed(['keel doctor']);
        return { ok: true, detail: `${host} embeds with ${model} (${dimensions} dimensions)` };
      } catch (err) {
        return { ok: false, detail: (err as Error).message };
      }
    },
  };
  return embedder;
}

function failureFor(status: number, what: string, retryAfter: number | undefined): EmbeddingsError {
  if (status === 429) return new EmbeddingsError('rate_limited', `${what} is rate limiting requests; retry later.`, 503, true, status, retryAfter);
  if (status === 401 || status === 403) return new EmbeddingsError('auth_failed', `${what} refused Keel's credentials (HTTP ${status}); the operator must check EMBEDDINGS_API_KEY.`, 502, false, status);
  if (status === 400 || status === 404 || status === 413 || status === 422) return new EmbeddingsError('rejected', `${what} refused the request (HTTP ${status}); check EMBEDDINGS_MODEL and EMBEDDINGS_DIMENSIONS.`, 502, false, status);
  if (status === 408 || status === 504) return new EmbeddingsError('timeout', `${what} timed out (HTTP ${status}).`, 504, true, status);
  return new EmbeddingsError('upstream_error', `${what} is unavailable (HTTP ${status}).`, 502, status >= 500, status);
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'invalid URL';
  }
}
