import { afterAll, beforeAll, expect, it } from 'vitest';
import { SCOPES, type Scope } from '../../src/platform/auth.js';
import type { KeelModule } from '../../src/platform/module.js';
import { describeEachDatabase } from './databases.js';
import { bearer, promoteToAdmin, signUp, type TestUser } from './factories.js';
import { expectErrorShape, request, startServer, type JsonResponse, type TestServer } from './server.js';

/**
 * The identities every route is tried with:
 * - `guest`: no credentials;
 * - `owner`: the user who owns the row's resource (a session);
 * - `other`: another, ordinary user (a session) — someone else's resource must look absent (404);
 * - `admin`: an administrator who is not the owner (a session);
 * - `keyWithScope` / `keyWithoutScope`: API keys of the row's `keyOwner`, created through the real
 *   `POST /api-keys`, with and without the row's `scope` (see `keyScopes`).
 */
export type Identity = 'guest' | 'other' | 'owner' | 'admin' | 'keyWithScope' | 'keyWithoutScope';

/** Keys and guests go first, so a session route that ends sessions or accounts cannot disturb them. */
export const IDENTITIES: readonly Identity[] = ['guest', 'keyWithScope', 'keyWithoutScope', 'other', 'admin', 'owner'];

export interface Cast {
  readonly owner: TestUser;
  readonly other: TestUser;
  readonly admin: TestUser;
}

export interface MatrixContext {
  readonly server: TestServer;
  readonly cast: Cast;
  /** A request as one of the cast (by session), for setting up resources. */
  api<T = Record<string, unknown>>(method: string, path: string, as: TestUser, json?: unknown): Promise<JsonResponse<T>>;
}

/** Who is calling in one cell of the table: for keys, `user` is the key's owner; for a guest, the row's owner. */
export interface Caller {
  readonly identity: Identity;
  readonly user: TestUser;
}

export interface AccessRow {
  /** The test's name when `METHOD path` is not enough (two rows for one route). */
  readonly name?: string;
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** May hold `:name` placeholders, filled from what `setup` returns. */
  readonly path: string;
  /** The scope the route needs from an API key; none for routes any key (or no key) may call. */
  readonly scope?: Scope;
  /** Whose keys play keyWithScope/keyWithoutScope: `admin` by default when `scope` is `admin`, else `owner`. */
  readonly keyOwner?: 'owner' | 'admin';
  /**
   * A JSON body, or one made for each caller (e.g. their own password). Guests need a valid body too:
   * Fastify validates the body before the guards run.
   */
  readonly body?: unknown;
  /** Runs before each cell; returns the path parameters (e.g. `{ id }` of a resource of `ctx.cast.owner`). A fresh resource per cell keeps destructive rows honest. */
  readonly setup?: (ctx: MatrixContext, caller: Caller) => Promise<Record<string, string>>;
  /** The row ends sessions or accounts (logout, password change, erasure): it gets its own newly signed-up cast. */
  readonly fresh?: boolean;
  /** Expected status per identity; key identities left out are not tried. */
  readonly expect: Record<'guest' | 'other' | 'owner' | 'admin', number> & Partial<Record<'keyWithScope' | 'keyWithoutScope', number>>;
}

/**
 * The scopes of the two keys of a row. With a `scope`: exactly that scope, and every scope the key's
 * owner may hold except it. Without: every scope the owner may hold, and a single ordinary scope.
 */
export function keyScopes(row: AccessRow): { withScope: Scope[]; withoutScope: Scope[] } {
  const owner = row.keyOwner ?? (row.scope === 'admin' ? 'admin' : 'owner');
  const holdable = SCOPES.filter((s) => s !== 'admin' || owner === 'admin');
  if (row.scope) return { withScope: [row.scope], withoutScope: holdable.filter((s) => s !== row.scope) };
  return { withScope: [...holdable], withoutScope: ['usage:read'] };
}

/** Signs up an owner, another user and an admin through the real registration flow. */
export async function signUpCast(server: TestServer): Promise<Cast> {
  const [owner, other, admin] = await Promise.all([signUp(server, { name: 'Owner' }), signUp(server, { name: 'Other' }), signUp(server, { name: 'Admin' })]);
  await promoteToAdmin(server, admin.id);
  return { owner, other, admin };
}

