import { createApiKey, login, loginMany, type BenchAccount } from './identity.js';
import type { ConnectionSequence, LoadPlan } from './load.js';

/** What a scenario's setup may use: the running server and the account made for the run. */
export interface ScenarioEnv {
  /** A verified account with a password, made with `keel create-admin` against this server's database. */
  readonly account: BenchAccount;
}

/** A scenario ready to load: `plan` is called before the warmup and again before the measured run. */
export interface PreparedScenario {
  plan(connections: number): Promise<LoadPlan>;
}

/** One endpoint under load. Every scenario runs against every database. */
export interface Scenario {
  /** As it appears in RESULTS.md, e.g. "GET /health". */
  readonly name: string;
  /** One line for the README and the console. */
  readonly measures: string;
  /** Connections for this scenario whatever --connections says (login: argon2id is CPU-bound). */
  readonly connections?: number;
  /** Pipelining for this scenario whatever --pipelining says (1 where a response feeds the next request). */
  readonly pipelining?: number;
  /** Prepares credentials on the running server, once per database, before the scenario's runs. */
  setup(serverUrl: string, env: ScenarioEnv): Promise<PreparedScenario>;
}

const JSON_HEADERS = { 'content-type': 'application/json' } as const;

/** Connections of the login scenario: argon2id hashing is CPU-bound, and the machine has 2 cores. */
export const LOGIN_CONNECTIONS = 4;

const fixed = (plan: LoadPlan): PreparedScenario => ({ plan: async () => plan });

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'GET /health',
    measures: 'the HTTP stack alone: routing, the global hooks every request passes through, JSON serialization and the access log; no database',
    setup: async () => fixed({ method: 'GET', path: '/health' }),
  },
  {
    name: 'GET /ready',
    measures: 'the same plus two queries per request: a `select 1` ping and a read of the migrations table',
    setup: async () => fixed({ method: 'GET', path: '/ready' }),
  },
  {
    name: 'GET /me (JWT)',
    measures: 'an authenticated JSON request with `Authorization: Bearer <access JWT>`: the HS256 token and its claims are verified, then the session row (with its device and user) is read, then the profile',
    setup: async (serverUrl, { account }) => {
      const { accessToken } = await login(serverUrl, account);
      return fixed({ method: 'GET', path: '/me', headers: { authorization: `Bearer ${accessToken}` } });
    },
  },
  {
    name: 'GET /me (API key)',
    measures: 'the same with `X-API-Key: <key>` (scope `llm`): the key row (with its owner) looked up by prefix and its secret hash compared, then the profile',
    setup: async (serverUrl, { account }) => {
      const { accessToken } = await login(serverUrl, account);
      const key = await createApiKey(serverUrl, accessToken, ['llm']);
      return fixed({ method: 'GET', path: '/me', headers: { 'x-api-key': key } });
    },
  },
  {
    name: 'POST /auth/refresh',
    measures: 'real refresh-token rotation: one session per connection, each request presents the token the previous response returned (spend it, insert its successor, touch the session, sign a new access JWT)',
    pipelining: 1,
    setup: async (serverUrl, { account }) => ({
      // Fresh sessions for each run: a request cut off at the end of the warmup may have spent a token
      // whose successor the connection never saw.
      plan: async (connections) => refreshChains(await loginMany(serverUrl, account, connections).then((pairs) => pairs.map((p) => p.refreshToken))),
    }),
  },
  {
    name: 'POST /auth/login',
    measures: 'e-mail and password sign-in: an argon2id verification, then a new device, session, refresh token and audit row per request',
    connections: LOGIN_CONNECTIONS,
    setup: async (_serverUrl, { account }) => fixed({
      method: 'POST',
      path: '/auth/login',
      headers: JSON_HEADERS,
      body: JSON.stringify({ email: account.email, password: account.password }),
    }),
  },
];

/**
 * One rotation chain per connection, starting from `tokens[i]`. Every 200 must return a token this
 * run has never seen (a repeat would mean the retry path answered, not a rotation); `problems` says
 * otherwise, and also when there were more connections than chains.
 */
export function refreshChains(tokens: readonly string[]): LoadPlan {
  const seen = new Set<string>(tokens);
  let repeated = 0;
  let unreadable = 0;
  let missingChains = 0;
  return {
    method: 'POST',
    path: '/auth/refresh',
    headers: JSON_HEADERS,
    perConnection: (connection): ConnectionSequence => {
      let current = tokens[connection];
      if (current === undefined) {
        missingChains++;
        current = 'krt_missing';
      }
      return {
        nextBody: () => JSON.stringify({ refresh_token: current }),
        onResponse: (status, body) => {
          if (status !== 200) return; // counted as non-2xx; the chain keeps presenting its last token
          let next: unknown;
          try {
            next = (JSON.parse(body) as { refresh_token?: unknown }).refresh_token;
          } catch {
            next = undefined;
          }
          if (typeof next !== 'string' || next === '') {
            unreadable++;
            return;
          }
          if (seen.has(next)) repeated++;
          seen.add(next);
          current = next;
        },
      };
    },
    problems: () => [
      ...(repeated > 0 ? [`${repeated} refresh answers returned a token already seen (the retry path, not a rotation)`] : []),
      ...(unreadable > 0 ? [`${unreadable} refresh answers had no readable refresh_token`] : []),
      ...(missingChains > 0 ? [`${missingChains} connections had no session of their own`] : []),
    ],
  };
}
