/**
 * The Anthropic Messages API adapter: OpenAI chat-completions shape in, Messages API on the wire,
 * OpenAI shape out (completions, `chat.completion.chunk`s and a final usage chunk).
 *
 * Request translation (OpenAI → Anthropic):
 * - `system`/`developer` messages, wherever they stand, become the top-level `system` string (their
 *   texts joined by a blank line). `user`/`assistant` messages become `messages`; consecutive messages
 *   of the same role are merged, as Anthropic requires alternation. `tool` messages become
 *   `tool_result` blocks of a user message (consecutive ones merged; tool results are put before any
 *   text in that message, as Anthropic requires). Assistant `tool_calls` become `tool_use` blocks
 *   (arguments JSON-parsed; empty arguments → `{}`).
 * - Content parts: `text` (and an assistant's `refusal`) → text blocks; `image_url` with a `data:` URL
 *   → a base64 image block, any other URL → a `url` image block; `file` with PDF `file_data` → a
 *   base64 document block. Other part types (audio…) are refused with upstream_bad_request rather than
 *   silently dropped, since dropping content changes the question. Empty texts and messages left with
 *   no content are dropped (Anthropic refuses empty text blocks).
 * - `max_completion_tokens` ?? `max_tokens` ?? `defaultMaxTokens` → `max_tokens`; `temperature` and
 *   `top_p` pass through unchanged (Anthropic validates the range); `stop` → `stop_sequences`; function
 *   `tools` → `{name, description, input_schema}`; `tool_choice` auto/none/required/{function} →
 *   auto/none/any/tool, and `parallel_tool_calls: false` → `disable_parallel_tool_use`; `user` →
 *   `metadata.user_id`.
 * - Every other OpenAI parameter is dropped: `n` (one choice only), `response_format`, `seed`,
 *   `logprobs`, `presence_penalty`/`frequency_penalty`, `logit_bias`, `stream_options` (usage is always
 *   reported), legacy `functions`, non-function tools, a message's `name`. Anthropic-only parameters
 *   (`top_k`, `thinking`…) are not passed through either.
 *
 * Response translation: text blocks → `message.content` (null when there is none), `tool_use` →
 * `message.tool_calls`, other blocks (thinking…) dropped; `stop_reason` end_turn/stop_sequence/
 * pause_turn → 'stop', max_tokens → 'length', tool_use → 'tool_calls', refusal → 'content_filter';
 * usage: prompt = input + cache-creation + cache-read tokens, completion = output tokens.
 *
 * Transport: the provider's keep-alive connection pool (upstream-http.ts). Resilience: a connect
 * timeout until the response headers, an idle timeout between body reads,
 * retries with exponential backoff and jitter on 429/5xx/network errors before any response byte was
 * used (an upstream Retry-After of at most 30 s replaces the backoff; a longer one ends the retries),
 * never after. Errors carry Keel's own messages only, never the upstream body or the key.
 */
import { Buffer } from 'node:buffer';
import { abortableSleep, parseRetryAfter } from '../../../platform/retry.js';
import { randomUUID } from 'node:crypto';
import {
  UpstreamError,
  upstreamErrorFor,
  type CallOptions,
  type ChatChunk,
  type ChatCompletion,
  type ChatMessage,
  type ChatRequest,
  type EmbeddingsResponse,
  type Provider,
  type ResilienceOptions,
  type Usage,
} from './provider.js';
import { createUpstreamClient, TransportError, type UpstreamClient, type UpstreamResponse } from './upstream-http.js';

export interface AnthropicProviderOptions {
  /** The provider's name in Keel's configuration; appears in error messages as `Anthropic (name)`. */
  name: string;
  /** Without `/v1`, e.g. `https://api.anthropic.com`. */
  baseUrl: string;
  apiKey?: string;
  resilience: ResilienceOptions;
  /** Anthropic requires `max_tokens`; used when the request sets neither max_tokens nor max_completion_tokens. */
  defaultMaxTokens?: number;
  /** Extra headers on every request (e.g. `anthropic-beta`); they may override `anthropic-version`. */
  headers?: Record<string, string>;
}

