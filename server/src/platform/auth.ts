import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from './errors.js';

/** Scopes an API key can carry (API.md). A user's own session holds all of them but `admin`, unless an admin. */
export const SCOPES = ['llm', 'chat', 'knowledge:read', 'knowledge:write', 'sync', 'usage:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who is calling: the user, and either their device session or one of their API keys. */
export interface Principal {
  readonly userId: string;
  readonly role: 'user' | 'admin';
  readonly kind: 'session' | 'api_key';
  readonly sessionId?: string;
  readonly deviceId?: string;
  readonly apiKeyId?: string;
  readonly scopes: ReadonlySet<Scope>;
}

/** Resolves a request's credentials to a principal; undefined when none were sent, AppError 401 when they are bad. */
export type Authenticator = (request: FastifyRequest) => Promise<Principal | undefined>;

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

type Guard = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

/**
 * The one-line guards every route uses: `preHandler: guards.auth()`, `guards.scope('llm')`,
 * `guards.admin()`. Ownership is enforced in services (`where user_id = principal.userId`), which
 * answer 404 for another user's ids, never 403, so existence is not revealed.
 */
export interface Guards {
  /** Any valid credential. */
  auth(): Guard;
  /** A valid credential carrying `scope` (sessions carry every user scope). */
  scope(scope: Scope): Guard;
  /** A session or key of an admin, with the `admin` scope. */
  admin(): Guard;
  /** Credentials that are optional: sets `request.principal` when present and valid. */
  optional(): Guard;
  /** A user session only (not an API key): for account and credential management. */
  session(): Guard;
}

export function createGuards(authenticate: Authenticator): Guards {
  const resolve = async (request: FastifyRequest): Promise<Principal> => {
    request.principal ??= await authenticate(request);
    if (!request.principal) throw AppError.unauthorized();
    return request.principal;
  };
  return {
    auth: () => async (request) => {
      await resolve(request);
    },
    scope: (scope) => async (request) => {
      const p = await resolve(request);
      if (!p.scopes.has(scope)) throw AppError.forbidden(`This credential lacks the "${scope}" scope.`);
    },
    admin: () => async (request) => {
      const p = await resolve(request);
      if (p.role !== 'admin' || !p.scopes.has('admin')) throw AppError.forbidden('Administrators only.');
    },
    optional: () => async (request) => {
      request.principal ??= await authenticate(request);
    },
    session: () => async (request) => {
      const p = await resolve(request);
      if (p.kind !== 'session') throw AppError.forbidden('This action needs a signed-in session, not an API key.');
    },
  };
}

/** Scopes a principal holds given its role and, for API keys, the key's own scopes. */
export function effectiveScopes(role: 'user' | 'admin', keyScopes?: readonly string[]): Set<Scope> {
  const allowed = SCOPES.filter((s) => s !== 'admin' || role === 'admin');
  if (!keyScopes) return new Set(allowed);
  // A key never holds more power than its owner has right now.
  return new Set(allowed.filter((s) => keyScopes.includes(s)));
}
