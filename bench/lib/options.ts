import { parseArgs } from 'node:util';

export type DatabaseKind = 'sqlite' | 'postgres';
export const DATABASE_KINDS: readonly DatabaseKind[] = ['sqlite', 'postgres'];

export const DEFAULT_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Which benchmarks one run makes: the HTTP scenarios (README "Scenarios"), the LLM gateway's overhead,
 * chat over SSE and WebSocket, all three, or the knowledge base's search index (only when asked for).
 */
export type SuiteName = 'http' | 'gateway' | 'chat' | 'all' | 'knowledge' | 'ingestion';
export const SUITE_NAMES: readonly SuiteName[] = ['http', 'gateway', 'chat', 'all', 'knowledge', 'ingestion'];

/** Concurrent streams of the gateway suite (issue #4: 1, 64 and 256). */
export const DEFAULT_STREAMS: readonly number[] = [1, 64, 256];

/** Chat suite: concurrent generations over each transport (issue #5: 100). */
export const DEFAULT_CHAT_STREAMS: readonly number[] = [100, 500];
/** Chat suite: idle WebSocket connections held, ramped in this order (issue #5). */
export const DEFAULT_WS_IDLE: readonly number[] = [1000, 5000];

/** Knowledge suite: chunks of the searched user, cumulative levels (issue #6: 10k and 100k). */
export const DEFAULT_CHUNKS: readonly number[] = [10_000, 100_000];

/** What one `npm run bench` does: flags win over BENCH_* environment variables, which win over defaults. */
export interface BenchOptions {
  readonly suite: SuiteName;
  /** Databases of the http suite (the gateway suite always runs on SQLite). */
  readonly databases: readonly DatabaseKind[];
  /** Measured seconds per scenario. */
  readonly durationS: number;
  /** Unrecorded seconds of the same load before each measured run. */
  readonly warmupS: number;
  readonly connections: number;
  readonly pipelining: number;
  /** Gateway suite: the concurrent-stream levels, in order. */
  readonly streams: readonly number[];
  /** Chat suite: concurrent generation loops per transport (SSE and WebSocket), in order. */
  readonly chatStreams: readonly number[];
  /** Chat suite: idle WebSocket connections held, cumulative levels in ascending order. */
  readonly wsIdle: readonly number[];
  /** Chat suite: seconds each idle level is held before it is sampled and pinged. */
  readonly wsHoldS: number;
  /** Knowledge suite: the searched user's chunk counts, cumulative levels in ascending order. */
  readonly chunks: readonly number[];
  /** Knowledge suite: measured searches per mode, database and level. */
  readonly queries: number;
  /** The Postgres database a throwaway schema is created in. */
  readonly postgresUrl: string;
  /** False with --no-write: print the table, leave RESULTS.md alone. */
  readonly write: boolean;
  readonly help: boolean;
}

export const USAGE = `usage: npm run bench [-- options]      (or: node --import tsx bench/run.ts [options] after npm run build)

options (environment variable in brackets; flags win):
  --suite <http|gateway|chat|all|knowledge|ingestion>
                             http: the HTTP scenarios on SQLite and Postgres; gateway: the LLM
                             gateway's overhead against a fake upstream (SQLite); chat: idle
                             WebSockets held and chat generations over SSE and WebSocket (SQLite);
                             all: the three; knowledge: the knowledge base's search index, in
                             process, on SQLite and Postgres; ingestion: documents uploaded
                             over HTTP until all are ready (chunks/s) [BENCH_SUITE] (default http)
  --only <sqlite|postgres>   http, knowledge and ingestion suites: one database only; repeat or comma-separate
                             for several (default: both)
  --duration <s>             measured seconds per scenario, per target and stream level of the
                             gateway suite, per transport and level of the chat suite
                             [BENCH_DURATION] (default 10)
  --warmup <s>               unrecorded warmup seconds before each measured run [BENCH_WARMUP] (default 2)
  --connections <n>          concurrent connections, also of the gateway suite's non-streamed runs
                             [BENCH_CONNECTIONS] (default 50)
  --streams <n,n,…>          gateway suite: concurrent-stream levels [BENCH_STREAMS] (default ${DEFAULT_STREAMS.join(',')})
  --chat-streams <n,n,…>     chat suite: concurrent generations per transport [BENCH_CHAT_STREAMS]
                             (default ${DEFAULT_CHAT_STREAMS.join(',')})
  --ws-idle <n,n,…>          chat suite: idle WebSocket connections held, ramped level by level
                             [BENCH_WS_IDLE] (default ${DEFAULT_WS_IDLE.join(',')})
  --ws-hold <s>              chat suite: seconds each idle level is held [BENCH_WS_HOLD] (default 10)
  --chunks <n,n,…>           knowledge suite: the searched user's chunks, cumulative levels
                             [BENCH_CHUNKS] (default ${DEFAULT_CHUNKS.join(',')})
  --queries <n>              knowledge suite: measured searches per mode and level [BENCH_QUERIES]
                             (default 300)
  --pipelining <n>           requests in flight per connection [BENCH_PIPELINING] (default 1)
  --postgres-url <url>       where the throwaway schema is created [BENCH_POSTGRES_URL]
                             (default ${DEFAULT_POSTGRES_URL})
  --no-write                 print the results but do not append them to bench/RESULTS.md
  --help                     show this text`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Environment variables that change a run, in the order they are echoed back in the recorded command. */