export const ANTHROPIC_VERSION = '2023-06-01';
export const DEFAULT_MAX_TOKENS = 4096;
/** An upstream Retry-After longer than this ends the retries (the caller gets it in the error). */
const MAX_RETRY_AFTER_SECONDS = 30;
const MAX_BACKOFF_MS = 30_000;

type Json = Record<string, unknown>;
type Block = Json;

export interface AnthropicRequest {
  model: string;
  max_tokens: number;
  messages: Array<{ role: 'user' | 'assistant'; content: string | Block[] }>;
  system?: string;
  temperature?: number;
  top_p?: number;
  stop_sequences?: string[];
  tools?: Array<{ name: string; description?: string; input_schema: Json }>;
  tool_choice?: Json;
  metadata?: { user_id: string };
  stream?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Request translation

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function badRequest(message: string): UpstreamError {
  return new UpstreamError('upstream_bad_request', message, 400, false);
}

/** The text of a system/developer message: a string, or its text parts joined. */
function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .filter((p) => p.type === 'text')
    .map((p) => str(p.text))
    .filter((t) => t !== '')
    .join('\n');
}

const DATA_URL = /^data:([^;,]*)((?:;[^;,]*)*),(.*)$/s;

/** An Anthropic `source` for a URL: base64 for data: URLs, `url` otherwise. */
function sourceFor(url: string, what: string): Json {
  const m = DATA_URL.exec(url);
  if (!m) {
    if (!/^https?:\/\//i.test(url)) throw badRequest(`${what}: only http(s) and data: URLs are supported.`);
    return { type: 'url', url };
  }
  const mediaType = m[1] ?? '';
  const params = (m[2] ?? '').split(';');
  const payload = m[3] ?? '';
  if (!mediaType) throw badRequest(`${what}: a data: URL must name its media type.`);
  const data = params.includes('base64') ? payload : Buffer.from(decodeURIComponent(payload), 'utf8').toString('base64');
  return { type: 'base64', media_type: mediaType, data };
}

function contentBlocks(content: ChatMessage['content']): Block[] {
  if (typeof content === 'string') return content === '' ? [] : [{ type: 'text', text: content }];
  if (!Array.isArray(content)) return [];
  const blocks: Block[] = [];
  for (const part of content) {
    switch (part.type) {
      case 'text':
      case 'refusal': {
        const text = str(part.type === 'text' ? part.text : part.refusal);
        if (text !== '') blocks.push({ type: 'text', text });
        break;
      }
      case 'image_url': {
        const image = part.image_url;
        const url = typeof image === 'string' ? image : isRecord(image) ? str(image.url) : '';
        if (!url) throw badRequest('An image_url content part has no URL.');
        blocks.push({ type: 'image', source: sourceFor(url, 'image_url') });
        break;
      }
      case 'file': {
        const file = isRecord(part.file) ? part.file : {};
        const data = str(file.file_data);
        if (!data.startsWith('data:')) throw badRequest('Anthropic accepts file content parts only as file_data data: URLs (no file ids).');
        blocks.push({ type: 'document', source: sourceFor(data, 'file') });
        break;
      }
      default:
        throw badRequest(`Anthropic does not accept content parts of type "${str(part.type) || 'unknown'}".`);
    }
  }
  return blocks;
}

function toolUseBlocks(toolCalls: ChatMessage['tool_calls']): Block[] {
  if (!Array.isArray(toolCalls)) return [];
  return toolCalls.map((call) => {
    const fn = isRecord(call.function) ? call.function : {};
    const id = str(call.id);
    const name = str(fn.name);
    if (!id || !name) throw badRequest('An assistant tool call lacks its id or function name.');
    const args = str(fn.arguments).trim();
    let input: unknown = {};
    if (args !== '') {
      try {
        input = JSON.parse(args);
      } catch {
        throw badRequest(`The arguments of tool call "${id}" are not valid JSON.`);
      }
    }
    if (!isRecord(input)) throw badRequest(`The arguments of tool call "${id}" are not a JSON object.`);
    return { type: 'tool_use', id, name, input };
  });
}

function toolResultBlock(message: ChatMessage): Block {
  const id = str(message.tool_call_id);
  if (!id) throw badRequest('A tool message lacks its tool_call_id.');
  const block: Block = { type: 'tool_result', tool_use_id: id };
  if (typeof message.content === 'string') {
    if (message.content !== '') block.content = message.content;
  } else {
    const parts = contentBlocks(message.content);
    if (parts.length > 0) block.content = parts;
  }
  return block;
}

function toolsOf(tools: unknown): AnthropicRequest['tools'] {
  if (!Array.isArray(tools)) return undefined;
  const out: NonNullable<AnthropicRequest['tools']> = [];
  for (const tool of tools) {
    if (!isRecord(tool) || (tool.type !== undefined && tool.type !== 'function') || !isRecord(tool.function)) continue;
    const fn = tool.function;
    const name = str(fn.name);
    if (!name) throw badRequest('A function tool lacks its name.');
    const entry: NonNullable<AnthropicRequest['tools']>[number] = {
      name,
      input_schema: isRecord(fn.parameters) ? fn.parameters : { type: 'object', properties: {} },
    };
    if (typeof fn.description === 'string' && fn.description !== '') entry.description = fn.description;
    out.push(entry);
  }
  return out.length > 0 ? out : undefined;
}

function toolChoiceOf(choice: unknown, parallel: unknown): Json | undefined {
  let out: Json | undefined;
  if (choice === 'auto') out = { type: 'auto' };
  else if (choice === 'none') out = { type: 'none' };
  else if (choice === 'required') out = { type: 'any' };
  else if (isRecord(choice) && isRecord(choice.function) && str(choice.function.name)) out = { type: 'tool', name: str(choice.function.name) };
  if (parallel === false && out?.type !== 'none') out = { ...(out ?? { type: 'auto' }), disable_parallel_tool_use: true };
  return out;
}

/** Translates an OpenAI chat-completions body to an Anthropic Messages body (see the file comment). */
export function toAnthropicRequest(request: ChatRequest, defaultMaxTokens: number = DEFAULT_MAX_TOKENS): AnthropicRequest {
  const system: string[] = [];
  const merged: Array<{ role: 'user' | 'assistant'; content: Block[] }> = [];
  const push = (role: 'user' | 'assistant', blocks: Block[]): void => {
    if (blocks.length === 0) return;
    const last = merged.at(-1);
    if (last && last.role === role) last.content.push(...blocks);
    else merged.push({ role, content: blocks });
  };

  if (!Array.isArray(request.messages)) throw badRequest('messages must be an array.');
  for (const message of request.messages) {
    switch (message.role) {
      case 'system':
      case 'developer': {
        const text = textOf(message.content);
        if (text !== '') system.push(text);
        break;
      }
      case 'user':
        push('user', contentBlocks(message.content));
        break;
      case 'assistant':
        push('assistant', [...contentBlocks(message.content), ...toolUseBlocks(message.tool_calls)]);
        break;
      case 'tool':
        push('user', [toolResultBlock(message)]);
        break;
      default:
        throw badRequest(`Anthropic does not accept messages of role "${String(message.role)}".`);
    }
  }

  const messages = merged.map(({ role, content }) => {
    // Anthropic wants a user message's tool_result blocks before anything else in it.
    const ordered = role === 'user' ? [...content.filter((b) => b.type === 'tool_result'), ...content.filter((b) => b.type !== 'tool_result')] : content;
    const only = ordered[0];
    const collapsed: string | Block[] = ordered.length === 1 && only?.type === 'text' ? str(only.text) : ordered;
    return { role, content: collapsed };
  });

  const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? defaultMaxTokens;
  const out: AnthropicRequest = { model: request.model, max_tokens: maxTokens, messages };
  if (system.length > 0) out.system = system.join('\n\n');
  if (typeof request.temperature === 'number') out.temperature = request.temperature;
  if (typeof request.top_p === 'number') out.top_p = request.top_p;
  const stop = typeof request.stop === 'string' ? [request.stop] : Array.isArray(request.stop) ? request.stop.filter((s): s is string => typeof s === 'string') : [];
  if (stop.length > 0) out.stop_sequences = stop;
  const tools = toolsOf(request.tools);
  if (tools) {
    out.tools = tools;
    const choice = toolChoiceOf(request.tool_choice, request.parallel_tool_calls);
    if (choice) out.tool_choice = choice;
  }
  if (typeof request.user === 'string' && request.user !== '') out.metadata = { user_id: request.user };
  if (request.stream === true) out.stream = true;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Response translation

export function finishReasonFor(stopReason: unknown): string | null {
  switch (stopReason) {
    case null:
    case undefined:
      return null;
    case 'max_tokens':
      return 'length';
    case 'tool_use':
      return 'tool_calls';
    case 'refusal':
      return 'content_filter';
    default:
      return 'stop'; // end_turn, stop_sequence, pause_turn and anything newer
  }
}

function inputTokensOf(usage: Json): number {
  return num(usage.input_tokens) + num(usage.cache_creation_input_tokens) + num(usage.cache_read_input_tokens);
}

function usageOf(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function unreadable(what: string): UpstreamError {
  return new UpstreamError('upstream_error', `${what} sent an answer Keel could not read.`, 502, false);
}

/** Translates an Anthropic Messages response body to an OpenAI chat completion. */
export function fromAnthropicMessage(body: unknown, what = 'Anthropic'): ChatCompletion {
  if (!isRecord(body) || !Array.isArray(body.content)) throw unreadable(what);
  const texts: string[] = [];
  const toolCalls: Array<Record<string, unknown>> = [];
  for (const block of body.content as unknown[]) {
    if (!isRecord(block)) continue;
    if (block.type === 'text') texts.push(str(block.text));
    else if (block.type === 'tool_use') {
      toolCalls.push({ id: str(block.id), type: 'function', function: { name: str(block.name), arguments: JSON.stringify(block.input ?? {}) } });
    }
  }
  const message: ChatMessage = { role: 'assistant', content: texts.length > 0 ? texts.join('') : null };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  const usage = isRecord(body.usage) ? body.usage : {};
  return {
    id: str(body.id) || `chatcmpl-${randomUUID()}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: str(body.model),
    choices: [{ index: 0, message, finish_reason: finishReasonFor(body.stop_reason) }],
    usage: usageOf(inputTokensOf(usage), num(usage.output_tokens)),
  };
}

/** Anthropic's error types, as the HTTP status they stand for (for `event: error` mid-stream). */
const ERROR_STATUS: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529,
};

// ---------------------------------------------------------------------------------------------
// Server-sent events

export interface SseEvent {
  event: string;
  data: string;
}

/** An incremental SSE parser (any line ending, comments, multi-line data). */
export class SseParser {
  private readonly decoder = new TextDecoder();
  private buffer = '';
  private event = '';
  private data: string[] = [];

  push(bytes: Uint8Array): SseEvent[] {
    this.buffer += this.decoder.decode(bytes, { stream: true });
    return this.drain();
  }

  /** The end of the body: whatever complete event is still buffered. */
  end(): SseEvent[] {
    this.buffer += this.decoder.decode();
    const out = this.drain();
    if (this.buffer !== '') {
      this.line(this.buffer, out);
      this.buffer = '';
    }
    this.line('', out);
    return out;
  }

  private drain(): SseEvent[] {
    const out: SseEvent[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) break;
      // A lone \r at the end may be the first half of a \r\n split across reads.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line, out);
    }
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === '') {
      if (this.data.length > 0) out.push({ event: this.event || 'message', data: this.data.join('\n') });
      this.event = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
  }
}

/** Turns Anthropic stream events into OpenAI chunks; `done` once `message_stop` was seen. */
class StreamTranslator {
  done = false;
  private id = `chatcmpl-${randomUUID()}`;
  private model: string;
  private readonly created = Math.floor(Date.now() / 1000);
  private inputTokens = 0;
  private outputTokens = 0;
  private finishSent = false;
  private readonly toolIndexOfBlock = new Map<number, number>();

  constructor(
    private readonly what: string,
    model: string,
  ) {
    this.model = model;
  }

  handle(sse: SseEvent): ChatChunk[] {
    let payload: unknown;
    try {
      payload = JSON.parse(sse.data);
    } catch {
      throw unreadable(this.what);
    }
    if (!isRecord(payload)) throw unreadable(this.what);
    const type = sse.event !== 'message' ? sse.event : str(payload.type);
    switch (type) {
      case 'message_start': {
        const message = isRecord(payload.message) ? payload.message : {};
        this.id = str(message.id) || this.id;
        this.model = str(message.model) || this.model;
        const usage = isRecord(message.usage) ? message.usage : {};
        this.inputTokens = inputTokensOf(usage);
        this.outputTokens = num(usage.output_tokens);
        return [this.chunk({ role: 'assistant', content: '' })];
      }
      case 'content_block_start': {
        const block = isRecord(payload.content_block) ? payload.content_block : {};
        if (block.type === 'tool_use') {
          const toolIndex = this.toolIndexOfBlock.size;
          this.toolIndexOfBlock.set(num(payload.index), toolIndex);
          return [this.chunk({ tool_calls: [{ index: toolIndex, id: str(block.id), type: 'function', function: { name: str(block.name), arguments: '' } }] })];
        }
        if (block.type === 'text' && str(block.text) !== '') return [this.chunk({ content: str(block.text) })];
        return [];
      }
      case 'content_block_delta': {
        const delta = isRecord(payload.delta) ? payload.delta : {};
        if (delta.type === 'text_delta') return str(delta.text) === '' ? [] : [this.chunk({ content: str(delta.text) })];
        if (delta.type === 'input_json_delta') {
          const toolIndex = this.toolIndexOfBlock.get(num(payload.index));
          const piece = str(delta.partial_json);
          if (toolIndex === undefined || piece === '') return [];
          return [this.chunk({ tool_calls: [{ index: toolIndex, function: { arguments: piece } }] })];
        }
        return []; // thinking_delta, signature_delta, citations…
      }
      case 'message_delta': {
        const delta = isRecord(payload.delta) ? payload.delta : {};
        const usage = isRecord(payload.usage) ? payload.usage : {};
        if (typeof usage.output_tokens === 'number') this.outputTokens = num(usage.output_tokens);
        // Newer API versions repeat the (cumulative) input counts here.
        if (typeof usage.input_tokens === 'number') this.inputTokens = inputTokensOf(usage);
        this.finishSent = true;
        return [this.chunk({}, finishReasonFor(delta.stop_reason) ?? 'stop')];
      }
      case 'message_stop': {
        this.done = true;
        const out = this.finishSent ? [] : [this.chunk({}, 'stop')];
        out.push({ id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, choices: [], usage: usageOf(this.inputTokens, this.outputTokens) });
        return out;
      }
      case 'error': {
        const error = isRecord(payload.error) ? payload.error : {};
        throw upstreamErrorFor(ERROR_STATUS[str(error.type)] ?? 500, this.what);
      }
      default:
        return []; // ping, content_block_stop, and event types added after this adapter was written
    }
  }

  private chunk(delta: Partial<ChatMessage>, finishReason: string | null = null): ChatChunk {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model, choices: [{ index: 0, delta, finish_reason: finishReason }] };
  }
}

// ---------------------------------------------------------------------------------------------
// Transport

function retryAfterOf(response: UpstreamResponse): number | undefined {
  const ms = response.header('retry-after-ms');
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms.trim())) return Number(ms) / 1000;
  return parseRetryAfter(response.header('retry-after'));
}

/** Reads a response body (the idle timeout is the transport's), mapping every failure to an UpstreamError. */
class BodyReader {
  constructor(
    private readonly response: UpstreamResponse,
    private readonly signal: AbortSignal,
    private readonly errors: Errors,
  ) {}

  /** The next bytes, or undefined at the end of the body. */
  async read(): Promise<Uint8Array | undefined> {
    if (this.signal.aborted) throw this.errors.aborted();
    try {
      return await this.response.read();
    } catch (err) {
      if (this.signal.aborted) throw this.errors.aborted();
      if (err instanceof TransportError && err.failure === 'idle') throw this.errors.idle(this.errors.idleTimeoutMs);
      throw this.errors.broken();
    }
  }

  async readAll(): Promise<string> {
    const parts: Uint8Array[] = [];
    for (let bytes = await this.read(); bytes; bytes = await this.read()) parts.push(bytes);
    return Buffer.concat(parts).toString('utf8');
  }

  /** Ends the upstream request now if its body was not read to the end (idempotent). */
  close(): void {
    this.response.close();
  }
}

interface Errors {
  /** What `idle` reports. */
  readonly idleTimeoutMs: number;
  aborted: () => UpstreamError;
  connectTimeout: (ms: number) => UpstreamError;
  idle: (ms: number) => UpstreamError;
  broken: () => UpstreamError;
  unreachable: () => UpstreamError;
}

function errorsFor(what: string, idleTimeoutMs: number): Errors {
  return {
    idleTimeoutMs,
    aborted: () => new UpstreamError('upstream_aborted', `The request to ${what} was aborted.`, 499, false),
    connectTimeout: (ms) => new UpstreamError('upstream_timeout', `${what} did not answer within ${ms} ms.`, 504, true),
    idle: (ms) => new UpstreamError('upstream_timeout', `${what} went silent for ${ms} ms in the middle of its answer.`, 504, true),
    broken: () => new UpstreamError('upstream_error', `${what} broke off its answer.`, 502, true),
    unreachable: () => new UpstreamError('upstream_unavailable', `${what} could not be reached.`, 502, true),
  };
}

export function createAnthropicProvider(opts: AnthropicProviderOptions, client: UpstreamClient = createUpstreamClient(opts.baseUrl)): Provider {
  const what = `Anthropic (${opts.name})`;
  const { connectTimeoutMs, idleTimeoutMs, maxRetries, retryBaseMs } = opts.resilience;
  const errors = errorsFor(what, idleTimeoutMs);
  const defaultMaxTokens = opts.defaultMaxTokens ?? DEFAULT_MAX_TOKENS;

  // The same for every call: built once.
  const base: Record<string, string> = { 'anthropic-version': ANTHROPIC_VERSION, ...opts.headers };
  if (opts.apiKey) base['x-api-key'] = opts.apiKey;
  const getHeaders: Readonly<Record<string, string>> = base;
  const postHeaders: Readonly<Record<string, string>> = { ...base, 'content-type': 'application/json' };

  const backoff = (attempt: number): number => {
    const full = Math.min(MAX_BACKOFF_MS, retryBaseMs * 2 ** attempt);
    return full / 2 + Math.random() * (full / 2);
  };

  /**
   * Sends the request until response headers with a 2xx status arrive, retrying 429/5xx/network
   * errors up to `retries` times. Connect timeouts are not retried: the upstream may still be working
   * on (and billing) the request.
   */
  async function open(path: string, body: string | undefined, signal: AbortSignal, retries: number): Promise<UpstreamResponse> {
    for (let attempt = 0; ; attempt++) {
      if (signal.aborted) throw errors.aborted();
      let failure: UpstreamError;
      let retryable: boolean;
      let delayMs: number | undefined;
      try {
        const response = await client.send({ method: body === undefined ? 'GET' : 'POST', path, headers: body === undefined ? getHeaders : postHeaders, body, signal, connectTimeoutMs, idleTimeoutMs });
        if (response.status >= 200 && response.status < 300) return response;
        // The error body is never read: Keel's message must not carry what the provider said.
        const retryAfter = retryAfterOf(response);
        response.close();
        failure = upstreamErrorFor(response.status, what, retryAfter === undefined ? undefined : Math.ceil(retryAfter));
        retryable = response.status === 429 || response.status >= 500;
        if (retryAfter !== undefined) {
          if (retryAfter > MAX_RETRY_AFTER_SECONDS) retryable = false;
          else delayMs = retryAfter * 1000;
        }
      } catch (err) {
        if (signal.aborted) throw errors.aborted();
        if (err instanceof TransportError && err.failure === 'connect-timeout') throw errors.connectTimeout(connectTimeoutMs);
        failure = errors.unreachable();
        retryable = true;
      }
      if (!retryable || attempt >= retries) throw failure;
      await abortableSleep(delayMs ?? backoff(attempt), signal, errors.aborted);
    }
  }

  /** The whole body of a response, under the idle timeout; the reader is released either way. */
  async function readBody(response: UpstreamResponse, signal: AbortSignal): Promise<string> {
    const reader = new BodyReader(response, signal, errors);
    try {
      return await reader.readAll();
    } finally {
      reader.close();
    }
  }

  return {
    name: opts.name,
    kind: 'anthropic',

    async chat(request: ChatRequest, { signal }: CallOptions): Promise<ChatCompletion> {
      const body = toAnthropicRequest({ ...request, stream: false }, defaultMaxTokens);
      const connection = await open('/v1/messages', JSON.stringify(body), signal, maxRetries);
      const text = await readBody(connection, signal);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw unreadable(what);
      }
      return fromAnthropicMessage(parsed, what);
    },

    stream(request: ChatRequest, { signal }: CallOptions): AsyncIterable<ChatChunk> {
      return (async function* (): AsyncGenerator<ChatChunk> {
        const body = toAnthropicRequest({ ...request, stream: true }, defaultMaxTokens);
        const connection = await open('/v1/messages', JSON.stringify(body), signal, maxRetries);
        const reader = new BodyReader(connection, signal, errors);
        const parser = new SseParser();
        const translator = new StreamTranslator(what, request.model);
        try {
          for (;;) {
            const bytes = await reader.read();
            const events = bytes ? parser.push(bytes) : parser.end();
            for (const event of events) {
              for (const chunk of translator.handle(event)) yield chunk;
              if (translator.done) return;
            }
            if (!bytes) throw errors.broken(); // the body ended before message_stop
          }
        } finally {
          reader.close();
        }
      })();
    },

    async embeddings(): Promise<EmbeddingsResponse> {
      throw new UpstreamError('upstream_bad_request', 'Anthropic has no embeddings API; configure an OpenAI-compatible embeddings model.', 400, false);
    },

    async check({ signal }: CallOptions): Promise<{ ok: boolean; detail: string }> {
      try {
        const connection = await open('/v1/models?limit=100', undefined, signal, 0);
        const text = await readBody(connection, signal);
        let count: number | undefined;
        try {
          const parsed: unknown = JSON.parse(text);
          if (isRecord(parsed) && Array.isArray(parsed.data)) count = parsed.data.length;
        } catch {
          // A proxy may answer something else; reachable and accepted is what matters.
        }
        return { ok: true, detail: count === undefined ? `${what} answered.` : `${what} answered and lists ${count} model(s).` };
      } catch (err) {
        if (!(err instanceof UpstreamError)) throw err;
        if (err.upstreamStatus === 404 || err.upstreamStatus === 405) {
          return { ok: true, detail: `${what} is reachable but does not list models (HTTP ${err.upstreamStatus}); the API key was not checked.` };
        }
        return { ok: false, detail: err.message };
      }
    },
  };
}
