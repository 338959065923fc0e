import type { Logger } from 'pino';
import type { Principal } from '../../platform/auth.js';
import { AppError } from '../../platform/errors.js';
import type { UsageService } from '../usage/usage.service.js';
import { resolveModel, type LlmConfig, type ModelConfig, type PresetConfig } from './llm.config.js';
import {
  UpstreamError,
  type ChatChunk, type ChatCompletion, type ChatMessage, type ChatRequest, type EmbeddingsRequest, type EmbeddingsResponse, type Provider, type Usage,
} from './providers/provider.js';
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
}

export interface MeteredUsage extends Usage {
  estimated: boolean;
  cost_usd: number;
}

/** A chat stream: the chunks, then (once it has ended, however) what was metered. */
export interface ChatStream extends AsyncIterable<ChatChunk> {
  readonly model: string;
  /** Resolves after the stream ended and its one usage row was written. */
  readonly metered: Promise<MeteredUsage>;
}

interface Target {
  requested: string;
  preset: PresetConfig | undefined;
  models: ModelConfig[];
}

/**
 * The LLM gateway: resolves a model name (alias, `provider/model` or preset) to upstream models,
 * applies the preset, reserves the caller's budget before calling, tries fallbacks before the first
 * byte, and meters every call exactly once — exact tokens when the upstream reports them, tokenizer
 * estimates (marked `estimated`) when it does not, aborted streams included. Prompt and output text are
 * never stored or logged.
 */
export class LlmGateway {
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

  private estimate(request: ChatRequest, target: Target) {
    const prompt = estimatePromptTokens(withPresetSystem(request.messages, target.preset));
    const completion = Number(request.max_tokens ?? request.max_completion_tokens ?? target.preset?.params.max_tokens ?? this.config.reserveCompletionTokens);
    const worst = Math.max(...target.models.map((m) => this.cost(m, prompt, completion)));
    return { prompt, tokens: prompt + completion, costUsd: worst };
  }

  /** A non-streamed chat completion, metered. */
  async complete(principal: Principal, request: ChatRequest, meta: CallMeta): Promise<{ completion: ChatCompletion; usage: MeteredUsage }> {
    const target = this.target(request.model);
    const estimate = this.estimate(request, target);
    const reservation = await this.usage.reserve(principal, { tokens: estimate.tokens, costUsd: estimate.costUsd }, { requestId: meta.requestId });
    const started = performance.now();
    let model = target.models[0]!;
    try {
      const { result, used } = await this.withFallbacks(target, (m) => this.provider(m).chat(this.prepare(request, target, m), { signal: meta.signal }));
      model = used;
      const text = result.choices.map((c) => textOf(c.message.content) + (c.message.tool_calls ? JSON.stringify(c.message.tool_calls) : '')).join('');
      const usage = this.metered(model, result.usage, estimate.prompt, text);
      await reservation.settle(this.outcome(meta, model, usage, started, null, 'ok', null));
      return { completion: { ...result, model: target.requested }, usage };
    } catch (err) {
      const status = meta.signal.aborted ? 'aborted' : 'error';
      await reservation.settle(this.outcome(meta, model, this.metered(model, undefined, estimate.prompt, ''), started, null, status, codeOf(err)));
      throw err;
    }
  }

