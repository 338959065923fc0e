import { AppError } from '../../../platform/errors.js';

/**
 * The contract every upstream adapter meets. Keel speaks OpenAI's chat-completions wire shape
 * internally: OpenAI-compatible upstreams pass it through, the Anthropic adapter translates to and
 * from the Messages API. Bodies are kept as loose records where OpenAI allows fields Keel does not
 * need to understand (tools, response_format, logprobs…), so they pass through untouched.
 */

export interface ChatMessage {
  role: string;
  content?: string | Array<Record<string, unknown>> | null;
  name?: string;
  tool_calls?: Array<Record<string, unknown>>;
  tool_call_id?: string;
  [extra: string]: unknown;
}

/** An OpenAI `POST /chat/completions` body; `model` is the upstream's own model name. */
export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  max_tokens?: number;
  max_completion_tokens?: number;
  [param: string]: unknown;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{ index: number; message: ChatMessage; finish_reason: string | null; [extra: string]: unknown }>;
  usage?: Usage;
  [extra: string]: unknown;
}

export interface ChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{ index: number; delta: Partial<ChatMessage>; finish_reason: string | null; [extra: string]: unknown }>;
  usage?: Usage | null;
  [extra: string]: unknown;
}

export interface EmbeddingsRequest {
  model: string;
  input: string | string[] | number[] | number[][];
  [param: string]: unknown;
}

export interface EmbeddingsResponse {
  object: 'list';
  data: Array<{ object: 'embedding'; index: number; embedding: number[] | string }>;
  model: string;
  usage?: { prompt_tokens: number; total_tokens: number };
}

export interface CallOptions {
  /** Aborts the upstream request (client went away, shutdown, timeout). */
  signal: AbortSignal;
}

/** The body of a streamed answer as it arrives. */
export interface RawStream {
  /** The bytes received since the previous read (one or more socket reads' worth), or undefined at the end; fails with an UpstreamError. */
  read(): Promise<Buffer | undefined>;
  /** Stops reading; an unfinished upstream request is cancelled. Idempotent. */
  close(): void;
}

export interface Provider {
  readonly name: string;
  readonly kind: 'openai' | 'anthropic';
  chat(request: ChatRequest, options: CallOptions): Promise<ChatCompletion>;
  /**
   * Streams chunks. Connecting (and retrying before the first byte) happens when iteration starts;
   * a failure after that is thrown from the iterator as an UpstreamError. OpenAI-compatible adapters
   * ask for `stream_options.include_usage`; the usage chunk, when the upstream sends one, is yielded
   * like any other chunk (with `choices: []`).
   */
  stream(request: ChatRequest, options: CallOptions): AsyncIterable<ChatChunk>;
  /**
   * OpenAI-compatible adapters only: the same streamed call, as the upstream's SSE bytes (OpenAI's
   * chunk format, with the usage chunk asked for), for relaying them without re-serializing each chunk.
   * Resolves once the upstream answered 2xx, after the same retries as `stream`.
   */
  openStream?(request: ChatRequest, options: CallOptions): Promise<RawStream>;
  embeddings(request: EmbeddingsRequest, options: CallOptions): Promise<EmbeddingsResponse>;
  /** Whether the upstream answers at all (for `keel doctor`), with a short reason when not. */
  check(options: CallOptions): Promise<{ ok: boolean; detail: string }>;
}

/** Upstream timeouts and retries, per provider. */
export interface ResilienceOptions {
  /** Until the response headers arrive. */
  connectTimeoutMs: number;
  /** Longest silence between two chunks of a stream (or while reading a body). */
  idleTimeoutMs: number;
  /** Retries on 429/5xx/network errors, only before the first byte. */
  maxRetries: number;
  /** First backoff; doubles each retry, with jitter; an upstream Retry-After wins when shorter than 30 s. */
  retryBaseMs: number;
}

/**
 * A failed upstream call, already mapped to what Keel answers: never the provider's key or raw body.
 * `status` is Keel's HTTP status; `upstreamStatus` what the provider said (for logs and metering).
 */
export class UpstreamError extends AppError {
  constructor(
    code: 'upstream_rate_limited' | 'upstream_unavailable' | 'upstream_timeout' | 'upstream_bad_request' | 'upstream_auth_failed' | 'upstream_error' | 'upstream_aborted',
    message: string,
    readonly status: number,
    readonly retryable: boolean,
    readonly upstreamStatus?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(code, message, status, undefined, retryAfterSeconds !== undefined ? { 'retry-after': String(Math.max(1, Math.round(retryAfterSeconds))) } : undefined);
    this.name = 'UpstreamError';
  }
}

/** Maps an upstream HTTP status to the error Keel reports. `what` names the provider in the message. */
export function upstreamErrorFor(status: number, what: string, retryAfterSeconds?: number): UpstreamError {
  if (status === 429) return new UpstreamError('upstream_rate_limited', `${what} is rate limiting requests; retry later.`, 429, true, status, retryAfterSeconds);
  if (status === 401 || status === 403) return new UpstreamError('upstream_auth_failed', `${what} refused Keel's credentials; the operator must check the provider API key.`, 502, false, status);
  if (status === 400 || status === 404 || status === 413 || status === 422) return new UpstreamError('upstream_bad_request', `${what} refused the request (HTTP ${status}): check the model name and parameters.`, 400, false, status);
  if (status === 408 || status === 504) return new UpstreamError('upstream_timeout', `${what} timed out.`, 504, true, status);
  return new UpstreamError('upstream_unavailable', `${what} is unavailable (HTTP ${status}).`, 502, status >= 500, status);
}
