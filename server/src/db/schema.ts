import type { ColumnType, Generated } from 'kysely';

/** Timestamps travel as ISO 8601 UTC strings on both dialects (see database.ts for Postgres's parser). */
export type Timestamp = ColumnType<string, string, string>;

export interface UsersTable {
  id: string;
  /** Normalized (trimmed, lower-cased); null for anonymous accounts that live on their devices. */
  email: string | null;
  name: string | null;
  password_hash: string | null;
  role: Generated<string>;
  email_verified_at: Timestamp | null;
  disabled_at: Timestamp | null;
  totp_secret_enc: string | null;
  totp_enabled_at: Timestamp | null;
  /** The last TOTP time step accepted, so each code is accepted once. */
  totp_last_step: number | null;
  password_changed_at: Timestamp | null;
  /** Admin overrides of usage limits, as JSON text. */
  limits: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface DevicesTable {
  id: string;
  user_id: string;
  name: string;
  type: string;
  platform: string | null;
  public_key: string | null;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  revoked_at: Timestamp | null;
}

/** A sign-in on one device: the family its rotating refresh tokens belong to. */
export interface SessionsTable {
  id: string;
  user_id: string;
  device_id: string;
  created_at: Timestamp;
  last_used_at: Timestamp;
  expires_at: Timestamp;
  revoked_at: Timestamp | null;
  revoked_reason: string | null;
}

export interface RefreshTokensTable {
  id: string;
  session_id: string;
  token_hash: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
}

export interface ApiKeysTable {
  id: string;
  user_id: string;
  name: string;
  prefix: string;
  secret_hash: string;
  /** JSON array of scope names. */
  scopes: string;
  expires_at: Timestamp | null;
  last_used_at: Timestamp | null;
  created_at: Timestamp;
  revoked_at: Timestamp | null;
}

export interface IdentitiesTable {
  id: string;
  user_id: string;
  provider: string;
  subject: string;
  email: string | null;
  created_at: Timestamp;
}

export interface OneTimeTokensTable {
  id: string;
  user_id: string;
  purpose: 'verify_email' | 'reset_password';
  token_hash: string;
  email: string | null;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
}

export interface PairingCodesTable {
  id: string;
  user_id: string;
  code_hash: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
}

export interface RecoveryCodesTable {
  id: string;
  user_id: string;
  code_hash: string;
  created_at: Timestamp;
  used_at: Timestamp | null;
}

export interface AuditEventsTable {
  id: string;
  user_id: string | null;
  event: string;
  ip: string | null;
  user_agent: string | null;
  /** JSON object with event-specific facts; never secrets. */
  details: string | null;
  created_at: Timestamp;
}

/** One metered gateway call. Never holds prompt or output text. */
export interface UsageEventsTable {
  id: string;
  user_id: string;
  api_key_id: string | null;
  device_id: string | null;
  request_id: string | null;
  /** e.g. `/v1/chat/completions`, `/llm/code/stream`, `chat`. */
  endpoint: string;
  provider: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** 1 when the token counts come from Keel's tokenizer, not the provider. */
  estimated: number;
  cost_usd: number;
  latency_ms: number;
  ttft_ms: number | null;
  /** ok | error | aborted */
  status: string;
  error_code: string | null;
  message_id: string | null;
  created_at: Timestamp;
}

/** Per-period totals that budgets are checked and reserved against. */
export interface UsageCountersTable {
  key: string;
  user_id: string;
  requests: number;
  tokens_used: number;
  tokens_reserved: number;
  cost_used: number;
  cost_reserved: number;
  updated_at: Timestamp;
}

export interface ConversationsTable {
  id: string;
  user_id: string;
  title: string | null;
  preset: string | null;
  model: string | null;
  system_prompt: string | null;
  /** JSON array of knowledge collection ids the answers are grounded in. */
  collection_ids: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  last_activity_at: Timestamp;
}

export interface MessagesTable {
  id: string;
  conversation_id: string;
  user_id: string;
  role: 'user' | 'assistant';
  content: string;
  /** complete | generating | aborted | failed */
  status: string;
  model: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  /** JSON array of citations, for grounded answers. */
  citations: string | null;
  error_code: string | null;
  created_at: Timestamp;
  completed_at: Timestamp | null;
}

/** Every table Keel owns; each capability issue adds its own. */
export interface DB {
  users: UsersTable;
  devices: DevicesTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  api_keys: ApiKeysTable;
  identities: IdentitiesTable;
  one_time_tokens: OneTimeTokensTable;
  pairing_codes: PairingCodesTable;
  recovery_codes: RecoveryCodesTable;
  audit_events: AuditEventsTable;
  usage_events: UsageEventsTable;
  usage_counters: UsageCountersTable;
  conversations: ConversationsTable;
  messages: MessagesTable;
  jobs: JobsTable;
  collections: CollectionsTable;
  documents: DocumentsTable;
  document_files: DocumentFilesTable;
  chunks: ChunksTable;
}

/** The original upload of a document, deleted with it. */
export interface DocumentFilesTable {
  document_id: string;
  content: Uint8Array;
}

/** A durable background job (platform/jobs.ts). */
export interface JobsTable {
  id: string;
  type: string;
  owner_id: string | null;
  /** pending | running | succeeded | failed */
  status: string;
  /** JSON text. */
  payload: string;
  /** JSON text, set when the job succeeds. */
  result: string | null;
  error: string | null;
  /** 0..1 while running. */
  progress: number | null;
  attempts: number;
  max_attempts: number;
  run_at: Timestamp;
  locked_by: string | null;
  lease_expires_at: Timestamp | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  finished_at: Timestamp | null;
}

export interface CollectionsTable {
  id: string;
  user_id: string;
  name: string;
  description: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface DocumentsTable {
  id: string;
  user_id: string;
  collection_id: string | null;
  filename: string;
  /** markdown | text | json | yaml | openapi | html | pdf */
  kind: string;
  media_type: string;
  bytes: number;
  sha256: string;
  /** The collection id, or '' for none: the unique (user, scope, sha256) index recognises re-uploads. */
  dedupe_scope: string;
  /** pending | processing | ready | failed */
  status: string;
  error: string | null;
  job_id: string | null;
  chunk_count: Generated<number>;
  embedding_model: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ChunksTable {
  /** Integer key of the lexical and vector indexes. */
  seq: Generated<number>;
  id: string;
  document_id: string;
  user_id: string;
  collection_id: string | null;
  ordinal: number;
  heading: string | null;
  text: string;
  token_count: number;
  created_at: Timestamp;
}
