import { appendFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';

/**
 * The suite-wide "no secret in the logs" check. Every credential a test sends or receives (passwords,
 * tokens, API keys, TOTP secrets, mailed codes) is recorded, every log line a Keel server writes is
 * captured to a file, and the global teardown (global-setup.ts) greps the logs for every secret.
 */
const SECRET_FIELDS = new Set(['password', 'new_password', 'current_password', 'access_token', 'refresh_token', 'id_token', 'key', 'secret', 'token', 'code', 'otp', 'recovery_codes', 'otpauth_url']);
/** Short values (a 6-digit TOTP code) would match by chance inside ids and timestamps. */
const MIN_LENGTH = 8;

declare module 'vitest' {
  export interface ProvidedContext {
    keelTestDir: string;
  }
}

function dir(kind: 'logs' | 'secrets'): string | undefined {
  let root: string | undefined;
  try {
    root = inject('keelTestDir');
  } catch {
    return undefined; // outside vitest (e.g. the openapi script)
  }
  if (!root) return undefined;
  const d = path.join(root, kind);
  mkdirSync(d, { recursive: true });
  return d;
}

export function rememberSecret(value: string): void {
  const d = dir('secrets');
  if (d && value.length >= MIN_LENGTH) appendFileSync(path.join(d, `${process.pid}.txt`), `${JSON.stringify(value)}\n`);
}

/** Records the values of credential-named fields anywhere in a JSON body. */
export function rememberSecretsIn(body: unknown, depth = 0): void {
  if (!body || typeof body !== 'object' || depth > 6) return;
  for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
    if (k === 'error') continue; // error bodies carry codes like "invalid_token", not secrets
    if (SECRET_FIELDS.has(k)) {
      // `key` also names ordinary fields (a grouping key, a counter key): only API keys are secrets there.
      if (k === 'key' && typeof v === 'string' && !v.startsWith('keel_sk_')) continue;
      if (typeof v === 'string') rememberSecret(v);
      else if (Array.isArray(v)) for (const item of v) if (typeof item === 'string') rememberSecret(item);
    }
    if (v && typeof v === 'object') rememberSecretsIn(v, depth + 1);
  }
}

/** A file that a server's log lines are appended to. */
export function logFile(label: string): string | undefined {
  const d = dir('logs');
  return d ? path.join(d, `${process.pid}-${label}.log`) : undefined;
}

export function appendLog(file: string | undefined, text: string): void {
  if (file) appendFileSync(file, text);
}

/** Which recorded secrets occur in which log files (values shortened in the report). */
export function findLeaks(logs: ReadonlyMap<string, string>, secrets: ReadonlySet<string>): string[] {
  const found: string[] = [];
  for (const secret of secrets) {
    for (const [file, text] of logs) {
      if (text.includes(secret)) found.push(`${secret.slice(0, 4)}… (${secret.length} chars) in ${path.basename(file)}`);
    }
  }
  return found;
}

export function readAll(root: string): { logs: Map<string, string>; secrets: Set<string> } {
  const read = (kind: string) => {
    try {
      return readdirSync(path.join(root, kind)).map((f) => path.join(root, kind, f));
    } catch {
      return [];
    }
  };
  const logs = new Map(read('logs').map((f) => [f, readFileSync(f, 'utf8')] as const));
  const secrets = new Set(read('secrets').flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as string)));
  return { logs, secrets };
}
