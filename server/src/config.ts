import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseEnv } from 'node:util';
import { EMBEDDINGS_VARIABLES, EmbeddingsConfigError, readEmbeddingsConfig, type EmbeddingsConfig } from './modules/knowledge/embeddings/index.js';
import { readWebSearchConfig, WEB_SEARCH_VARIABLES, WebSearchConfigError, type WebSearchConfig } from './modules/knowledge/web-search/index.js';
import { loadLlmConfig, LlmConfigError, type LlmConfig } from './modules/llm/llm.config.js';

/** The one typed, validated, frozen configuration object every part of Keel reads. */
export interface Config {
  readonly env: 'development' | 'production' | 'test';
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly database: DatabaseConfig;
  /** Token signing secret. In development it may be generated and kept in `dataDir`. */
  readonly secretKey: string;
  readonly secretKeySource: 'env' | 'generated' | 'file';
  readonly corsOrigins: readonly string[];
  readonly accessTokenExpireMinutes: number;
  readonly refreshTokenExpireDays: number;
  readonly logLevel: LogLevel;
  readonly docsEnabled: boolean;
  readonly maxUploadSizeMb: number;
  readonly allowedExtensions: readonly string[];
  readonly redisUrl: string | undefined;
  /** Prefix of every Redis key and channel, so several deployments can share one Redis. */
  readonly redisKeyPrefix: string;
  readonly bodyLimitBytes: number;
  readonly rateLimit: RateLimitConfig;
  readonly shutdownTimeoutMs: number;
  readonly trustProxy: boolean | string;
  readonly webDir: string | undefined;
  /** The address users reach Keel at, for links in e-mails. */
  readonly publicUrl: string;
  readonly smtpUrl: string | undefined;
  readonly mailFrom: string;
  readonly google: { readonly clientIds: readonly string[]; readonly jwksUrl: string };
  /** LLM providers, models, presets and usage limits (docs/llm.md). */
  readonly llm: LlmConfig;
  readonly chat: {
    readonly maxMessageChars: number;
    readonly messagesPerMinute: number;
    readonly defaultPreset: string;
    /** Preset that writes conversation titles; undefined → the first line of the first message. */
    readonly titlePreset: string | undefined;
    readonly wsHeartbeatMs: number;
    readonly wsMaxFrameBytes: number;
  };
  /** The knowledge base (docs/knowledge.md). */
  readonly knowledge: {
    readonly embeddings: EmbeddingsConfig;
    readonly webSearch: WebSearchConfig;
    /** Per-user total of stored originals; 0 = unlimited. */
    readonly storageQuotaMb: number;
    readonly chunking: { readonly maxTokens: number; readonly overlapTokens: number };
    /** Vector-only hits below this cosine similarity are not shown to a model as sources. */
    readonly minVectorScore: number;
    readonly answerPreset: string;
  };
  /** Background jobs (platform/jobs.ts). */
  readonly jobs: {
    /** Claim loops in `keel serve` and `keel worker`; 0 = this process only enqueues (API only). */
    readonly workers: number;
    readonly leaseMs: number;
    readonly pollMs: number;
  };
}

export interface DatabaseConfig {
  readonly kind: 'sqlite' | 'postgres';
  /** For SQLite a file path (or `:memory:`); for Postgres the connection URL. */
  readonly url: string;
  /** Postgres only: the schema Keel's tables live in (search_path). */
  readonly schema: string | undefined;
  readonly poolMax: number;
  readonly connectTimeoutMs: number;
  readonly migrateOnStart: boolean;
  /** True when DATABASE_URL was given explicitly rather than defaulted. */
  readonly explicit: boolean;
}

