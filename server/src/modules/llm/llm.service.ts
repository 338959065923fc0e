import type { Logger } from 'pino';
import type { Principal } from '../../platform/auth.js';
import { AppError } from '../../platform/errors.js';
import type { UsageService } from '../usage/usage.service.js';
import { resolveModel, type LlmConfig, type ModelConfig, type PresetConfig } from './llm.config.js';
import type { Outcome, Reservation } from '../usage/usage.service.js';
import {
  UpstreamError,
  type ChatChunk, type ChatCompletion, type ChatMessage, type ChatRequest, type EmbeddingsRequest, type EmbeddingsResponse, type Provider, type RawStream, type Usage,
} from './providers/provider.js';
import { StreamTally, WireRelay } from './relay.js';
import { estimatePromptTokens, estimateTextTokens, textOf } from './tokens.js';

/** Token counting with the gateway's tokenizer, for modules that budget context (chat). */
export { estimateTextTokens } from './tokens.js';

export interface CallMeta {
  /** What is metered as the endpoint, e.g. `/v1/chat/completions`, `/llm/code/stream`. */
  endpoint: string;
  requestId: string;
  /** Aborted when the client goes away: the upstream request is cancelled. */
  signal: AbortSignal;
  /** Chat links usage rows to the assistant message. */
  messageId?: string | null;
  /**
   * Non-streamed calls: return without waiting for the usage row (HTTP routes, whose response then
   * does not wait for the database). By default the call returns once its row is written, so a caller
   * that reads usage right after (chat's titles) finds it. Streams never wait: see `ChatStream.metered`.
   */
  meterInBackground?: boolean;
}

export interface MeteredUsage extends Usage {
  estimated: boolean;
  cost_usd: number;
}

/** A chat stream: the chunks, then (once it has ended, however) what was metered. */
export interface ChatStream extends AsyncIterable<ChatChunk> {
  readonly model: string;
  /** What the call used, known as soon as the stream has ended (before its usage row is written). */
  readonly usage: Promise<MeteredUsage>;
  /** Resolves after the stream ended and its one usage row was written. */
  readonly metered: Promise<MeteredUsage>;
}

/**
 * A stream for `/v1/chat/completions`: pieces ready to go on the wire — the upstream's own SSE bytes
 * (a Buffer of complete `data:` events) where Keel has nothing to change, or chunks Keel serializes.
 */
export interface WireStream extends Omit<ChatStream, typeof Symbol.asyncIterator> {
  [Symbol.asyncIterator](): AsyncIterator<Buffer | ChatChunk>;
}

interface Target {
  requested: string;
  preset: PresetConfig | undefined;
  models: ModelConfig[];
}

/** The prompt's token estimate, worked out once and only when something needs it (a budget, or metering without reported usage). */
interface Estimate {
  readonly prompt: number;
  /** What the reservation holds: the prompt plus the completion allowance, and its worst-case cost. */
  readonly budget: { tokens: number; costUsd: number };
}

/** One streamed call, from its reservation to its usage row. */
interface StreamCall {
  readonly request: ChatRequest;
  readonly meta: CallMeta;
  readonly wire: { includeUsage: boolean } | undefined;
  readonly target: Target;
  readonly estimate: Estimate;
  readonly reservation: Reservation;
  readonly started: number;
  /** Resolved as the stream ends, with what it used. */
  readonly usage: Settlable<MeteredUsage>;
  /** Resolved once its usage row was written. */
  readonly metered: Settlable<MeteredUsage>;
}

/** Where a stream's pieces come from once the upstream answered. */
interface PieceSource {
  /** The next piece, or undefined at the end. */
  next(): Promise<Buffer | ChatChunk | undefined>;
  close(): void;
}

/**
 * The LLM gateway: resolves a model name (alias, `provider/model` or preset) to upstream models,
 * applies the preset, reserves the caller's budget before calling, tries fallbacks before the first
 * byte, and meters every call exactly once — exact tokens when the upstream reports them, tokenizer
 * estimates (marked `estimated`) when it does not, aborted streams included. Prompt and output text are
 * never stored or logged.
 */
