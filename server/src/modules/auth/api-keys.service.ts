import type { Kysely } from 'kysely';
import type { DB } from '../../db/schema.js';
import { SCOPES, type Principal, type Scope } from '../../platform/auth.js';
import { AppError } from '../../platform/errors.js';
import { generateApiKey } from './api-key-format.js';
import { apiKeysRepository as repo, type ApiKeyRow } from './api-keys.repository.js';
import type { AuthService, RequestMeta } from './auth.service.js';

export const API_KEY_NAME_MAX = 100;

/** What a key's owner sees of it: never the secret, nor its hash. */
export interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  scopes: Scope[];
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}

export interface NewApiKeyInput {
  name: string;
  scopes: readonly string[];
  expires_at?: string | null;
}

const isScope = (s: string): s is Scope => (SCOPES as readonly string[]).includes(s);

/**
 * API key management for their owner: create (the key is returned this once; only the secret's hash
 * is stored), list without secrets, revoke. Authenticating with a key is AuthService's job; it caps a
 * key's scopes to its owner's current role, so a key never holds more power than the owner.
 */
export class ApiKeysService {
  constructor(
    private readonly db: Kysely<DB>,
    private readonly auditor: Pick<AuthService, 'audit'>,
  ) {}

  /**
   * Creates a key for the caller. 400 for an empty or over-long name, an unknown scope (named in the
   * message), no scopes, or an expiry that is not in the future; 403 for the `admin` scope when the
   * caller is not an admin.
   */
  async create(principal: Principal, input: NewApiKeyInput, meta: RequestMeta, now = Date.now()): Promise<ApiKeyView & { key: string }> {
    const name = input.name.trim();
    if (name.length === 0 || name.length > API_KEY_NAME_MAX) {
      const message = `The name must be 1 to ${API_KEY_NAME_MAX} characters.`;
      throw AppError.badRequest(message, [{ field: 'name', message }]);
    }
    const unknown = input.scopes.filter((s) => !isScope(s));
    if (unknown.length > 0) {
      throw AppError.badRequest(`Unknown scope "${unknown[0]}"; API keys can carry: ${SCOPES.join(', ')}.`, unknown.map((s) => ({ field: 'scopes', message: `unknown scope "${s}"`, scope: s })));
    }
    const scopes = SCOPES.filter((s) => input.scopes.includes(s));
    if (scopes.length === 0) throw AppError.badRequest('Give the key at least one scope.', [{ field: 'scopes', message: 'must not be empty' }]);
    if (scopes.includes('admin') && principal.role !== 'admin') throw AppError.forbidden('Only administrators can create keys with the "admin" scope.');
    const expiresAt = input.expires_at ? futureInstant(input.expires_at, now) : null;

    const { key, prefix, secretHash } = generateApiKey();
    const row = await repo.insert(this.db, { user_id: principal.userId, name, prefix, secret_hash: secretHash, scopes: JSON.stringify(scopes), expires_at: expiresAt }, new Date(now).toISOString());
    await this.auditor.audit('api_key.created', principal.userId, meta, { api_key_id: row.id, name, prefix, scopes, expires_at: expiresAt });
    return { ...toView(row), key };
  }

  /** The caller's unrevoked keys (expired ones included, so they can be seen and cleaned up), newest first. */
  async list(principal: Principal, limit: number, cursor: string | undefined): Promise<{ items: ApiKeyView[]; next_cursor: string | null }> {
    const rows = await repo.pageOf(this.db, principal.userId, limit, cursor);
    const items = rows.slice(0, limit).map(toView);
    return { items, next_cursor: rows.length > limit ? items[items.length - 1]!.id : null };
  }

  /** Revokes one of the caller's keys; it stops working on the very next request. Another user's key, or an unknown or already revoked one, is 404. */
  async revoke(principal: Principal, id: string, meta: RequestMeta): Promise<void> {
    const revoked = await repo.revoke(this.db, principal.userId, id, new Date().toISOString());
    if (!revoked) throw AppError.notFound('API key');
    await this.auditor.audit('api_key.revoked', principal.userId, meta, { api_key_id: id, prefix: revoked.prefix });
  }
}

function toView(row: Pick<ApiKeyRow, 'id' | 'name' | 'prefix' | 'scopes' | 'created_at' | 'expires_at' | 'last_used_at'>): ApiKeyView {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    scopes: (JSON.parse(row.scopes) as string[]).filter(isScope),
    created_at: row.created_at,
    expires_at: row.expires_at,
    last_used_at: row.last_used_at,
  };
}

/** The instant as Keel stores it (ISO 8601 UTC, so stored values compare as strings); 400 unless after `now`. */
function futureInstant(value: string, now: number): string {
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw AppError.badRequest('expires_at must be an ISO 8601 date-time.', [{ field: 'expires_at', message: 'is not a date-time' }]);
  if (ms <= now) throw AppError.badRequest('expires_at must be in the future.', [{ field: 'expires_at', message: 'must be in the future' }]);
  return new Date(ms).toISOString();
}
