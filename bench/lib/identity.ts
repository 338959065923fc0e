// What the identity scenarios need from the server under test: an account (made with the built
// `keel create-admin`), sign-ins and an API key over HTTP, and the argon2id parameters the built
// server hashes passwords with; for the chat suite, many signed-in anonymous accounts.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface BenchAccount {
  readonly email: string;
  readonly password: string;
}

export interface TokenPair {
  readonly accessToken: string;
  readonly refreshToken: string;
}

/** The argon2id parameters, as the built server's own `hashPassword` writes them into a hash. */
export interface Argon2Params {
  /** e.g. "argon2id". */
  readonly algorithm: string;
  /** The PHC `v=` field, e.g. 19 (0x13). */
  readonly version: number;
  readonly memoryKiB: number;
  readonly passes: number;
  readonly parallelism: number;
}

export const BENCH_EMAIL = 'bench@example.test';

/** A fresh random password: long, not a common one, not the e-mail. */
export function benchPassword(): string {
  return `bench-${randomBytes(24).toString('base64url')}`;
}

/**
 * `node <entry> create-admin --email …` with the server's own environment (same database, schema and
 * data dir) and the password in KEEL_ADMIN_PASSWORD, so it is not on a command line. Run it once the
 * server is ready: the schema is migrated by then, and create-admin's own migration is a no-op.
 */
export async function createAccount(entry: string, cwd: string, env: Readonly<Record<string, string>>): Promise<BenchAccount> {
  const account = { email: BENCH_EMAIL, password: benchPassword() };
  try {
    await run(process.execPath, [entry, 'create-admin', '--email', account.email], {
      cwd,
      env: { ...env, KEEL_ADMIN_PASSWORD: account.password },
      timeout: 60_000,
    });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`keel create-admin failed: ${e.message}${e.stderr ? `\n${e.stderr.trim()}` : ''}`);
  }
  return account;
}

/** POST a JSON body; the parsed JSON answer, or an error naming the status. */
async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${new URL(url).pathname} answered ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

function stringField(body: Record<string, unknown>, name: string, what: string): string {
  const value = body[name];
  if (typeof value !== 'string' || value === '') throw new Error(`${what}: the answer has no ${name}`);
  return value;
}

/** POST /auth/login: a new device and session each time. */
export async function login(baseUrl: string, account: BenchAccount): Promise<TokenPair> {
  const body = await postJson(`${baseUrl}/auth/login`, { email: account.email, password: account.password });
  return { accessToken: stringField(body, 'access_token', 'login'), refreshToken: stringField(body, 'refresh_token', 'login') };
}

/** `count` sign-ins, at most `concurrency` at a time (argon2id is CPU-bound). */
export async function loginMany(baseUrl: string, account: BenchAccount, count: number, concurrency = 4): Promise<TokenPair[]> {
  const pairs: TokenPair[] = new Array<TokenPair>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      pairs[i] = await login(baseUrl, account);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return pairs;
}

/** POST /api-keys with the session's access token; the whole key, shown this once. */
export async function createApiKey(baseUrl: string, accessToken: string, scopes: readonly string[]): Promise<string> {
  const body = await postJson(`${baseUrl}/api-keys`, { name: 'bench', scopes }, { authorization: `Bearer ${accessToken}` });
  return stringField(body, 'key', 'POST /api-keys');
}

/**
 * Imports the built `passwords.js` and reads the parameters off a hash its `hashPassword` makes —
 * the function `create-admin` hashed the bench account's password with, so the one every login
 * verifies against. Cross-checked with the exported ARGON2_PARAMS.
 */
export async function builtArgon2Params(passwordsModule: string): Promise<Argon2Params> {
  const mod = (await import(pathToFileURL(passwordsModule).href)) as {
    hashPassword?: (password: string) => Promise<string>;
    ARGON2_PARAMS?: { memoryCost?: number; timeCost?: number; parallelism?: number };
  };
  if (typeof mod.hashPassword !== 'function') throw new Error(`${passwordsModule} exports no hashPassword`);
  const hash = await mod.hashPassword(randomBytes(16).toString('hex'));
  const m = /^\$(argon2(?:id|i|d))\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$/.exec(hash);
  if (m === null) throw new Error(`the built hashPassword made a hash this harness cannot read: ${hash.split('$').slice(0, 4).join('$')}…`);
  const params: Argon2Params = { algorithm: m[1]!, version: Number(m[2]), memoryKiB: Number(m[3]), passes: Number(m[4]), parallelism: Number(m[5]) };
  const declared = mod.ARGON2_PARAMS;
  if (declared !== undefined && (
    (declared.memoryCost !== undefined && declared.memoryCost !== params.memoryKiB)
    || (declared.timeCost !== undefined && declared.timeCost !== params.passes)
    || (declared.parallelism !== undefined && declared.parallelism !== params.parallelism))) {
    throw new Error(`ARGON2_PARAMS (${JSON.stringify(declared)}) disagrees with the hash the built server makes (${hash.split('$').slice(1, 4).join('$')})`);
  }
  return params;
}

export function describeArgon2(p: Argon2Params): string {
  return `${p.algorithm} v=${p.version} (0x${p.version.toString(16)}), memory ${p.memoryKiB} KiB (${Math.round((p.memoryKiB / 1024) * 10) / 10} MiB), ${p.passes} passes, parallelism ${p.parallelism}`;
}

/** An account of its own, signed in on one device: what one chat client of the chat suite is. */
export interface AnonymousSession {
  readonly userId: string;
  readonly accessToken: string;
}

/**
 * `count` accounts made with `POST /auth/anonymous` (an account without e-mail or password, so no
 * argon2id: a user row, a device, a session, a refresh token and an audit row), at most `concurrency`
 * requests at a time; each comes back signed in, and its access token (all of a user's scopes, `chat`
 * included; 15 minutes by default) is what a chat client sends.
 */
export async function anonymousSessions(baseUrl: string, count: number, concurrency = 16): Promise<AnonymousSession[]> {
  const sessions: AnonymousSession[] = new Array<AnonymousSession>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const body = await postJson(`${baseUrl}/auth/anonymous`, { device_name: `bench client ${i + 1}`, device_type: 'cli' });
      sessions[i] = { userId: stringField(body, 'user_id', 'POST /auth/anonymous'), accessToken: stringField(body, 'access_token', 'POST /auth/anonymous') };
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return sessions;
}
