import { SCOPES, type Principal } from '../../src/platform/auth.js';
import type { Kysely } from 'kysely';
import type { DB } from '../../src/db/schema.js';
import { uuidv7 } from '../../src/platform/ids.js';
import type { Outcome } from '../../src/modules/usage/usage.service.js';

/** A user row straight into the table, with optional admin limit overrides (`users.limits`). */
export async function insertUser(db: Kysely<DB>, limits?: Record<string, unknown>): Promise<string> {
  const id = uuidv7();
  const now = new Date().toISOString();
  await db.insertInto('users').values({ id, email: `${id}@example.test`, name: null, password_hash: null, limits: limits ? JSON.stringify(limits) : null, created_at: now, updated_at: now }).execute();
  return id;
}

/** A signed-in user on a device, holding every user scope. */
export const sessionOf = (userId: string, deviceId = `device-${userId}`): Principal => ({ userId, role: 'user', kind: 'session', sessionId: `session-${userId}`, deviceId, scopes: new Set(SCOPES.filter((s) => s !== 'admin')) });

/** One of the user's API keys. */
export const apiKeyOf = (userId: string, apiKeyId: string): Principal => ({ userId, role: 'user', kind: 'api_key', apiKeyId, scopes: new Set(['llm', 'usage:read']) });

/** A finished call, with whatever the test cares about changed. */
export const outcome = (changes: Partial<Outcome> = {}): Outcome => ({
  endpoint: '/v1/chat/completions', provider: 'openai', model: 'gpt-4o-mini',
  promptTokens: 10, completionTokens: 20, estimated: false, costUsd: 0.001,
  latencyMs: 120, ttftMs: 40, status: 'ok', errorCode: null,
  ...changes,
});
