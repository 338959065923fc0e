import { existsSync, statSync } from 'node:fs';
import path from 'node:path';

/** Which embedder, if any, the knowledge base uses. Read once by {@link readEmbeddingsConfig}, frozen. */
export interface EmbeddingsConfig {
  /** `none`: no embeddings, search is lexical only. */
  readonly kind: 'none' | 'openai' | 'local';
  /** OpenAI-compatible only: ends in `/v1` like LLM_BASE_URL, no trailing slash. */
  readonly baseUrl?: string;
  readonly apiKey?: string;
  /** The upstream model id (openai); an optional display name (local). */
  readonly model?: string;
  /** Sent as `dimensions` (openai); vectors of another length are refused. */
  readonly dimensions?: number;
  readonly batchSize: number;
  /** Per request, response body included (openai). */
  readonly timeoutMs: number;
  /** Absolute path of a transformers.js model directory (config.json, tokenizer.json, onnx/model.onnx). */
  readonly localModelDir?: string;
  /** Retries on 429/5xx/network errors/timeouts per batch (openai). Default 2. */
  readonly maxRetries?: number;
  /** First backoff before a retry; doubles each time, with jitter. Default 250. */
  readonly retryBaseMs?: number;
}

/** The variables {@link readEmbeddingsConfig} reads, in the shape of config.ts's CONFIG_VARIABLES. */
export const EMBEDDINGS_VARIABLES: ReadonlyArray<{ name: string; default: string; description: string }> = [
  { name: 'EMBEDDINGS_MODEL', default: '(none: lexical search only)', description: 'The embeddings model of an OpenAI-compatible server (e.g. `text-embedding-3-small`, `nomic-embed-text`); turns on semantic search in the knowledge base.' },
  { name: 'EMBEDDINGS_BASE_URL', default: '$LLM_BASE_URL', description: 'That server, ending in `/v1` (e.g. `http://localhost:11434/v1`). Unset: the LLM provider of `LLM_BASE_URL`.' },
  { name: 'EMBEDDINGS_API_KEY', default: '$LLM_API_KEY when EMBEDDINGS_BASE_URL is unset', description: 'Its API key, sent as a Bearer token; it never leaves the server. The LLM key is never sent to a different EMBEDDINGS_BASE_URL.' },
  { name: 'EMBEDDINGS_DIMENSIONS', default: '(the model\'s own)', description: 'Vector length asked for (`dimensions`, for models that can shorten their vectors); answers of another length are refused.' },
  { name: 'EMBEDDINGS_BATCH_SIZE', default: '64', description: 'Texts per embeddings request.' },
  { name: 'EMBEDDINGS_TIMEOUT_MS', default: '30000', description: 'Longest wait for one embeddings request; it is retried twice on timeouts, 429 and 5xx.' },
  { name: 'EMBEDDINGS_LOCAL_MODEL_DIR', default: '(none)', description: 'Instead of a server: a local ONNX model directory for transformers.js (needs `npm install @huggingface/transformers`; nothing is downloaded). Not together with EMBEDDINGS_BASE_URL.' },
];

export class EmbeddingsConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Embeddings configuration is invalid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'EmbeddingsConfigError';
  }
}

/**
 * Reads EMBEDDINGS_* from an environment. `llm` is LLM_BASE_URL/LLM_API_KEY, used when only
 * EMBEDDINGS_MODEL is set. Relative EMBEDDINGS_LOCAL_MODEL_DIR paths resolve against `cwd`.
 * Throws EmbeddingsConfigError listing every problem.
 */