export const BENCH_ENV_VARIABLES = ['BENCH_SUITE', 'BENCH_DURATION', 'BENCH_WARMUP', 'BENCH_CONNECTIONS', 'BENCH_STREAMS', 'BENCH_CHAT_STREAMS', 'BENCH_WS_IDLE', 'BENCH_WS_HOLD', 'BENCH_CHUNKS', 'BENCH_QUERIES', 'BENCH_PIPELINING', 'BENCH_POSTGRES_URL'] as const;

export function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        suite: { type: 'string' },
        streams: { type: 'string' },
        'chat-streams': { type: 'string' },
        'ws-idle': { type: 'string' },
        'ws-hold': { type: 'string' },
        chunks: { type: 'string' },
        queries: { type: 'string' },
        only: { type: 'string', multiple: true },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        connections: { type: 'string' },
        pipelining: { type: 'string' },
        'postgres-url': { type: 'string' },
        'no-write': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values } = parsed;
  const number = (flagName: string, flagValue: string | undefined, envName: string, def: number, min: number, max: number): number => {
    const raw = flagValue ?? nonEmpty(env[envName]);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      const source = flagValue === undefined ? envName : `--${flagName}`;
      throw new UsageError(`${source} must be a whole number from ${min} to ${max} (got "${raw}")`);
    }
    return n;
  };

  return {
    suite: parseSuite(values.suite ?? nonEmpty(env.BENCH_SUITE), values.suite === undefined ? 'BENCH_SUITE' : '--suite'),
    databases: parseDatabases(values.only),
    durationS: number('duration', values.duration, 'BENCH_DURATION', 10, 1, 600),
    warmupS: number('warmup', values.warmup, 'BENCH_WARMUP', 2, 0, 600),
    connections: number('connections', values.connections, 'BENCH_CONNECTIONS', 50, 1, 10_000),
    pipelining: number('pipelining', values.pipelining, 'BENCH_PIPELINING', 1, 1, 100),
    streams: parseStreams(values.streams ?? nonEmpty(env.BENCH_STREAMS), values.streams === undefined ? 'BENCH_STREAMS' : '--streams'),
    chatStreams: parseLevels(values['chat-streams'] ?? nonEmpty(env.BENCH_CHAT_STREAMS), values['chat-streams'] === undefined ? 'BENCH_CHAT_STREAMS' : '--chat-streams', DEFAULT_CHAT_STREAMS, 2000, 'concurrent generations'),
    wsIdle: [...parseLevels(values['ws-idle'] ?? nonEmpty(env.BENCH_WS_IDLE), values['ws-idle'] === undefined ? 'BENCH_WS_IDLE' : '--ws-idle', DEFAULT_WS_IDLE, 50_000, 'idle WebSocket connections')].sort((a, b) => a - b),
    wsHoldS: number('ws-hold', values['ws-hold'], 'BENCH_WS_HOLD', 10, 1, 600),
    chunks: [...parseLevels(values.chunks ?? nonEmpty(env.BENCH_CHUNKS), values.chunks === undefined ? 'BENCH_CHUNKS' : '--chunks', DEFAULT_CHUNKS, 1_000_000, 'chunks')].sort((a, b) => a - b),
    queries: number('queries', values.queries, 'BENCH_QUERIES', 300, 10, 100_000),
    postgresUrl: values['postgres-url'] ?? nonEmpty(env.BENCH_POSTGRES_URL) ?? DEFAULT_POSTGRES_URL,
    write: !values['no-write'],
    help: values.help,
  };
}

function parseSuite(raw: string | undefined, source: string): SuiteName {
  if (raw === undefined) return 'http';
  const suite = SUITE_NAMES.find((n) => n === raw.trim().toLowerCase());
  if (suite === undefined) throw new UsageError(`${source} takes ${SUITE_NAMES.join(', ')} (got "${raw}")`);
  return suite;
}

/** At most 1024 streams: each is a socket to the server (and, through Keel, one more to the upstream). */
function parseStreams(raw: string | undefined, source: string): number[] {
  if (raw === undefined) return [...DEFAULT_STREAMS];
  const levels: number[] = [];
  for (const part of raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const n = Number(part);
    if (!Number.isInteger(n) || n < 1 || n > 1024) throw new UsageError(`${source} takes whole numbers from 1 to 1024, comma-separated (got "${part}")`);
    if (!levels.includes(n)) levels.push(n);
  }
  if (levels.length === 0) throw new UsageError(`${source} needs at least one number of concurrent streams`);
  return levels;
}

/** Comma-separated whole numbers from 1 to `max`, duplicates dropped, order kept. */
function parseLevels(raw: string | undefined, source: string, def: readonly number[], max: number, what: string): number[] {
  if (raw === undefined) return [...def];
  const levels: number[] = [];
  for (const part of raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const n = Number(part);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${source} takes whole numbers from 1 to ${max}, comma-separated (got "${part}")`);
    if (!levels.includes(n)) levels.push(n);
  }
  if (levels.length === 0) throw new UsageError(`${source} needs at least one number of ${what}`);
  return levels;
}

function parseDatabases(only: string[] | undefined): DatabaseKind[] {
  if (only === undefined) return [...DATABASE_KINDS];
  const names = only.flatMap((o) => o.split(',')).map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0);
  const picked: DatabaseKind[] = [];
  for (const name of names) {
    const kind = DATABASE_KINDS.find((k) => k === name);
    if (kind === undefined) throw new UsageError(`--only takes ${DATABASE_KINDS.join(' or ')} (got "${name}")`);
    if (!picked.includes(kind)) picked.push(kind);
  }
  if (picked.length === 0) throw new UsageError('--only needs a database name');
  return DATABASE_KINDS.filter((k) => picked.includes(k));
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
