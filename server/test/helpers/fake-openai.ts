import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake OpenAI-compatible upstream on a loopback port. It speaks the real wire protocol (the one the
 * official `openai` SDK v6 reads), so Keel's real client code runs against it:
 *
 * - `POST /v1/chat/completions`: a `chat.completion`, or with `stream: true` an SSE stream of
 *   `data: {chat.completion.chunk}\n\n` events ending with `data: [DONE]\n\n`. The stream's chunk objects,
 *   in order: a role chunk (`delta: {role: 'assistant', content: '' | null, refusal: null}`), one chunk per
 *   text piece (`delta: {content}`), the tool-call deltas (per call a header delta with `id`, `type`,
 *   `function.name` and `arguments: ''`, then the arguments in pieces of {@link TOOL_ARGUMENT_PIECE}
 *   characters), a finish chunk (`delta: {}`, `finish_reason`), and, only when the request has
 *   `stream_options: {include_usage: true}`, a usage chunk (`choices: []`, `usage`); with include_usage
 *   every other chunk carries `usage: null`, as OpenAI does. The requested `model` is echoed; `n` is
 *   ignored (always one choice).
 * - `POST /v1/embeddings`: deterministic unit vectors (see {@link fakeEmbedding}); honours `dimensions` and
 *   `encoding_format: 'base64'` (little-endian Float32 bytes, which the SDK asks for by default).
 * - `GET /v1/models`: the configured model ids.
 * - anything else: 404 in OpenAI's error shape `{error: {message, type, param, code}}`.
 */

/** The assistant text when a behaviour sets neither `reply`, `chunks` nor `toolCalls`. */
export const DEFAULT_REPLY = 'Hello from the fake upstream.';
/** Model ids `GET /v1/models` lists when `FakeOpenAIOptions.models` is not given. */
export const DEFAULT_MODELS: readonly string[] = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'];
/** Embedding length when the request has no positive integer `dimensions`. */
export const DEFAULT_EMBEDDING_DIMENSIONS = 8;
/** Tool-call `arguments` are streamed in pieces of this many characters. */
export const TOOL_ARGUMENT_PIECE = 8;
/** The `created` of every model in `GET /v1/models` (2023-11-14T22:13:20Z). */
export const MODEL_CREATED = 1_700_000_000;

export interface FakeOpenAIOptions {
  /** When set, a request without `Authorization: Bearer <apiKey>` gets 401 (`invalid_api_key`); the key is never echoed. */
  apiKey?: string;
  /** Ids `GET /v1/models` lists, each `{id, object: 'model', created: MODEL_CREATED, owned_by: 'fake-upstream'}`. Default {@link DEFAULT_MODELS}. */
  models?: string[];
}

export interface RecordedRequest {
  method: string;
  /** The URL path without the query string, including `/v1` (e.g. `/v1/chat/completions`). */
  path: string;
  /** The request headers as Node parsed them (lower-case names), `authorization` included. */
  headers: Record<string, string | string[] | undefined>;
  /** The parsed JSON body; the raw text when it is not JSON; `null` when empty. */
  body: unknown;
  /** `Date.now()` when the request arrived. */
  receivedAt: number;
  /** Set when the client closed the connection before the response ended. */
  abortedAt?: number;
  /** Set when the response finished (every byte handed to the OS). */
  finishedAt?: number;
  /** Set when the fake itself destroyed the connection mid-response (`breakAfterChunks`). */
  brokenAt?: number;
}

/** Which route a behaviour applies to; without one it applies to chat completions, embeddings and models alike. */
export type FakeRoute = 'chat' | 'embeddings' | 'models';

