import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { LIMIT_NAMES, type Limits } from '../usage/usage.service.js';
import type { ResilienceOptions } from './providers/provider.js';

// Limits are the usage module's; the configuration only reads them.
export { LIMIT_NAMES, type Limits } from '../usage/usage.service.js';

export interface ProviderConfig {
  readonly name: string;
  readonly kind: 'openai' | 'anthropic';
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly resilience: ResilienceOptions;
}

export interface Prices {
  /** USD per million prompt (input) tokens. */
  readonly input_per_1m: number;
  /** USD per million completion (output) tokens. */
  readonly output_per_1m: number;
}

export interface ModelConfig {
  /** The name clients use (an alias, or `provider/model`). */
  readonly id: string;
  readonly provider: string;
  /** The upstream's own model name. */
  readonly upstream: string;
  readonly contextWindow: number;
  readonly prices: Prices | undefined;
  readonly kind: 'chat' | 'embeddings';
}

export interface PresetConfig {
  readonly name: string;
  readonly model: string;
  readonly system: string | undefined;
  readonly params: Readonly<Record<string, unknown>>;
  /** Models tried in order when the first fails before its first byte. */
  readonly fallbacks: readonly string[];
}

export interface LlmConfig {
  readonly providers: ReadonlyMap<string, ProviderConfig>;
  readonly models: ReadonlyMap<string, ModelConfig>;
  readonly presets: ReadonlyMap<string, PresetConfig>;
  readonly limits: { readonly user: Limits; readonly apiKey: Limits };
  /** Completion tokens reserved against budgets when a request sets no max_tokens. */
  readonly reserveCompletionTokens: number;
  /** Seconds between SSE heartbeat comments while waiting on the upstream. */
  readonly heartbeatSeconds: number;
  /** Where the configuration came from, for logs and `keel doctor`. */
  readonly sources: readonly string[];
}

const DEFAULT_RESILIENCE: ResilienceOptions = { connectTimeoutMs: 30_000, idleTimeoutMs: 60_000, maxRetries: 2, retryBaseMs: 250 };

/** Well-known OpenAI-compatible providers switched on by their API key variable. */
const KNOWN: ReadonlyArray<{ name: string; env: string; kind: 'openai' | 'anthropic'; baseUrl: string; model: string }> = [
  { name: 'openai', env: 'OPENAI_API_KEY', kind: 'openai', baseUrl: 'https://api.openai.com/v1', model: 'gpt-4o-mini' },
  { name: 'groq', env: 'GROQ_API_KEY', kind: 'openai', baseUrl: 'https://api.groq.com/openai/v1', model: 'llama-3.3-70b-versatile' },
  { name: 'mistral', env: 'MISTRAL_API_KEY', kind: 'openai', baseUrl: 'https://api.mistral.ai/v1', model: 'mistral-small-latest' },
  { name: 'anthropic', env: 'ANTHROPIC_API_KEY', kind: 'anthropic', baseUrl: 'https://api.anthropic.com', model: 'claude-sonnet-4-5' },
];

const DEFAULT_PRESETS: Record<string, { system: string; params: Record<string, unknown> }> = {
  code: { system: 'You are an expert programmer. Answer with correct, idiomatic, well-explained code.', params: { temperature: 0.2 } },
  general: { system: 'You are a helpful assistant. Answer clearly and concisely.', params: { temperature: 0.7 } },
  reasoning: { system: 'Think the problem through step by step before giving a final answer.', params: { temperature: 0.3 } },
};