export class LlmGateway {
  /** Usage writes not yet finished: responses end without waiting for them, shutdown waits (`drain`). */
  private readonly settling = new Set<Promise<void>>();

  constructor(
    private readonly config: LlmConfig,
    private readonly providers: ReadonlyMap<string, Provider>,
    private readonly usage: UsageService,
    private readonly logger: Logger,
  ) {}

  /** Configured models, their aliases and the presets, in OpenAI's list format. */
  listModels() {
    const created = 1_700_000_000;
    const data = [
      ...[...this.config.models.values()].map((m) => ({ id: m.id, object: 'model' as const, created, owned_by: m.provider })),
      ...[...this.config.presets.values()].map((p) => ({ id: p.name, object: 'model' as const, created, owned_by: `keel-preset:${p.model}` })),
    ];
    return { object: 'list' as const, data };
  }

  preset(name: string): PresetConfig {
    const preset = this.config.presets.get(name);
    if (!preset) throw new AppError('preset_not_found', `No preset "${name}"; configured: ${[...this.config.presets.keys()].join(', ') || 'none'}.`, 404);
    return preset;
  }

  /** The context window, in tokens, of the model a name (model, alias or preset) resolves to; 404 when unknown. */
  contextWindow(name: string): number {
    return this.target(name).models[0]!.contextWindow;
  }

  private target(name: string): Target {
    const preset = this.config.presets.get(name);
    const names = preset ? [preset.model, ...preset.fallbacks] : [name];
    const models = names.map((n) => resolveModel(n, this.config)).filter((m): m is ModelConfig => m !== undefined);
    if (models.length === 0) {
      const hint = this.config.providers.size === 0 ? ' No LLM provider is configured (set LLM_BASE_URL/LLM_API_KEY/LLM_MODEL or a provider key).' : '';
      throw new AppError('model_not_found', `Unknown model "${name}": use an id from GET /v1/models.${hint}`, 404);
    }
    return { requested: name, preset, models };
  }

  private provider(model: ModelConfig): Provider {
    const provider = this.providers.get(model.provider);
    if (!provider) throw new AppError('model_not_found', `Model "${model.id}" names provider "${model.provider}", which is not configured.`, 404);
    return provider;
  }

  /**
   * The request as the upstream receives it: the preset's params under the client's, and the preset's
   * system prompt first — unless the request brings its own system message, which replaces it.
   */
  private prepare(request: ChatRequest, target: Target, model: ModelConfig): ChatRequest {
    return { ...(target.preset?.params ?? {}), ...request, messages: withPresetSystem(request.messages, target.preset), model: model.upstream };
  }

  private cost(model: ModelConfig, prompt: number, completion: number): number {
    if (!model.prices) return 0;
    return (prompt * model.prices.input_per_1m + completion * model.prices.output_per_1m) / 1_000_000;
  }

  /** The prompt's estimate, computed on first use: with reported usage and no budget it never is. */
  private estimate(request: ChatRequest, target: Target): Estimate {
    let prompt: number | undefined;
    const promptTokens = (): number => (prompt ??= estimatePromptTokens(withPresetSystem(request.messages, target.preset)));
    const config = this.config;
    const cost = this.cost.bind(this);
    return {
      get prompt() {
        return promptTokens();
      },
      get budget() {
        const completion = Number(request.max_tokens ?? request.max_completion_tokens ?? target.preset?.params.max_tokens ?? config.reserveCompletionTokens);
        const worst = Math.max(...target.models.map((m) => cost(m, promptTokens(), completion)));
        return { tokens: promptTokens() + completion, costUsd: worst };
      },
    };
  }

  /**
   * Resolves when every usage write started so far has ended (written, or failed and logged). Graceful
   * shutdown calls it after the last response and the last chat generation ended, before the database closes.
   */
  async drain(): Promise<void> {
    while (this.settling.size > 0) await Promise.allSettled([...this.settling]);
  }

