import { parseArgs } from 'node:util';

export type DatabaseKind = 'sqlite' | 'postgres';
export const DATABASE_KINDS: readonly DatabaseKind[] = ['sqlite', 'postgres'];

export const DEFAULT_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** What one `npm run bench` does: flags win over BENCH_* environment variables, which win over defaults. */
export interface BenchOptions {
  readonly databases: readonly DatabaseKind[];
  /** Measured seconds per scenario. */
  readonly durationS: number;
  /** Unrecorded seconds of the same load before each measured run. */
  readonly warmupS: number;
  readonly connections: number;
  readonly pipelining: number;
  /** The Postgres database a throwaway schema is created in. */
  readonly postgresUrl: string;
  /** False with --no-write: print the table, leave RESULTS.md alone. */
  readonly write: boolean;
  readonly help: boolean;
}

export const USAGE = `usage: npm run bench [-- options]      (or: node --import tsx bench/run.ts [options] after npm run build)

options (environment variable in brackets; flags win):
  --only <sqlite|postgres>   run one database only; repeat or comma-separate for several (default: both)
  --duration <s>             measured seconds per scenario [BENCH_DURATION] (default 10)
  --warmup <s>               unrecorded warmup seconds before each measured run [BENCH_WARMUP] (default 2)
  --connections <n>          concurrent connections [BENCH_CONNECTIONS] (default 50)
  --pipelining <n>           requests in flight per connection [BENCH_PIPELINING] (default 1)
  --postgres-url <url>       where the throwaway schema is created [BENCH_POSTGRES_URL]
                             (default ${DEFAULT_POSTGRES_URL})
  --no-write                 print the results but do not append them to bench/RESULTS.md
  --help                     show this text`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Environment variables that change a run, in the order they are echoed back in the recorded command. */
export const BENCH_ENV_VARIABLES = ['BENCH_DURATION', 'BENCH_WARMUP', 'BENCH_CONNECTIONS', 'BENCH_PIPELINING', 'BENCH_POSTGRES_URL'] as const;

export function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
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
    databases: parseDatabases(values.only),
    durationS: number('duration', values.duration, 'BENCH_DURATION', 10, 1, 600),
    warmupS: number('warmup', values.warmup, 'BENCH_WARMUP', 2, 0, 600),
    connections: number('connections', values.connections, 'BENCH_CONNECTIONS', 50, 1, 10_000),
    pipelining: number('pipelining', values.pipelining, 'BENCH_PIPELINING', 1, 1, 100),
    postgresUrl: values['postgres-url'] ?? nonEmpty(env.BENCH_POSTGRES_URL) ?? DEFAULT_POSTGRES_URL,
    write: !values['no-write'],
    help: values.help,
  };
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