/** How the next matching request(s) are answered. Every field is optional; unset fields take the defaults documented here. */
export interface Behaviour {
  /** Only requests to this route use the behaviour (and consume it, for `behaveOnce`); others skip it. Default: any route. */
  route?: FakeRoute;
  /**
   * Assistant text. Default {@link DEFAULT_REPLY} (unless `toolCalls` is set, then no text: `content: null`). Streamed in the
   * pieces {@link splitReply} makes: one per word with its trailing whitespace, so the default reply is 5 chunks
   * `'Hello ', 'from ', 'the ', 'fake ', 'upstream.'`.
   */
  reply?: string;
  /** Explicit text pieces, one stream chunk each (overrides splitting `reply`); a non-streamed answer joins them. */
  chunks?: string[];
  /**
   * Reported usage; `total_tokens` is always the sum. `'none'` never reports usage: no `usage` in a non-streamed body or in
   * embeddings, and no usage chunk (nor `usage: null` fields) in a stream even with include_usage.
   * Default (deterministic, see {@link defaultUsage}): chat `prompt_tokens` = {@link countPromptTokens} of the messages,
   * `completion_tokens` = the number of content-bearing stream chunks (text pieces + per tool call 1 header delta + its
   * argument pieces), the same whether streamed or not: 5 for the default reply. Embeddings: `prompt_tokens` =
   * `total_tokens` = the words of all inputs (the token count for token-array inputs); only `prompt_tokens` of an explicit
   * value is used there.
   */
  usage?: { prompt_tokens: number; completion_tokens: number } | 'none';
  /** Answer this HTTP error instead of succeeding (e.g. 400, 429, 500, 503). Default: succeed (500 when only `failTimes` is set). */
  status?: number;
  /**
   * The error body. Default: OpenAI's shape for the status, `{error: {message, type, param: null, code}}` (429:
   * `type: 'requests'`, `code: 'rate_limit_exceeded'`; 5xx: `type: 'server_error'`…). A string is sent as-is as
   * `text/plain` (e.g. a proxy's HTML error page); anything else as JSON.
   */
  errorBody?: unknown;
  /** With an error, send `Retry-After: <retryAfter>` (seconds). */
  retryAfter?: number;
  /**
   * Answer the error (`status`, default 500) this many times, then succeed. With `behave` the count runs from the `behave`
   * call; a `behaveOnce` entry with `failTimes: n` answers n errors and then one success before it is used up.
   * Without `failTimes`, a `status` answers every request (`behave`) or one request (`behaveOnce`) with the error.
   */
  failTimes?: number;
  /** Wait this long before sending the response headers (errors included). Default 0. */
  firstByteDelayMs?: number;
  /** Wait this long before each stream chunk after the first (not before `[DONE]`). Default 0. */
  chunkDelayMs?: number;
  /**
   * Send this many chunk objects (counted as listed in the module comment: the role chunk is the first), then hang until
   * the client goes away; `0` hangs right after the headers; a count ≥ the number of chunks sends them all and hangs
   * before `[DONE]`. A non-streamed answer (chat, embeddings, models) sends only its headers and hangs, whatever the count.
   */
  stallAfterChunks?: number;
  /**
   * Send this many chunk objects (counted like `stallAfterChunks`), then destroy the socket (a mid-stream upstream failure;
   * the request gets `brokenAt`). A non-streamed answer sends its headers and half its body, then destroys the socket.
   */
  breakAfterChunks?: number;
  /** Answer with these tool calls: non-stream `message.tool_calls`, stream `delta.tool_calls` in pieces; `finish_reason: 'tool_calls'`. */
  toolCalls?: Array<{ id: string; name: string; arguments: string }>;
  /** Override the `finish_reason`. Default `'tool_calls'` with `toolCalls`, else `'stop'`. */
  finishReason?: string;
}

export interface FakeOpenAI {
  /** Base URL including `/v1`, e.g. `http://127.0.0.1:PORT/v1` (what the SDK's `baseURL` takes). */
  url: string;
  /** Every request received, in arrival order (also 401s and 404s). `reset` empties this same array. */
  requests: RecordedRequest[];
  /** The default behaviour for subsequent requests (replaces the previous one and restarts its `failTimes` count). */
  behave(b: Behaviour): void;
  /** Queue a behaviour: the next request it matches uses it (see `failTimes`), then later ones fall back to `behave`'s. */
  behaveOnce(b: Behaviour): void;
  /** Forget recorded requests, the default behaviour and the queue (responses in flight go on). */
  reset(): void;
  /**
   * Resolves when the request with this index (waiting for it to arrive) has been aborted by the client, finished, or
   * broken by `breakAfterChunks`, whichever first; rejects after `timeoutMs` (default 5000).
   */
  waitForEnd(index: number, timeoutMs?: number): Promise<'aborted' | 'finished' | 'broken'>;
  /** Stop listening and destroy every open connection (stalled responses included). */
  close(): Promise<void>;
}

type JsonRecord = Record<string, unknown>;