export function readEmbeddingsConfig(
  env: Record<string, string | undefined>,
  llm: { baseUrl?: string; apiKey?: string },
  opts: { cwd?: string } = {},
): EmbeddingsConfig {
  const problems: string[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === '' ? undefined : v;
  };
  const int = (name: string, def: number | undefined, min: number, max: number): number | undefined => {
    const raw = get(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be a whole number between ${min} and ${max} (got "${raw}").`);
      return def;
    }
    return n;
  };

  const model = get('EMBEDDINGS_MODEL');
  const ownBaseUrl = get('EMBEDDINGS_BASE_URL');
  const ownApiKey = get('EMBEDDINGS_API_KEY');
  const localDir = get('EMBEDDINGS_LOCAL_MODEL_DIR');
  const dimensions = int('EMBEDDINGS_DIMENSIONS', undefined, 1, 65_536);
  const batchSize = int('EMBEDDINGS_BATCH_SIZE', 64, 1, 2048) as number;
  const timeoutMs = int('EMBEDDINGS_TIMEOUT_MS', 30_000, 100, 600_000) as number;

  let config: EmbeddingsConfig = { kind: 'none', batchSize, timeoutMs };
  if (localDir !== undefined) {
    if (ownBaseUrl !== undefined) problems.push('EMBEDDINGS_LOCAL_MODEL_DIR and EMBEDDINGS_BASE_URL are both set: use a local model or a server, not both.');
    if (dimensions !== undefined) problems.push('EMBEDDINGS_DIMENSIONS applies to an OpenAI-compatible server only; a local model has the length it was trained with.');
    const dir = path.resolve(opts.cwd ?? process.cwd(), localDir);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      problems.push(`EMBEDDINGS_LOCAL_MODEL_DIR "${localDir}" is not a directory: point it at a transformers.js model (config.json, tokenizer.json, onnx/model.onnx).`);
    }
    config = { kind: 'local', localModelDir: dir, batchSize, timeoutMs, ...(model !== undefined ? { model } : {}) };
  } else if (model !== undefined) {
    const llmBaseUrl = llm.baseUrl?.trim() || undefined;
    const baseUrl = (ownBaseUrl ?? llmBaseUrl)?.replace(/\/+$/, '');
    // The LLM key goes only where the LLM requests go: never to a different embeddings server.
    const apiKey = ownBaseUrl !== undefined ? ownApiKey : ownApiKey ?? (llm.apiKey?.trim() || undefined);
    if (baseUrl === undefined) {
      problems.push('EMBEDDINGS_MODEL is set but neither EMBEDDINGS_BASE_URL nor LLM_BASE_URL is: name the OpenAI-compatible server that serves it.');
    } else {
      const what = ownBaseUrl !== undefined ? 'EMBEDDINGS_BASE_URL' : 'LLM_BASE_URL (used for embeddings)';
      let url: URL | undefined;
      try {
        url = new URL(baseUrl);
      } catch {
        problems.push(`${what} is not a URL (got "${baseUrl}").`);
      }
      if (url && url.protocol !== 'http:' && url.protocol !== 'https:') problems.push(`${what} must be an http:// or https:// URL.`);
      if (url && (url.username !== '' || url.password !== '')) problems.push(`${what} contains credentials: put the key in ${ownBaseUrl !== undefined ? 'EMBEDDINGS_API_KEY' : 'LLM_API_KEY'} instead.`);
    }
    config = {
      kind: 'openai', model, batchSize, timeoutMs,
      ...(baseUrl !== undefined ? { baseUrl } : {}),
      ...(apiKey !== undefined ? { apiKey } : {}),
      ...(dimensions !== undefined ? { dimensions } : {}),
    };
  } else {
    const stray = (['EMBEDDINGS_BASE_URL', 'EMBEDDINGS_API_KEY', 'EMBEDDINGS_DIMENSIONS'] as const).filter((n) => get(n) !== undefined);
    if (stray.length > 0) problems.push(`${stray.join(', ')} ${stray.length === 1 ? 'is' : 'are'} set but EMBEDDINGS_MODEL is not: name the embeddings model (or unset ${stray.length === 1 ? 'it' : 'them'} for lexical search only).`);
  }
  if (problems.length > 0) throw new EmbeddingsConfigError(problems);
  return Object.freeze(config);
}