/** Creates an API key through `POST /api-keys` with `user`'s session and returns the key. */
export async function createApiKey(server: TestServer, user: TestUser, scopes: readonly Scope[], name = 'matrix'): Promise<string> {
  const res = await request<{ key: string }>(`${server.url}/api-keys`, { method: 'POST', headers: bearer(user.access_token), json: { name, scopes } });
  if (res.status !== 201) throw new Error(`creating an API key for the access matrix: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.key;
}

/**
 * Runs one row against a running server: every identity in `IDENTITIES` order, each with a fresh
 * `setup`. Asserts the whole row at once (so a failure shows every cell), plus: a 401 carries
 * `WWW-Authenticate: Bearer`, and every 4xx/5xx has the API.md error shape.
 */
export async function checkAccessRow(server: TestServer, sharedCast: Cast, row: AccessRow, keyCache = new Map<string, string>()): Promise<void> {
  const cast = row.fresh ? await signUpCast(server) : sharedCast;
  const ctx: MatrixContext = {
    server,
    cast,
    api: (method, path, as, json) => request(`${server.url}${path}`, { method, headers: bearer(as.access_token), ...(json !== undefined ? { json } : {}) }),
  };
  const keyUser = (row.keyOwner ?? (row.scope === 'admin' ? 'admin' : 'owner')) === 'admin' ? cast.admin : cast.owner;
  const scopes = keyScopes(row);
  const keyFor = async (list: Scope[]): Promise<string> => {
    const cacheKey = `${keyUser.id}:${list.join(',')}`;
    let key = keyCache.get(cacheKey);
    if (!key) {
      key = await createApiKey(server, keyUser, list);
      keyCache.set(cacheKey, key);
    }
    return key;
  };
  // Made before any cell runs: a session cell may end the session that creates keys.
  const keys = {
    keyWithScope: row.expect.keyWithScope === undefined ? undefined : await keyFor(scopes.withScope),
    keyWithoutScope: row.expect.keyWithoutScope === undefined ? undefined : await keyFor(scopes.withoutScope),
  };

  const expected: Partial<Record<Identity, number>> = {};
  const actual: Partial<Record<Identity, number>> = {};
  const problems: string[] = [];
  for (const identity of IDENTITIES) {
    const want = row.expect[identity];
    if (want === undefined) continue;
    const caller: Caller = { identity, user: identity === 'other' ? cast.other : identity === 'admin' ? cast.admin : identity.startsWith('key') ? keyUser : cast.owner };
    const params = row.setup ? await row.setup(ctx, caller) : {};
    const path = row.path.replace(/:([a-z_]+)/gi, (_, name: string) => {
      const value = params[name];
      if (value === undefined) throw new Error(`${row.method} ${row.path}: setup gave no "${name}"`);
      return encodeURIComponent(value);
    });
    const headers: Record<string, string> =
      identity === 'guest' ? {} : identity === 'keyWithScope' || identity === 'keyWithoutScope' ? { 'x-api-key': keys[identity]! } : bearer(caller.user.access_token);
    const body: unknown = typeof row.body === 'function' ? (row.body as (c: Caller) => unknown)(caller) : row.body;
    const res = await request(`${server.url}${path}`, { method: row.method, headers, ...(body !== undefined ? { json: body } : {}) });

    expected[identity] = want;
    actual[identity] = res.status;
    if (res.status === 401 && !/^Bearer\b/.test(res.headers.get('www-authenticate') ?? '')) problems.push(`${identity}: 401 without "WWW-Authenticate: Bearer"`);
    if (res.status >= 400) {
      try {
        expectErrorShape(res.body);
      } catch (err) {
        problems.push(`${identity}: ${(err as Error).message}`);
      }
    }
  }
  expect(actual, `${row.method} ${row.path}: status per identity`).toEqual(expected);
  expect(problems, `${row.method} ${row.path}`).toEqual([]);
}

/**
 * One test per row, on every database (SQLite, and Postgres when TEST_DATABASE_URL is set), against a
 * real server with real principals. Each module adds a test file with its own rows:
 *
 *     describeAccessMatrix('chat access', [
 *       { method: 'GET', path: '/conversations', scope: 'chat', expect: { guest: 401, other: 200, owner: 200, admin: 200, keyWithScope: 200, keyWithoutScope: 403 } },
 *     ]);
 */
export function describeAccessMatrix(title: string, rows: readonly AccessRow[], options: { env?: Record<string, string>; modules?: KeelModule[] } = {}): void {
  describeEachDatabase(title, (db) => {
    let server: TestServer;
    let cast: Cast;
    const keyCache = new Map<string, string>();
    beforeAll(async () => {
      server = await startServer(db(), options.env, options.modules);
      cast = await signUpCast(server);
    });
    afterAll(() => server?.close());

    for (const row of rows) {
      it(row.name ?? `${row.method} ${row.path}`, () => checkAccessRow(server, cast, row, keyCache));
    }
  });
}