  /**
   * A streamed chat completion. Iterating it calls the upstream; stopping early (or aborting
   * `meta.signal`) cancels the upstream request. Metered once when the stream ends, however it ends.
   */
  async stream(principal: Principal, request: ChatRequest, meta: CallMeta): Promise<ChatStream> {
    const target = this.target(request.model);
    const estimate = this.estimate(request, target);
    const reservation = await this.usage.reserve(principal, { tokens: estimate.tokens, costUsd: estimate.costUsd }, { requestId: meta.requestId });
    const started = performance.now();
    let settle!: (u: MeteredUsage) => void;
    let fail!: (e: unknown) => void;
    const metered = new Promise<MeteredUsage>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    metered.catch(() => undefined);
    const gateway = { withFallbacks: this.withFallbacks.bind(this), provider: this.provider.bind(this), prepare: this.prepare.bind(this), metered: this.metered.bind(this), outcome: this.outcome.bind(this), logger: this.logger };

    async function* chunks(): AsyncGenerator<ChatChunk> {
      let model = target.models[0]!;
      let text = '';
      let reported: Usage | undefined;
      let ttft: number | null = null;
      let status: 'ok' | 'error' | 'aborted' = 'ok';
      let errorCode: string | null = null;
      let upstream: AsyncIterator<ChatChunk> | undefined;
      let completed = false;
      try {
        const { result, used, first } = await gateway.withFallbacks(target, async (m) => {
          // Fallbacks apply until the first chunk arrives; after that the stream is committed.
          const iterator = gateway.provider(m).stream(gateway.prepare(request, target, m), { signal: meta.signal })[Symbol.asyncIterator]();
          const head = await iterator.next();
          return { iterator, head };
        }).then(({ result, used }) => ({ result: result.iterator, used, first: result.head }));
        upstream = result;
        model = used;
        let next = first;
        while (!next.done) {
          const chunk = next.value;
          if (chunk.usage) reported = chunk.usage;
          for (const choice of chunk.choices) {
            const piece = (typeof choice.delta.content === 'string' ? choice.delta.content : '') + (choice.delta.tool_calls ? JSON.stringify(choice.delta.tool_calls) : '');
            if (piece && ttft === null) ttft = performance.now() - started;
            text += piece;
          }
          yield { ...chunk, model: target.requested };
          next = await upstream.next();
        }
        completed = true;
      } catch (err) {
        status = meta.signal.aborted || codeOf(err) === 'upstream_aborted' ? 'aborted' : 'error';
        errorCode = codeOf(err);
        throw err;
      } finally {
        // Runs however the stream ends — done, error, or the consumer stopping (client gone) — once.
        // Closing the upstream iterator cancels the upstream request if it is still open.
        await upstream?.return?.().catch(() => undefined);
        if (!completed && status === 'ok') status = 'aborted';
        const usage = gateway.metered(model, reported, estimate.prompt, text);
        try {
          await reservation.settle(gateway.outcome(meta, model, usage, started, ttft, status, errorCode));
          settle(usage);
        } catch (e) {
          gateway.logger.error({ err: e }, 'usage not recorded');
          fail(e);
        }
      }
    }
    return { model: target.requested, metered, [Symbol.asyncIterator]: chunks };
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
      await reservation.settle(this.outcome(meta, model, usage, started, null, 'ok', null));
      return { ...result, model: target.requested };
    } catch (err) {
      await reservation.settle(this.outcome(meta, model, { prompt_tokens: prompt, completion_tokens: 0, total_tokens: prompt, estimated: true, cost_usd: 0 }, started, null, meta.signal.aborted ? 'aborted' : 'error', codeOf(err)));
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

  private metered(model: ModelConfig, reported: Usage | undefined, promptEstimate: number, text: string): MeteredUsage {
    if (reported) {
      const total = reported.total_tokens || reported.prompt_tokens + reported.completion_tokens;
      return { prompt_tokens: reported.prompt_tokens, completion_tokens: reported.completion_tokens, total_tokens: total, estimated: false, cost_usd: this.cost(model, reported.prompt_tokens, reported.completion_tokens) };
    }
    const completion = estimateTextTokens(text);
    return { prompt_tokens: promptEstimate, completion_tokens: completion, total_tokens: promptEstimate + completion, estimated: true, cost_usd: this.cost(model, promptEstimate, completion) };
  }

  private outcome(meta: CallMeta, model: ModelConfig, usage: MeteredUsage, started: number, ttft: number | null, status: 'ok' | 'error' | 'aborted', errorCode: string | null) {
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