  /**
   * Writes a call's usage row off the response's critical path: it starts once the current turn of the
   * event loop is over (so a response's last bytes, written in this turn, leave first) and is tracked
   * until it ends, for `drain`. A failed write is logged (never the prompt or output) and rejects.
   */
  private settleLater(reservation: Reservation, outcome: Outcome): Promise<void> {
    const write = new Promise<void>((resolve) => setImmediate(resolve)).then(() => reservation.settle(outcome));
    const tracked = write.then(
      () => undefined,
      (err: unknown) => this.logger.error({ err, endpoint: outcome.endpoint, model: outcome.model, status: outcome.status }, 'usage not recorded'),
    );
    this.settling.add(tracked);
    void tracked.finally(() => this.settling.delete(tracked));
    return write;
  }

  /** A non-streamed call's usage row: awaited, unless `meta.meterInBackground`; a failed write is logged, never the caller's error. */
  private async meter(reservation: Reservation, outcome: Outcome, meta: CallMeta): Promise<void> {
    const write = this.settleLater(reservation, outcome).catch(() => undefined);
    if (!meta.meterInBackground) await write;
  }

  /** A non-streamed chat completion, metered (see `CallMeta.meterInBackground`). */
  async complete(principal: Principal, request: ChatRequest, meta: CallMeta): Promise<{ completion: ChatCompletion; usage: MeteredUsage }> {
    const target = this.target(request.model);
    const estimate = this.estimate(request, target);
    const reservation = await this.usage.reserve(principal, () => estimate.budget, { requestId: meta.requestId });
    const started = performance.now();
    let model = target.models[0]!;
    try {
      const { result, used } = await this.withFallbacks(target, (m) => this.provider(m).chat(this.prepare(request, target, m), { signal: meta.signal }));
      model = used;
      const usage = this.metered(model, result.usage, estimate, () => result.choices.map((c) => textOf(c.message.content) + (c.message.tool_calls ? JSON.stringify(c.message.tool_calls) : '')).join(''));
      await this.meter(reservation, this.outcome(meta, model, usage, started, null, 'ok', null), meta);
      return { completion: { ...result, model: target.requested }, usage };
    } catch (err) {
      const status = meta.signal.aborted ? 'aborted' : 'error';
      await this.meter(reservation, this.outcome(meta, model, this.metered(model, undefined, estimate, () => ''), started, null, status, codeOf(err)), meta);
      throw err;
    }
  }

  /**
   * A streamed chat completion. Iterating it calls the upstream; stopping early (or aborting
   * `meta.signal`) cancels the upstream request. Metered once when the stream ends, however it ends.
   */
  async stream(principal: Principal, request: ChatRequest, meta: CallMeta): Promise<ChatStream> {
    // Without `wire` every piece is a chunk (the byte relay is only for /v1's wire format).
    return (await this.open(principal, request, meta, undefined)) as ChatStream;
  }

  /**
   * The same for `/v1/chat/completions`: where the model needs no renaming and the provider speaks
   * OpenAI's wire format, the pieces are the upstream's SSE bytes, relayed as they arrive (see
   * WireRelay); otherwise chunks (with `model` set to the name the client used). The usage chunk is
   * kept only when `includeUsage`.
   */
  async wireStream(principal: Principal, request: ChatRequest, meta: CallMeta, includeUsage: boolean): Promise<WireStream> {
    return this.open(principal, request, meta, { includeUsage });
  }

  private async open(principal: Principal, request: ChatRequest, meta: CallMeta, wire: { includeUsage: boolean } | undefined): Promise<WireStream> {
    const target = this.target(request.model);
    const estimate = this.estimate(request, target);
    const reservation = await this.usage.reserve(principal, () => estimate.budget, { requestId: meta.requestId });
    const call: StreamCall = { request, meta, wire, target, estimate, reservation, started: performance.now(), usage: settlable(), metered: settlable() };
    return { model: target.requested, usage: call.usage.promise, metered: call.metered.promise, [Symbol.asyncIterator]: () => this.pieces(call) };
  }