export interface RateLimitConfig {
  readonly enabled: boolean;
  /** Requests per window per client IP, for every route but operations routes. */
  readonly max: number;
  readonly windowMs: number;
  /** The stricter limit that authentication routes opt into. */
  readonly authMax: number;
  readonly authWindowMs: number;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Every environment variable Keel reads, its default and meaning; docs/configuration.md mirrors it (a test checks). */
export const CONFIG_VARIABLES: ReadonlyArray<{ name: string; default: string; description: string }> = [
  { name: 'NODE_ENV', default: 'development', description: '`production` turns on the production refusals and HSTS; `test` is used by the test suite.' },
  { name: 'HOST', default: '127.0.0.1', description: 'Interface to listen on.' },
  { name: 'PORT', default: '8000', description: 'TCP port to listen on.' },
  { name: 'DATA_DIR', default: './data', description: 'SQLite file, generated development secret, uploaded files, development mail outbox.' },
  { name: 'DATABASE_URL', default: '$DATA_DIR/keel.db', description: 'A SQLite file path (`sqlite:`/`file:` prefixes allowed) or a `postgres://` / `postgresql://` URL. Required in production.' },
  { name: 'DATABASE_SCHEMA', default: '(none: `public`)', description: 'Postgres only: the schema that holds Keel\'s tables (sets `search_path`).' },
  { name: 'DATABASE_POOL_MAX', default: '10', description: 'Postgres only: connections in the pool.' },
  { name: 'DATABASE_CONNECT_TIMEOUT_MS', default: '5000', description: 'How long a request waits for a database connection before answering 503.' },
  { name: 'MIGRATE_ON_START', default: 'true', description: 'Apply pending migrations when the server starts; `false` leaves it to `keel migrate`.' },
  { name: 'SECRET_KEY', default: '(generated in development)', description: 'Token signing secret, at least 32 bytes. Required in production; in development a random one is generated and kept in `$DATA_DIR/secret.key`.' },
  { name: 'CORS_ORIGINS', default: '(none in production; the Vite dev server in development)', description: 'Exact allowed origins, comma-separated. `*` is refused in production. Alias: `ALLOWED_ORIGINS`.' },
  { name: 'ALLOWED_ORIGINS', default: '', description: 'Alias of `CORS_ORIGINS` (seed 002\'s name); `CORS_ORIGINS` wins when both are set.' },
  { name: 'ACCESS_TOKEN_EXPIRE_MINUTES', default: '15', description: 'Lifetime of access tokens.' },
  { name: 'REFRESH_TOKEN_EXPIRE_DAYS', default: '30', description: 'Lifetime of refresh tokens.' },
  { name: 'LOG_LEVEL', default: 'info', description: 'pino level: fatal, error, warn, info, debug, trace, silent (case-insensitive).' },
  { name: 'DOCS_ENABLED', default: 'true', description: 'Serve Swagger UI at `/docs` (the OpenAPI document at `/openapi.json` follows it).' },
  { name: 'MAX_UPLOAD_SIZE_MB', default: '10', description: 'Largest accepted document upload.' },
  { name: 'ALLOWED_EXTENSIONS', default: 'json,yaml,yml,md,txt,pdf,html', description: 'File extensions accepted for upload, comma-separated.' },
  { name: 'REDIS_URL', default: '(none)', description: 'Redis for shared rate-limit counters and pub/sub across instances; unset → in-process.' },
  { name: 'REDIS_KEY_PREFIX', default: 'keel:', description: 'Prefix of every Redis key and channel, so several deployments can share one Redis.' },
  { name: 'BODY_LIMIT_KB', default: '1024', description: 'Largest JSON request body; larger bodies get 413.' },
  { name: 'RATE_LIMIT_ENABLED', default: 'true', description: 'Turn the global and auth rate limits on or off.' },
  { name: 'RATE_LIMIT_MAX', default: '600', description: 'Requests per window per client IP (operations routes excluded).' },
  { name: 'RATE_LIMIT_WINDOW_MS', default: '60000', description: 'Window of the global rate limit.' },
  { name: 'AUTH_RATE_LIMIT_MAX', default: '20', description: 'Requests per window per client IP on authentication routes.' },
  { name: 'AUTH_RATE_LIMIT_WINDOW_MS', default: '60000', description: 'Window of the authentication rate limit.' },
  { name: 'SHUTDOWN_TIMEOUT_MS', default: '10000', description: 'On SIGTERM/SIGINT, how long in-flight requests and streams may run before connections are cut.' },
  { name: 'TRUST_PROXY', default: 'false', description: '`true`, a hop count, or a comma list of proxy addresses/CIDRs whose `X-Forwarded-*` headers are believed (set it behind Caddy/nginx).' },
  { name: 'PUBLIC_URL', default: 'http://$HOST:$PORT', description: 'The address users reach Keel at (scheme://host[:port]), used in links in e-mails.' },
  { name: 'SMTP_URL', default: '(none: mail goes to $DATA_DIR/outbox/)', description: 'Outgoing mail, e.g. `smtps://user:pass@smtp.example.com:465`. Without it, messages are written to the outbox and the log names the file.' },
  { name: 'MAIL_FROM', default: 'Keel <no-reply@localhost>', description: 'Sender of verification and password-reset e-mails.' },
  { name: 'GOOGLE_CLIENT_ID', default: '(none: Google sign-in off)', description: 'OAuth client id(s) whose Google ID tokens are accepted (`aud`), comma-separated.' },
  { name: 'GOOGLE_JWKS_URL', default: 'https://www.googleapis.com/oauth2/v3/certs', description: 'Where Google\'s signing keys are fetched from (tests point it at a local server).' },
  { name: 'KEEL_CONFIG', default: './keel.config.yaml (or .yml, .json) when present', description: 'File with LLM providers, model aliases and prices, presets and limits (docs/llm.md).' },
  { name: 'LLM_BASE_URL', default: '(none)', description: 'One OpenAI-compatible provider (named `default`), e.g. `http://localhost:11434/v1` for Ollama.' },
  { name: 'LLM_API_KEY', default: '(none)', description: 'Its API key; it never leaves the server.' },
  { name: 'LLM_MODEL', default: '(none)', description: 'Its model; every preset uses it unless configured otherwise.' },
  { name: 'LLM_EMBEDDINGS_MODEL', default: '(none)', description: 'An embeddings model on that provider, for `/v1/embeddings`.' },
  { name: 'OPENAI_API_KEY', default: '(none)', description: 'Enables provider `openai` (models as `openai/<model>`).' },
  { name: 'GROQ_API_KEY', default: '(none)', description: 'Enables provider `groq`.' },
  { name: 'MISTRAL_API_KEY', default: '(none)', description: 'Enables provider `mistral`.' },
  { name: 'ANTHROPIC_API_KEY', default: '(none)', description: 'Enables provider `anthropic` (Messages API, translated to and from the OpenAI shape).' },
  { name: 'LLM_CONNECT_TIMEOUT_MS', default: '30000', description: 'Upstream: longest wait for response headers.' },
  { name: 'LLM_IDLE_TIMEOUT_MS', default: '60000', description: 'Upstream: longest silence within a stream or body.' },
  { name: 'LLM_MAX_RETRIES', default: '2', description: 'Upstream: retries on 429/5xx/network errors, before the first byte only.' },
  { name: 'LLM_RESERVE_COMPLETION_TOKENS', default: '1024', description: 'Completion tokens reserved against budgets when a request sets no max_tokens.' },
  { name: 'LIMIT_<NAME>', default: '(unlimited)', description: 'Default per-user limits: `LIMIT_REQUESTS_PER_MINUTE`, `LIMIT_REQUESTS_PER_DAY`, `LIMIT_TOKENS_PER_DAY`, `LIMIT_TOKENS_PER_MONTH`, `LIMIT_COST_USD_PER_DAY`, `LIMIT_COST_USD_PER_MONTH`. Admins override per user.' },
  { name: 'API_KEY_LIMIT_<NAME>', default: '(unlimited)', description: 'The same limits per API key, e.g. `API_KEY_LIMIT_REQUESTS_PER_MINUTE`.' },
  { name: 'CHAT_MAX_MESSAGE_CHARS', default: '32000', description: 'Longest chat message a user can send.' },
  { name: 'CHAT_MESSAGES_PER_MINUTE', default: '30', description: 'Chat messages per user per minute, counted separately on HTTP and on the WebSocket.' },
  { name: 'CHAT_DEFAULT_PRESET', default: 'general', description: 'Preset of conversations that name neither a preset nor a model.' },
  { name: 'CHAT_TITLE_PRESET', default: '(none: the first line of the first message)', description: 'A preset (e.g. `general`) that writes a short title for each new conversation after its first reply; metered like any call.' },
  { name: 'CHAT_WS_HEARTBEAT_MS', default: '30000', description: 'WebSocket ping interval; a socket that misses two pongs is closed, and the session is re-checked.' },
  { name: 'CHAT_WS_MAX_FRAME_KB', default: '256', description: 'Largest WebSocket frame accepted; larger ones get an error frame.' },
  { name: 'STORAGE_QUOTA_MB', default: '500', description: 'Per-user total size of uploaded documents; an upload past it gets 413. `0` = unlimited.' },
  { name: 'CHUNK_MAX_TOKENS', default: '400', description: 'Largest chunk a document is cut into, in tokens.' },
  { name: 'CHUNK_OVERLAP_TOKENS', default: '50', description: 'Tokens a chunk repeats from the end of the previous one (same section only).' },
  { name: 'SEARCH_MIN_VECTOR_SCORE', default: '0.3', description: 'Cosine similarity a vector-only hit needs to count as relevant for `/search/llm` and grounded chat (lexical matches always count).' },
  { name: 'KNOWLEDGE_ANSWER_PRESET', default: 'general', description: 'The preset `/search/llm` answers with.' },
  ...EMBEDDINGS_VARIABLES,
  ...WEB_SEARCH_VARIABLES,
  { name: 'JOB_WORKERS', default: '2', description: 'Background job workers in this process (`keel serve` and `keel worker`); `0` makes `keel serve` API-only, leaving jobs to `keel worker` processes.' },
  { name: 'JOB_LEASE_SECONDS', default: '30', description: 'How long a claimed job is held without a lease renewal before another worker takes it over (its process is presumed dead); renewed every third of it.' },
  { name: 'JOB_POLL_MS', default: '1000', description: 'How often an idle worker looks for due jobs; a job enqueued in the same process wakes it at once.' },
  { name: 'WEB_DIR', default: '(the built console, web/dist)', description: 'Directory of the web console served at `/`.' },
];

const PLACEHOLDER_SECRET = /change[-_ ]?me|changeme|your[-_ ]?(secret|generated|key)|paste[-_ ]?your|placeholder|example|^secret$|^password$|^dev(elopment)?[-_ ]?secret/i;

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Keel cannot start; fix the configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Reads `.env` (if present) beneath the process environment: real environment variables win. */
export function readEnvironment(cwd = process.cwd(), env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  const file = path.join(cwd, '.env');
  const fromFile = existsSync(file) ? parseEnv(readFileSync(file, 'utf8')) : {};
  return { ...fromFile, ...env };
}

/**
 * Turns an environment into a Config, or throws a ConfigError that lists every problem at once.
 * Pure except for the development secret, which `resolveSecret` may read from or write to DATA_DIR.
 */
export function loadConfig(env: Record<string, string | undefined>, opts: { cwd?: string; persistDevSecret?: boolean } = {}): Config {
  const cwd = opts.cwd ?? process.cwd();
  const problems: string[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const int = (name: string, def: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = get(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be a whole number between ${min} and ${max} (got "${raw}").`);
      return def;
    }
    return n;
  };
  const bool = (name: string, def: boolean): boolean => {
    const raw = get(name)?.toLowerCase();
    if (raw === undefined) return def;
    if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
    if (['0', 'false', 'no', 'off'].includes(raw)) return false;
    problems.push(`${name} must be true or false (got "${raw}").`);
    return def;
  };
  const list = (raw: string | undefined): string[] =>
    (raw ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);

  const nodeEnv = get('NODE_ENV') ?? 'development';
  let envName: Config['env'] = 'development';
  if (nodeEnv === 'production' || nodeEnv === 'test' || nodeEnv === 'development') envName = nodeEnv;
  else problems.push(`NODE_ENV must be development, production or test (got "${nodeEnv}").`);
  const production = envName === 'production';

  const dataDir = path.resolve(cwd, get('DATA_DIR') ?? './data');

  const rawDbUrl = get('DATABASE_URL');
  if (production && rawDbUrl === undefined) {
    problems.push('DATABASE_URL is not set: production needs an explicit database (a postgres:// URL or a SQLite file path), so data never lands in a default location by accident.');
  }
  const database = parseDatabaseUrl(rawDbUrl, dataDir, cwd, problems);

  const logLevelRaw = (get('LOG_LEVEL') ?? 'info').toLowerCase();
  const logLevel = (LOG_LEVELS as readonly string[]).includes(logLevelRaw) ? (logLevelRaw as LogLevel) : 'info';
  if (logLevel !== logLevelRaw) problems.push(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')} (got "${logLevelRaw}").`);

  const corsRaw = get('CORS_ORIGINS') ?? get('ALLOWED_ORIGINS');
  const corsOrigins = corsRaw === undefined
    ? (production ? [] : ['http://localhost:5173', 'http://127.0.0.1:5173'])
    : list(corsRaw).map((o) => o.replace(/\/+$/, ''));
  for (const origin of corsOrigins) {
    if (origin === '*') {
      if (production) problems.push('CORS_ORIGINS contains "*": in production list the exact origins of your front ends (scheme://host[:port]).');
    } else if (!/^https?:\/\/[^/\s]+$/.test(origin)) {
      problems.push(`CORS_ORIGINS entry "${origin}" is not an origin (scheme://host[:port], no path).`);
    }
  }

  const trustRaw = get('TRUST_PROXY');
  let trustProxy: boolean | string = false;
  if (trustRaw !== undefined) {
    if (/^(true|false)$/i.test(trustRaw)) trustProxy = trustRaw.toLowerCase() === 'true';
    else trustProxy = trustRaw;
  }

  const secret = resolveSecret(get('SECRET_KEY'), envName, dataDir, opts.persistDevSecret ?? true, problems);

  let llm: LlmConfig | undefined;
  try {
    llm = loadLlmConfig(env, cwd);
  } catch (err) {
    if (!(err instanceof LlmConfigError)) throw err;
    problems.push(...err.problems);
  }

  let embeddings: EmbeddingsConfig | undefined;
  let webSearch: WebSearchConfig | undefined;
  try {
    embeddings = readEmbeddingsConfig(env, { baseUrl: get('LLM_BASE_URL'), apiKey: get('LLM_API_KEY') }, { cwd });
  } catch (err) {
    if (!(err instanceof EmbeddingsConfigError)) throw err;
    problems.push(...err.problems);
  }
  try {
    webSearch = readWebSearchConfig(env);
  } catch (err) {
    if (!(err instanceof WebSearchConfigError)) throw err;
    problems.push(...err.problems);
  }
  const chunkMaxTokens = int('CHUNK_MAX_TOKENS', 400, 32, 8192);
  const chunkOverlapTokens = int('CHUNK_OVERLAP_TOKENS', 50, 0, 4096);
  if (chunkOverlapTokens >= chunkMaxTokens) problems.push(`CHUNK_OVERLAP_TOKENS (${chunkOverlapTokens}) must be smaller than CHUNK_MAX_TOKENS (${chunkMaxTokens}).`);
  const minVectorScoreRaw = get('SEARCH_MIN_VECTOR_SCORE') ?? '0.3';
  const minVectorScore = Number(minVectorScoreRaw);
  if (!Number.isFinite(minVectorScore) || minVectorScore < -1 || minVectorScore > 1) problems.push(`SEARCH_MIN_VECTOR_SCORE must be a number between -1 and 1 (got "${minVectorScoreRaw}").`);

  const config: Config = {
    env: envName,
    host: get('HOST') ?? '127.0.0.1',
    port: int('PORT', 8000, 0, 65535),
    dataDir,
    database: {
      ...database,
      schema: get('DATABASE_SCHEMA'),
      poolMax: int('DATABASE_POOL_MAX', 10, 1, 1000),
      connectTimeoutMs: int('DATABASE_CONNECT_TIMEOUT_MS', 5000, 100, 600_000),
      migrateOnStart: bool('MIGRATE_ON_START', true),
      explicit: rawDbUrl !== undefined,
    },
    secretKey: secret.value,
    secretKeySource: secret.source,
    corsOrigins,
    accessTokenExpireMinutes: int('ACCESS_TOKEN_EXPIRE_MINUTES', 15, 1, 24 * 60),
    refreshTokenExpireDays: int('REFRESH_TOKEN_EXPIRE_DAYS', 30, 1, 3650),
    logLevel,
    docsEnabled: bool('DOCS_ENABLED', true),
    maxUploadSizeMb: int('MAX_UPLOAD_SIZE_MB', 10, 1, 10_240),
    allowedExtensions: list(get('ALLOWED_EXTENSIONS') ?? 'json,yaml,yml,md,txt,pdf,html').map((e) => e.replace(/^\./, '').toLowerCase()),
    redisUrl: get('REDIS_URL'),
    redisKeyPrefix: get('REDIS_KEY_PREFIX') ?? 'keel:',
    bodyLimitBytes: int('BODY_LIMIT_KB', 1024, 1, 1024 * 1024) * 1024,
    rateLimit: {
      enabled: bool('RATE_LIMIT_ENABLED', true),
      max: int('RATE_LIMIT_MAX', 600, 1),
      windowMs: int('RATE_LIMIT_WINDOW_MS', 60_000, 100),
      authMax: int('AUTH_RATE_LIMIT_MAX', 20, 1),
      authWindowMs: int('AUTH_RATE_LIMIT_WINDOW_MS', 60_000, 100),
    },
    shutdownTimeoutMs: int('SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
    trustProxy,
    webDir: get('WEB_DIR') === undefined ? undefined : path.resolve(cwd, get('WEB_DIR') as string),
    publicUrl: (get('PUBLIC_URL') ?? `http://${get('HOST') ?? '127.0.0.1'}:${get('PORT') ?? '8000'}`).replace(/\/+$/, ''),
    smtpUrl: get('SMTP_URL'),
    mailFrom: get('MAIL_FROM') ?? 'Keel <no-reply@localhost>',
    google: {
      clientIds: list(get('GOOGLE_CLIENT_ID')),
      jwksUrl: get('GOOGLE_JWKS_URL') ?? 'https://www.googleapis.com/oauth2/v3/certs',
    },
    llm: llm as LlmConfig,
    chat: {
      maxMessageChars: int('CHAT_MAX_MESSAGE_CHARS', 32_000, 1, 1_000_000),
      messagesPerMinute: int('CHAT_MESSAGES_PER_MINUTE', 30, 1),
      defaultPreset: get('CHAT_DEFAULT_PRESET') ?? 'general',
      titlePreset: get('CHAT_TITLE_PRESET'),
      wsHeartbeatMs: int('CHAT_WS_HEARTBEAT_MS', 30_000, 100, 600_000),
      wsMaxFrameBytes: int('CHAT_WS_MAX_FRAME_KB', 256, 1, 65_536) * 1024,
    },
    knowledge: {
      embeddings: embeddings as EmbeddingsConfig,
      webSearch: webSearch as WebSearchConfig,
      storageQuotaMb: int('STORAGE_QUOTA_MB', 500, 0, 10_000_000),
      chunking: { maxTokens: chunkMaxTokens, overlapTokens: chunkOverlapTokens },
      minVectorScore,
      answerPreset: get('KNOWLEDGE_ANSWER_PRESET') ?? 'general',
    },
    jobs: {
      workers: int('JOB_WORKERS', 2, 0, 256),
      leaseMs: int('JOB_LEASE_SECONDS', 30, 1, 86_400) * 1000,
      pollMs: int('JOB_POLL_MS', 1000, 10, 600_000),
    },
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(config);
}

function parseDatabaseUrl(raw: string | undefined, dataDir: string, cwd: string, problems: string[]): Pick<DatabaseConfig, 'kind' | 'url'> {
  if (raw === undefined) return { kind: 'sqlite', url: path.join(dataDir, 'keel.db') };
  if (/^postgres(ql)?:\/\//i.test(raw)) {
    try {
      new URL(raw);
    } catch {
      problems.push('DATABASE_URL looks like a Postgres URL but cannot be parsed.');
    }
    return { kind: 'postgres', url: raw };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) && !/^(sqlite|file):/i.test(raw)) {
    problems.push(`DATABASE_URL scheme is not supported (got "${raw.split(':')[0]}"): use a postgres:// URL or a SQLite file path.`);
    return { kind: 'sqlite', url: path.join(dataDir, 'keel.db') };
  }
  const file = raw.replace(/^(sqlite|file):(\/\/)?/i, '');
  return { kind: 'sqlite', url: file === ':memory:' ? file : path.resolve(cwd, file) };
}

/** Why a secret is unfit for production, or undefined when it is fine. */
export function secretProblem(secret: string | undefined): string | undefined {
  if (secret === undefined) return 'SECRET_KEY is not set: generate one with `keel gen-secret` (or `openssl rand -hex 32`).';
  if (PLACEHOLDER_SECRET.test(secret) || new Set(secret).size < 8) return 'SECRET_KEY is a well-known placeholder or has almost no entropy: generate a real one with `keel gen-secret`.';
  if (Buffer.byteLength(secret, 'utf8') < 32) return `SECRET_KEY is too short (${Buffer.byteLength(secret, 'utf8')} bytes): it must be at least 32 bytes; generate one with \`keel gen-secret\`.`;
  return undefined;
}

function resolveSecret(fromEnv: string | undefined, env: Config['env'], dataDir: string, persist: boolean, problems: string[]): { value: string; source: Config['secretKeySource'] } {
  if (env === 'production') {
    const problem = secretProblem(fromEnv);
    if (problem) problems.push(problem);
    return { value: fromEnv ?? '', source: 'env' };
  }
  if (fromEnv !== undefined) return { value: fromEnv, source: 'env' };
  if (!persist) return { value: randomBytes(32).toString('hex'), source: 'generated' };
  const file = path.join(dataDir, 'secret.key');
  if (existsSync(file)) {
    const stored = readFileSync(file, 'utf8').trim();
    if (stored.length >= 64) return { value: stored, source: 'file' };
  }
  mkdirSync(dataDir, { recursive: true });
  const value = randomBytes(32).toString('hex');
  writeFileSync(file, `${value}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { value, source: 'generated' };
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