export class LlmConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`LLM configuration is invalid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

interface FileShape {
  providers?: Record<string, { kind?: string; base_url?: string; api_key?: string; api_key_env?: string; headers?: Record<string, string>; connect_timeout_ms?: number; idle_timeout_ms?: number; max_retries?: number }>;
  models?: Record<string, { provider?: string; model?: string; context_window?: number; prices?: Prices; kind?: string }>;
  presets?: Record<string, { model?: string; system?: string; params?: Record<string, unknown>; fallbacks?: string[] }>;
  limits?: { user?: Limits; api_key?: Limits };
  reserve_completion_tokens?: number;
  heartbeat_seconds?: number;
}

/**
 * Providers, models, presets and limits from `keel.config.yaml`/`.json` (path in KEEL_CONFIG, or found
 * in the working directory) and the environment. With only LLM_BASE_URL/LLM_API_KEY/LLM_MODEL set,
 * every preset uses that one model. Any model of a configured provider can also be named
 * `provider/model`. Throws LlmConfigError listing every problem.
 */
export function loadLlmConfig(env: Record<string, string | undefined>, cwd = process.cwd()): LlmConfig {
  const problems: string[] = [];
  const sources: string[] = [];
  const file = readConfigFile(env, cwd, problems, sources);
  const providers = new Map<string, ProviderConfig>();
  const models = new Map<string, ModelConfig>();
  const presets = new Map<string, PresetConfig>();
  /** A non-negative number where one was given (else `fallback`); anything else is reported as `what`. */
  const num = (v: unknown, fallback: number, what = 'a setting', min = 0): number => {
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'number' && Number.isFinite(v) && v >= min) return v;
    problems.push(`${what} must be a number ≥ ${min} (got ${JSON.stringify(v)}).`);
    return fallback;
  };
  const resilience = (p: { connect_timeout_ms?: number; idle_timeout_ms?: number; max_retries?: number } = {}): ResilienceOptions => ({
    connectTimeoutMs: num(p.connect_timeout_ms ?? intEnv(env, 'LLM_CONNECT_TIMEOUT_MS'), DEFAULT_RESILIENCE.connectTimeoutMs, p.connect_timeout_ms !== undefined ? 'connect_timeout_ms' : 'LLM_CONNECT_TIMEOUT_MS', 1),
    idleTimeoutMs: num(p.idle_timeout_ms ?? intEnv(env, 'LLM_IDLE_TIMEOUT_MS'), DEFAULT_RESILIENCE.idleTimeoutMs, p.idle_timeout_ms !== undefined ? 'idle_timeout_ms' : 'LLM_IDLE_TIMEOUT_MS', 1),
    maxRetries: num(p.max_retries ?? intEnv(env, 'LLM_MAX_RETRIES'), DEFAULT_RESILIENCE.maxRetries, p.max_retries !== undefined ? 'max_retries' : 'LLM_MAX_RETRIES'),
    retryBaseMs: DEFAULT_RESILIENCE.retryBaseMs,
  });
  const addModel = (m: ModelConfig): void => {
    if (!models.has(m.id)) models.set(m.id, m);
  };

  let defaultModel: string | undefined;
  // 1. the one-provider shortcut of API.md
  const baseUrl = env.LLM_BASE_URL?.trim();
  if (baseUrl) {
    providers.set('default', { name: 'default', kind: 'openai', baseUrl: baseUrl.replace(/\/+$/, ''), apiKey: env.LLM_API_KEY?.trim() || undefined, headers: {}, resilience: resilience() });
    const model = env.LLM_MODEL?.trim();
    if (!model) problems.push('LLM_BASE_URL is set but LLM_MODEL is not: name the model every preset should use.');
    else {
      addModel({ id: model, provider: 'default', upstream: model, contextWindow: 128_000, prices: undefined, kind: 'chat' });
      defaultModel = model;
    }
    const embeddings = env.LLM_EMBEDDINGS_MODEL?.trim();
    if (embeddings) addModel({ id: embeddings, provider: 'default', upstream: embeddings, contextWindow: 8192, prices: undefined, kind: 'embeddings' });
    sources.push('LLM_BASE_URL');
  }
  // 2. well-known providers by their key
  for (const k of KNOWN) {
    const key = env[k.env]?.trim();
    if (!key || providers.has(k.name)) continue;
    providers.set(k.name, { name: k.name, kind: k.kind, baseUrl: k.baseUrl, apiKey: key, headers: {}, resilience: resilience() });
    addModel({ id: `${k.name}/${k.model}`, provider: k.name, upstream: k.model, contextWindow: 128_000, prices: undefined, kind: 'chat' });
    defaultModel ??= `${k.name}/${k.model}`;
    sources.push(k.env);
  }
  // 3. the file: providers, models (aliases), presets, limits
  for (const [name, p] of Object.entries(file.providers ?? {})) {
    const kind = p.kind === 'anthropic' ? 'anthropic' : p.kind === undefined || p.kind === 'openai' ? 'openai' : undefined;
    if (!kind) problems.push(`providers.${name}.kind must be "openai" or "anthropic".`);
    if (!p.base_url) problems.push(`providers.${name}.base_url is required.`);
    const apiKey = p.api_key_env ? env[p.api_key_env]?.trim() : p.api_key;
    if (p.api_key_env && !apiKey) problems.push(`providers.${name}: ${p.api_key_env} is not set.`);
    providers.set(name, { name, kind: kind ?? 'openai', baseUrl: (p.base_url ?? '').replace(/\/+$/, ''), apiKey, headers: p.headers ?? {}, resilience: resilience(p) });
  }
  for (const [id, m] of Object.entries(file.models ?? {})) {
    if (!m.provider || !providers.has(m.provider)) problems.push(`models.${id}.provider must name a configured provider (got "${m.provider ?? ''}").`);
    models.set(id, { id, provider: m.provider ?? '', upstream: m.model ?? id, contextWindow: num(m.context_window, 128_000), prices: m.prices, kind: m.kind === 'embeddings' ? 'embeddings' : 'chat' });
    defaultModel ??= id;
  }

  const fileDefault = Object.keys(file.models ?? {})[0];
  for (const [name, d] of Object.entries(DEFAULT_PRESETS)) {
    const model = defaultModel ?? fileDefault;
    if (model) presets.set(name, { name, model, system: d.system, params: d.params, fallbacks: [] });
  }
  for (const [name, p] of Object.entries(file.presets ?? {})) {
    const base = presets.get(name);
    const model = p.model ?? base?.model;
    if (!model) {
      problems.push(`presets.${name}.model is required (no default model is configured).`);
      continue;
    }
    presets.set(name, { name, model, system: p.system ?? base?.system, params: { ...(base?.params ?? {}), ...(p.params ?? {}) }, fallbacks: p.fallbacks ?? [] });
  }
  for (const p of presets.values()) {
    for (const m of [p.model, ...p.fallbacks]) if (!resolvable(m, models, providers)) problems.push(`preset "${p.name}" names model "${m}", which is neither configured nor "<provider>/<model>" of a configured provider.`);
  }

  const limits = { user: { ...limitsFromEnv(env, 'LIMIT_'), ...(file.limits?.user ?? {}) }, apiKey: { ...limitsFromEnv(env, 'API_KEY_LIMIT_'), ...(file.limits?.api_key ?? {}) } };
  // Problems name what the operator wrote: the file's `limits.api_key.*`, or the variable a value came from.
  for (const [scope, l, prefix] of [['user', limits.user, 'LIMIT_'], ['api_key', limits.apiKey, 'API_KEY_LIMIT_']] as const) {
    for (const [k, v] of Object.entries(l)) {
      const where = file.limits?.[scope]?.[k as keyof Limits] !== undefined ? `limits.${scope}.${k}` : `${prefix}${k.toUpperCase()}`;
      if (!(LIMIT_NAMES as readonly string[]).includes(k)) problems.push(`limits.${scope}.${k} is not a known limit (${LIMIT_NAMES.join(', ')}).`);
      else if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) problems.push(`${where} must be a non-negative number.`);
    }
  }
  const reserveCompletionTokens = num(file.reserve_completion_tokens ?? intEnv(env, 'LLM_RESERVE_COMPLETION_TOKENS'), 1024, 'reserve_completion_tokens / LLM_RESERVE_COMPLETION_TOKENS', 1);
  // At least 0.1 s: a heartbeat of 0 would fire constantly.
  const heartbeatSeconds = num(file.heartbeat_seconds, 15, 'heartbeat_seconds', 0.1);
  if (problems.length > 0) throw new LlmConfigError(problems);
  return {
    providers,
    models,
    presets,
    limits,
    reserveCompletionTokens,
    heartbeatSeconds,
    sources,
  };
}

/** A model by alias, or `provider/model` of a configured provider. */
export function resolveModel(name: string, config: Pick<LlmConfig, 'models' | 'providers'>): ModelConfig | undefined {
  const known = config.models.get(name);
  if (known) return known;
  const slash = name.indexOf('/');
  if (slash <= 0) return undefined;
  const provider = name.slice(0, slash);
  if (!config.providers.has(provider)) return undefined;
  return { id: name, provider, upstream: name.slice(slash + 1), contextWindow: 128_000, prices: undefined, kind: 'chat' };
}

function resolvable(name: string, models: ReadonlyMap<string, ModelConfig>, providers: ReadonlyMap<string, ProviderConfig>): boolean {
  return resolveModel(name, { models, providers }) !== undefined;
}

function readConfigFile(env: Record<string, string | undefined>, cwd: string, problems: string[], sources: string[]): FileShape {
  const explicit = env.KEEL_CONFIG?.trim();
  const candidates = explicit ? [path.resolve(cwd, explicit)] : ['keel.config.yaml', 'keel.config.yml', 'keel.config.json'].map((f) => path.join(cwd, f));
  const file = candidates.find((f) => existsSync(f));
  if (!file) {
    if (explicit) problems.push(`KEEL_CONFIG names ${explicit}, which does not exist.`);
    return {};
  }
  try {
    const text = readFileSync(file, 'utf8');
    const parsed: unknown = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    sources.push(path.basename(file));
    if (parsed === null || parsed === undefined) return {};
    if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('the top level must be a mapping');
    return parsed;
  } catch (err) {
    problems.push(`${path.basename(file)} cannot be read: ${(err as Error).message}`);
    return {};
  }
}

function intEnv(env: Record<string, string | undefined>, name: string): number | undefined {
  const v = env[name]?.trim();
  return v ? Number(v) : undefined;
}

function limitsFromEnv(env: Record<string, string | undefined>, prefix: string): Limits {
  const out: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const v = intEnv(env, `${prefix}${name.toUpperCase()}`);
    if (v !== undefined) out[name] = v;
  }
  return out;
}