  private async* pieces(call: StreamCall): AsyncGenerator<Buffer | ChatChunk> {
    const { request, meta, wire, target, estimate, started } = call;
    const tally = new StreamTally(started);
    let model = target.models[0]!;
    let status: 'ok' | 'error' | 'aborted' = 'ok';
    let errorCode: string | null = null;
    let source: PieceSource | undefined;
    let completed = false;
    try {
      // Fallbacks apply until the first piece arrives; after that the stream is committed.
      const { result, used } = await this.withFallbacks(target, async (m) => {
        const opened = await this.source(m, request, target, meta, wire, tally);
        try {
          return { source: opened, first: await opened.next() };
        } catch (err) {
          opened.close();
          throw err;
        }
      });
      source = result.source;
      model = used;
      for (let piece = result.first; piece !== undefined; piece = await source.next()) yield piece;
      completed = true;
    } catch (err) {
      status = meta.signal.aborted || codeOf(err) === 'upstream_aborted' ? 'aborted' : 'error';
      errorCode = codeOf(err);
      throw err;
    } finally {
      // Runs however the stream ends — done, error, or the consumer stopping (client gone) — once.
      // Closing the source cancels the upstream request if it is still open.
      source?.close();
      if (!completed && status === 'ok') status = 'aborted';
      const counted = this.metered(model, tally.reported, estimate, () => tally.completionText());
      call.usage.resolve(counted);
      this.settleLater(call.reservation, this.outcome(meta, model, counted, started, tally.ttft, status, errorCode)).then(() => call.metered.resolve(counted), call.metered.reject);
    }
  }

  /** Calls one model's upstream for a stream: raw bytes where they can be relayed as they are, else chunks. */
  private async source(model: ModelConfig, request: ChatRequest, target: Target, meta: CallMeta, wire: { includeUsage: boolean } | undefined, tally: StreamTally): Promise<PieceSource> {
    const provider = this.provider(model);
    const prepared = this.prepare(request, target, model);
    const options = { signal: meta.signal };
    if (wire && provider.openStream && model.upstream === target.requested) {
      return rawSource(await provider.openStream(prepared, options), new WireRelay(tally, wire.includeUsage, `${provider.name} (${model.upstream})`));
    }
    const iterator = provider.stream(prepared, options)[Symbol.asyncIterator]();
    const requested = target.requested;
    return {
      async next() {
        const r = await iterator.next();
        if (r.done) return undefined;
        tally.chunk(r.value);
        return { ...r.value, model: requested };
      },
      close() {
        void iterator.return?.()?.catch(() => undefined);
      },
    };
  }

  /** Embeddings, metered (prompt tokens only). */
  async embeddings(principal: Principal, request: EmbeddingsRequest, meta: CallMeta): Promise<EmbeddingsResponse> {
    const target = this.target(request.model);
    const inputs = Array.isArray(request.input) ? request.input : [request.input];
    const prompt = inputs.reduce<number>((n, i) => n + (typeof i === 'string' ? estimateTextTokens(i) : Array.isArray(i) ? i.length : 1), 0);
    const reservation = await this.usage.reserve(principal, { tokens: prompt, costUsd: this.cost(target.models[0]!, prompt, 0) }, { requestId: meta.requestId });
    const started = performance.now();
    let model = target.models[0]!;
    try {
      const { result, used } = await this.withFallbacks(target, (m) => this.provider(m).embeddings({ ...request, model: m.upstream }, { signal: meta.signal }));
      model = used;
      const exact = result.usage?.prompt_tokens;
      const usage: MeteredUsage = { prompt_tokens: exact ?? prompt, completion_tokens: 0, total_tokens: exact ?? prompt, estimated: exact === undefined, cost_usd: this.cost(model, exact ?? prompt, 0) };
      await this.meter(reservation, this.outcome(meta, model, usage, started, null, 'ok', null), meta);
      return { ...result, model: target.requested };
    } catch (err) {
      await this.meter(reservation, this.outcome(meta, model, { prompt_tokens: prompt, completion_tokens: 0, total_tokens: prompt, estimated: true, cost_usd: 0 }, started, null, meta.signal.aborted ? 'aborted' : 'error', codeOf(err)), meta);
      throw err;
    }
  }

