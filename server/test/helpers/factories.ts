import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { rememberSecret } from './leaks.js';
import { request, type TestServer } from './server.js';

export interface TestUser {
  id: string;
  email: string;
  password: string;
  access_token: string;
  refresh_token: string;
  device_id: string;
}

/** A password that passes the policy and is unique per call (so log greps can look for it). */
export const strongPassword = (): string => `pw-${randomBytes(9).toString('base64url')}-Keel!`;
export const uniqueEmail = (label = 'user'): string => `${label}-${randomBytes(5).toString('hex')}@example.test`;

/** Every message the server wrote to its outbox for `to`, oldest first. */
export function outboxFor(s: TestServer, to: string): string[] {
  const dir = path.join(s.config.dataDir, 'outbox');
  let files: string[] = [];
  try {
    files = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return files.map((f) => readFileSync(path.join(dir, f), 'utf8')).filter((m) => m.includes(`\nTo: ${to}\n`));
}

/** The one-time code in the latest message to `to` (verification or reset). */
export function latestCode(s: TestServer, to: string): string {
  const mails = outboxFor(s, to);
  const match = /with this code:\n\n(\S+)\n/.exec(mails[mails.length - 1] ?? '');
  if (!match) throw new Error(`no code mailed to ${to}`);
  rememberSecret(match[1]!);
  return match[1]!;
}

/** Registers through the real flow (register → mailed link → verify-email) and returns a signed-in user. */
export async function signUp(s: TestServer, opts: { email?: string; password?: string; name?: string } = {}): Promise<TestUser> {
  const email = opts.email ?? uniqueEmail();
  const password = opts.password ?? strongPassword();
  const reg = await request(`${s.url}/auth/register`, { method: 'POST', json: { email, password, ...(opts.name ? { name: opts.name } : {}) } });
  if (reg.status !== 202) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`);
  const verified = await request<{ user: { id: string }; access_token: string; refresh_token: string; device_id: string }>(`${s.url}/auth/verify-email`, { method: 'POST', json: { token: latestCode(s, email) } });
  if (verified.status !== 200) throw new Error(`verify-email: ${verified.status} ${JSON.stringify(verified.body)}`);
  return { id: verified.body.user.id, email, password, access_token: verified.body.access_token, refresh_token: verified.body.refresh_token, device_id: verified.body.device_id };
}

/** Makes a user an admin directly in the database (what `keel create-admin` does for a new one). */
export async function promoteToAdmin(s: TestServer, userId: string): Promise<void> {
  await s.server.keel.context.database.db.updateTable('users').set({ role: 'admin' }).where('id', '=', userId).execute();
}

export const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