function isRecord(value: unknown): value is JsonRecord {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function words(text: string): number {
  return text.split(/\s+/).filter((w) => w !== '').length;
}

/** The text parts of a message's `content`: the string itself, or the `text` of `{type: 'text', text}` parts. */
function messageText(content: unknown): string[] {
  if (typeof content === 'string') return [content];
  if (!Array.isArray(content)) return [];
  return content.flatMap((part) => (isRecord(part) && typeof part.text === 'string' ? [part.text] : []));
}

/** The default chat `prompt_tokens`: whitespace-separated words across the text of all messages (string contents and `text` parts). */
export function countPromptTokens(messages: unknown): number {
  if (!Array.isArray(messages)) return 0;
  return messages.reduce<number>((n, m) => n + (isRecord(m) ? messageText(m.content).reduce((k, t) => k + words(t), 0) : 0), 0);
}

/** Splits a reply into stream pieces: each word with the whitespace after it (leading whitespace stays with the first). Concatenates back to `text`. */
export function splitReply(text: string): string[] {
  return text.match(/\s*\S+\s*/g) ?? (text === '' ? [] : [text]);
}

function splitArguments(args: string): string[] {
  const pieces: string[] = [];
  for (let i = 0; i < args.length; i += TOOL_ARGUMENT_PIECE) pieces.push(args.slice(i, i + TOOL_ARGUMENT_PIECE));
  return pieces;
}

interface Answer {
  pieces: string[];
  toolCalls: Array<{ id: string; name: string; arguments: string }>;
  finishReason: string;
  completionTokens: number;
}

function answerFor(b: Behaviour): Answer {
  const toolCalls = b.toolCalls ?? [];
  const pieces = b.chunks ?? (b.reply !== undefined || toolCalls.length === 0 ? splitReply(b.reply ?? DEFAULT_REPLY) : []);
  const completionTokens = pieces.length + toolCalls.reduce((n, c) => n + 1 + splitArguments(c.arguments).length, 0);
  return { pieces, toolCalls, finishReason: b.finishReason ?? (toolCalls.length > 0 ? 'tool_calls' : 'stop'), completionTokens };
}

/**
 * The usage a chat request answered with behaviour `b` reports (`undefined` for `usage: 'none'`): what tests compare against.
 * `body` is the request body (its `messages` are counted).
 */
export function defaultUsage(body: unknown, b: Behaviour = {}): { prompt_tokens: number; completion_tokens: number; total_tokens: number } | undefined {
  if (b.usage === 'none') return undefined;
  const prompt = b.usage?.prompt_tokens ?? countPromptTokens(isRecord(body) ? body.messages : undefined);
  const completion = b.usage?.completion_tokens ?? answerFor(b).completionTokens;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/**
 * The fake's embedding of `text`: `dimensions` values from SHA-256 of `"<block>:<text>"` (4 bytes per value, mapped to
 * [-1, 1]), L2-normalised. Equal texts give equal vectors; the base64 form carries them as Float32.
 */
export function fakeEmbedding(text: string, dimensions: number = DEFAULT_EMBEDDING_DIMENSIONS): number[] {
  const values: number[] = [];
  for (let block = 0; values.length < dimensions; block++) {
    const digest = createHash('sha256').update(`${block}:${text}`).digest();
    for (let i = 0; i + 4 <= digest.length && values.length < dimensions; i += 4) values.push(digest.readUInt32BE(i) / 0xffffffff * 2 - 1);
  }
  const norm = Math.sqrt(values.reduce((s, v) => s + v * v, 0)) || 1;
  return values.map((v) => v / norm);
}

const ERROR_DEFAULTS: Record<number, { type: string; code: string | null; message: string }> = {
  400: { type: 'invalid_request_error', code: null, message: 'Bad request (fake upstream).' },
  401: { type: 'invalid_request_error', code: 'invalid_api_key', message: 'Incorrect API key provided.' },
  403: { type: 'invalid_request_error', code: 'unsupported_country_region_territory', message: 'Forbidden (fake upstream).' },
  404: { type: 'invalid_request_error', code: 'model_not_found', message: 'The model does not exist or you do not have access to it.' },
  408: { type: 'invalid_request_error', code: null, message: 'Request timed out (fake upstream).' },
  413: { type: 'invalid_request_error', code: null, message: 'Request too large (fake upstream).' },
  422: { type: 'invalid_request_error', code: null, message: 'Unprocessable entity (fake upstream).' },
  429: { type: 'requests', code: 'rate_limit_exceeded', message: 'Rate limit reached for requests (fake upstream).' },
};

function openAIError(status: number, message?: string, param: string | null = null, code?: string | null): { error: JsonRecord } {
  const d = ERROR_DEFAULTS[status] ?? (status >= 500
    ? { type: 'server_error', code: null, message: `The server had an error while processing your request (fake upstream, HTTP ${status}).` }
    : { type: 'invalid_request_error', code: null, message: `Request failed (fake upstream, HTTP ${status}).` });
  return { error: { message: message ?? d.message, type: d.type, param, code: code === undefined ? d.code : code } };
}

/** One request/response exchange: lets waits end early when the client goes away. */
class Exchange {
  over = false;
  broken = false;
  private readonly wakers = new Set<() => void>();

  constructor(readonly res: ServerResponse) {}

  /** Resolves true after `ms`, or false as soon as the exchange is over (at once if it already is). */
  pause(ms: number): Promise<boolean> {
    if (this.over) return Promise.resolve(false);
    if (ms <= 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve(!this.over);
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }

  /** Resolves when the exchange is over (the client or `close` ended the connection). */
  hang(): Promise<void> {
    if (this.over) return Promise.resolve();
    return new Promise((resolve) => this.wakers.add(resolve));
  }

  end(): void {
    this.over = true;
    for (const wake of [...this.wakers]) wake();
    this.wakers.clear();
  }

  /** Writes unless the exchange is over; Node sends each write at once (no Nagle, chunked encoding). */
  write(data: string | Buffer): boolean {
    if (this.over || this.res.destroyed) return false;
    this.res.write(data);
    return true;
  }

  breakConnection(): void {
    this.broken = true;
    this.res.destroy();
  }
}

interface BehaviourState {
  b: Behaviour;
  uses: number;
}

function matches(b: Behaviour, route: FakeRoute): boolean {
  return b.route === undefined || b.route === route;
}

/** Whether this use (1-based) of a behaviour answers its error. */
function failsOn(b: Behaviour, use: number): boolean {
  if (b.failTimes !== undefined) return use <= b.failTimes;
  return b.status !== undefined;
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  const text = Buffer.concat(parts).toString('utf8');
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function requestId(): string {
  return `req_${randomBytes(12).toString('hex')}`;
}

/** Starts the fake on 127.0.0.1 and an ephemeral port. */
export async function startFakeOpenAI(options: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const models = options.models ?? [...DEFAULT_MODELS];
  const requests: RecordedRequest[] = [];
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let fallback: BehaviourState = { b: {}, uses: 0 };
  const queue: BehaviourState[] = [];
  let closing = false;

  /** Picks (and counts a use of) the behaviour for a request to `route`. */
  function take(route: FakeRoute): { b: Behaviour; fail: boolean } {
    const index = queue.findIndex((s) => matches(s.b, route));
    const state = index >= 0 ? queue[index]! : matches(fallback.b, route) ? fallback : { b: {}, uses: 0 };
    state.uses++;
    const fail = failsOn(state.b, state.uses);
    if (index >= 0 && (state.b.failTimes === undefined || state.uses > state.b.failTimes)) queue.splice(index, 1);
    return { b: state.b, fail };
  }

  function sendJson(ex: Exchange, status: number, body: unknown, extra: Record<string, string> = {}): void {
    if (ex.over) return;
    const text = JSON.stringify(body);
    ex.res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-request-id': requestId(), ...extra });
    ex.res.end(text);
  }

  /** A non-streamed success, honouring stall/break. */
  async function sendBody(ex: Exchange, b: Behaviour, body: unknown): Promise<void> {
    if (ex.over) return;
    if (b.stallAfterChunks === undefined && b.breakAfterChunks === undefined) return sendJson(ex, 200, body);
    const text = Buffer.from(JSON.stringify(body));
    ex.res.writeHead(200, { 'content-type': 'application/json', 'content-length': text.length, 'x-request-id': requestId() });
    ex.res.flushHeaders();
    if (b.stallAfterChunks !== undefined) return ex.hang();
    ex.write(text.subarray(0, Math.floor(text.length / 2)));
    // Give the half body a moment to leave before the socket goes.
    if (await ex.pause(20)) ex.breakConnection();
  }

  async function sendError(ex: Exchange, b: Behaviour): Promise<void> {
    const status = b.status ?? 500;
    const headers: Record<string, string> = b.retryAfter !== undefined ? { 'retry-after': String(b.retryAfter) } : {};
    if (typeof b.errorBody === 'string') {
      if (ex.over) return;
      ex.res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(b.errorBody), 'x-request-id': requestId(), ...headers });
      ex.res.end(b.errorBody);
      return;
    }
    sendJson(ex, status, b.errorBody ?? openAIError(status), headers);
  }

  async function chat(ex: Exchange, b: Behaviour, body: JsonRecord, model: string): Promise<void> {
    const answer = answerFor(b);
    const usage = defaultUsage(body, b);
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);

    if (body.stream !== true) {
      const message: JsonRecord = { role: 'assistant', content: answer.pieces.length > 0 || answer.toolCalls.length === 0 ? answer.pieces.join('') : null, refusal: null };
      if (answer.toolCalls.length > 0) {
        message.tool_calls = answer.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }));
      }
      const completion: JsonRecord = {
        id, object: 'chat.completion', created, model, system_fingerprint: 'fp_fake',
        choices: [{ index: 0, message, logprobs: null, finish_reason: answer.finishReason }],
      };
      if (usage) completion.usage = usage;
      return sendBody(ex, b, completion);
    }

    const includeUsage = isRecord(body.stream_options) && body.stream_options.include_usage === true && usage !== undefined;
    const chunk = (delta: JsonRecord, finishReason: string | null = null): JsonRecord => ({
      id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      ...(includeUsage ? { usage: null } : {}),
    });
    const chunks: JsonRecord[] = [chunk({ role: 'assistant', content: answer.pieces.length > 0 || answer.toolCalls.length === 0 ? '' : null, refusal: null })];
    for (const piece of answer.pieces) chunks.push(chunk({ content: piece }));
    answer.toolCalls.forEach((c, index) => {
      chunks.push(chunk({ tool_calls: [{ index, id: c.id, type: 'function', function: { name: c.name, arguments: '' } }] }));
      for (const piece of splitArguments(c.arguments)) chunks.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }));
    });
    chunks.push(chunk({}, answer.finishReason));
    if (includeUsage) chunks.push({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices: [], usage });

    if (ex.over) return;
    ex.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-request-id': requestId() });
    ex.res.flushHeaders();
    for (let i = 0; i <= chunks.length; i++) {
      if (b.stallAfterChunks === i) return ex.hang();
      if (b.breakAfterChunks === i) {
        // Let what was written leave before the socket goes, so the client sees the chunks and then the failure.
        if (await ex.pause(20)) ex.breakConnection();
        return;
      }
      if (i === chunks.length) break;
      if (i > 0 && !(await ex.pause(b.chunkDelayMs ?? 0))) return;
      if (!ex.write(`data: ${JSON.stringify(chunks[i])}\n\n`)) return;
    }
    if (b.stallAfterChunks !== undefined && b.stallAfterChunks > chunks.length) return ex.hang();
    if (b.breakAfterChunks !== undefined && b.breakAfterChunks > chunks.length) {
      if (await ex.pause(20)) ex.breakConnection();
      return;
    }
    if (ex.write('data: [DONE]\n\n')) ex.res.end();
  }

  function embeddingInputs(input: unknown): { texts: string[]; tokens: number } | undefined {
    if (typeof input === 'string') return { texts: [input], tokens: words(input) };
    if (!Array.isArray(input) || input.length === 0) return undefined;
    const items: unknown[] = input;
    if (items.every((x): x is string => typeof x === 'string')) return { texts: items, tokens: items.reduce((n, t) => n + words(t), 0) };
    if (items.every((x): x is number => typeof x === 'number')) return { texts: [`tokens:${items.join(',')}`], tokens: items.length };
    const isTokens = (x: unknown): x is number[] => Array.isArray(x) && x.every((y) => typeof y === 'number');
    if (items.every(isTokens)) return { texts: items.map((l) => `tokens:${l.join(',')}`), tokens: items.reduce((n, l) => n + l.length, 0) };
    return undefined;
  }

  async function embeddings(ex: Exchange, b: Behaviour, body: JsonRecord, model: string): Promise<void> {
    const inputs = embeddingInputs(body.input);
    if (!inputs) return sendJson(ex, 400, openAIError(400, "'input' must be a non-empty string, array of strings, or array of token arrays.", 'input'));
    const dimensions = typeof body.dimensions === 'number' && Number.isInteger(body.dimensions) && body.dimensions > 0 ? body.dimensions : DEFAULT_EMBEDDING_DIMENSIONS;
    const base64 = body.encoding_format === 'base64';
    const data = inputs.texts.map((text, index) => {
      const vector = fakeEmbedding(text, dimensions);
      return { object: 'embedding', index, embedding: base64 ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector };
    });
    const response: JsonRecord = { object: 'list', data, model };
    if (b.usage !== 'none') {
      const prompt = b.usage?.prompt_tokens ?? inputs.tokens;
      response.usage = { prompt_tokens: prompt, total_tokens: prompt };
    }
    return sendBody(ex, b, response);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, ex: Exchange): Promise<void> {
    rec.body = await readBody(req);
    if (ex.over) return;
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return sendJson(ex, 401, openAIError(401, 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.'));
    }
    const route: FakeRoute | undefined =
      rec.method === 'POST' && rec.path === '/v1/chat/completions' ? 'chat'
        : rec.method === 'POST' && rec.path === '/v1/embeddings' ? 'embeddings'
          : rec.method === 'GET' && rec.path === '/v1/models' ? 'models'
            : undefined;
    if (!route) return sendJson(ex, 404, openAIError(404, `Invalid URL (${rec.method} ${rec.path})`, null, null));

    const { b, fail } = take(route);
    if (!(await ex.pause(b.firstByteDelayMs ?? 0))) return;
    if (fail) return sendError(ex, b);

    if (route === 'models') {
      return sendBody(ex, b, { object: 'list', data: models.map((id) => ({ id, object: 'model', created: MODEL_CREATED, owned_by: 'fake-upstream' })) });
    }
    if (!isRecord(rec.body)) return sendJson(ex, 400, openAIError(400, 'We could not parse the JSON body of your request.'));
    const body = rec.body;
    if (typeof body.model !== 'string' || body.model === '') return sendJson(ex, 400, openAIError(400, 'You must provide a model parameter.', 'model'));
    if (route === 'embeddings') return embeddings(ex, b, body, body.model);
    if (!Array.isArray(body.messages)) return sendJson(ex, 400, openAIError(400, "Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter'));
    return chat(ex, b, body, body.model);
  }

  const server = createServer({ noDelay: true }, (req, res) => {
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: new URL(req.url ?? '/', 'http://fake.invalid').pathname,
      headers: { ...req.headers },
      body: null,
      receivedAt: Date.now(),
    };
    requests.push(rec);
    const ex = new Exchange(res);
    res.on('finish', () => {
      rec.finishedAt ??= Date.now();
      events.emit('change');
    });
    res.on('close', () => {
      if (!res.writableFinished) {
        if (ex.broken) rec.brokenAt ??= Date.now();
        else if (!closing) rec.abortedAt ??= Date.now();
      }
      ex.end();
      events.emit('change');
    });
    events.emit('change');
    handle(req, res, rec, ex).catch((err: unknown) => {
      if (!res.headersSent && !ex.over) sendJson(ex, 500, openAIError(500, `Fake upstream failure: ${err instanceof Error ? err.message : String(err)}`));
      else res.destroy();
    });
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
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    behave(b) {
      fallback = { b, uses: 0 };
    },
    behaveOnce(b) {
      queue.push({ b, uses: 0 });
    },
    reset() {
      requests.length = 0;
      queue.length = 0;
      fallback = { b: {}, uses: 0 };
    },
    waitForEnd(index, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const r = requests[index];
          if (!r) return;
          const state = r.abortedAt !== undefined ? 'aborted' : r.brokenAt !== undefined ? 'broken' : r.finishedAt !== undefined ? 'finished' : undefined;
          if (state) {
            cleanup();
            resolve(state);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`fake OpenAI: request #${index} did not end within ${timeoutMs} ms (${requests.length} requests recorded)`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          events.off('change', check);
        };
        events.on('change', check);
        check();
      });
    },
    close() {
      closing = true;
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