  /** Tries the target's models in order while failures are retryable (before any byte was received). */
  private async withFallbacks<T>(target: Target, call: (model: ModelConfig) => Promise<T>): Promise<{ result: T; used: ModelConfig }> {
    let lastError: unknown;
    for (const model of target.models) {
      try {
        return { result: await call(model), used: model };
      } catch (err) {
        lastError = err;
        if (!(err instanceof UpstreamError) || !err.retryable || err.code === 'upstream_aborted') throw err;
        this.logger.warn({ model: model.id, code: err.code }, 'upstream failed; trying the next model');
      }
    }
    throw lastError;
  }

  /** What a call used: the upstream's report, else tokenizer estimates of the prompt and of `text()` (marked estimated). */
  private metered(model: ModelConfig, reported: Usage | undefined, estimate: Estimate, text: () => string): MeteredUsage {
    if (reported) {
      const total = reported.total_tokens || reported.prompt_tokens + reported.completion_tokens;
      return { prompt_tokens: reported.prompt_tokens, completion_tokens: reported.completion_tokens, total_tokens: total, estimated: false, cost_usd: this.cost(model, reported.prompt_tokens, reported.completion_tokens) };
    }
    const prompt = this.counted(() => estimate.prompt);
    const completion = this.counted(() => estimateTextTokens(text()));
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, estimated: true, cost_usd: this.cost(model, prompt, completion) };
  }

  /** A tokenizer count that cannot fail the metering of a call (its one usage row must be written): 0, logged, if it throws. */
  private counted(count: () => number): number {
    try {
      return count();
    } catch (err) {
      // Only the error's name: a tokenizer's message may quote the text it was given.
      this.logger.error({ err: { name: (err as Error).name } }, 'token estimate failed; metered as 0');
      return 0;
    }
  }

  private outcome(meta: CallMeta, model: ModelConfig, usage: MeteredUsage, started: number, ttft: number | null, status: 'ok' | 'error' | 'aborted', errorCode: string | null): Outcome {
    return {
      endpoint: meta.endpoint,
      provider: model.provider,
      model: model.id,
      promptTokens: usage.prompt_tokens,
      completionTokens: usage.completion_tokens,
      estimated: usage.estimated,
      costUsd: usage.cost_usd,
      latencyMs: Math.round(performance.now() - started),
      ttftMs: ttft === null ? null : Math.round(ttft),
      status,
      errorCode,
      messageId: meta.messageId ?? null,
    };
  }
}

function withPresetSystem(messages: ChatMessage[], preset: PresetConfig | undefined): ChatMessage[] {
  const own = messages[0]?.role === 'system' || messages[0]?.role === 'developer';
  return preset?.system && !own ? [{ role: 'system', content: preset.system }, ...messages] : messages;
}

function codeOf(err: unknown): string {
  return err instanceof AppError ? err.code : 'internal_error';
}

/** Pieces from a raw upstream body: each read becomes at most one piece (see WireRelay). */
function rawSource(body: RawStream, relay: WireRelay): PieceSource {
  return {
    async next() {
      while (!relay.done) {
        const bytes = await body.read();
        if (bytes === undefined) return undefined;
        const out = relay.push(bytes);
        if (out !== undefined) return out;
      }
      return undefined;
    },
    close: () => body.close(),
  };
}

interface Settlable<T> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
  readonly reject: (err: unknown) => void;
}

/** A promise with its resolve and reject at hand; never an unhandled rejection. */
function settlable<T>(): Settlable<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
