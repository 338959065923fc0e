import { mkdirSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import * as sqliteVec from 'sqlite-vec';
import type { DatabaseConfig } from '../config.js';
import { DIALECTS, type DialectCapabilities } from './dialect.js';
import type { DB } from './schema.js';

/** A connected database: the typed query builder, what its dialect can do, and its lifecycle. */
export interface Database {
  readonly db: Kysely<DB>;
  readonly dialect: DialectCapabilities;
  /** Resolves when the database answers a trivial query within `timeoutMs`. */
  ping(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Opens SQLite (WAL, busy_timeout, foreign keys) or a Postgres pool, per configuration. */
export function openDatabase(config: DatabaseConfig, logger: Logger): Database {
  return config.kind === 'postgres' ? openPostgres(config, logger) : openSqlite(config);
}

function openSqlite(config: DatabaseConfig): Database {
  if (config.url !== ':memory:') mkdirSync(path.dirname(config.url), { recursive: true });
  const sqlite = new BetterSqlite3(config.url, { timeout: config.connectTimeoutMs });
  // Set once at connect: WAL lets readers run beside the writer; busy_timeout makes a second writer
  // wait instead of failing; foreign keys are off by default in SQLite.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma(`busy_timeout = ${Math.trunc(config.connectTimeoutMs)}`);
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('synchronous = NORMAL');
  // sqlite-vec's SQL functions (vector distances) back the knowledge base's vector search
  // (modules/knowledge/search); a platform without its prebuilt binary cannot run Keel on SQLite.
  try {
    sqliteVec.load(sqlite);
  } catch (err) {
    sqlite.close();
    throw new Error(`could not load the sqlite-vec extension (${(err as Error).message})`, { cause: err });
  }
  const db = new Kysely<DB>({ dialect: new SqliteDialect({ database: sqlite }) });
  return {
    db,
    dialect: DIALECTS.sqlite,
    ping: (timeoutMs) => withTimeout(sql`select 1`.execute(db).then(() => undefined), timeoutMs),
    close: () => db.destroy(),
  };
}

// Postgres answers timestamps as Date, bigint as string and JSON parsed by default; Keel's rows carry
// ISO strings, numbers and JSON text on both dialects, so the parsers are set per pool (not globally, which would leak into
// any other pg user in the process).
const PG_TIMESTAMPTZ = 1184;
const PG_TIMESTAMP = 1114;
const PG_INT8 = 20;
const PG_NUMERIC = 1700;
const PG_JSON = 114;
const PG_JSONB = 3802;
/** `2026-11-22 01:02:03.45+00` (Postgres text format) → `2026-11-22T01:02:03.450Z`. */
export function pgTimestampToIso(value: string, withZone: boolean): string {
  if (!/^\d{4}-/.test(value)) return value; // 'infinity', '-infinity'
  const iso = value.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00');
  return new Date(withZone ? iso : `${iso}Z`).toISOString();
}

const pgTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
    if (oid === PG_TIMESTAMPTZ || oid === PG_TIMESTAMP) return (v: string) => pgTimestampToIso(v, oid === PG_TIMESTAMPTZ);
    if (oid === PG_INT8 || oid === PG_NUMERIC) return (v: string) => Number(v);
    // JSON columns are text on SQLite; hand Postgres's back as the same text, so code parses once.
    if (oid === PG_JSON || oid === PG_JSONB) return (v: string) => v;
    return pg.types.getTypeParser(oid, format) as (value: string) => unknown;
  },
};

function openPostgres(config: DatabaseConfig, logger: Logger): Database {
  const pool = new pg.Pool({
    connectionString: config.url,
    max: config.poolMax,
    connectionTimeoutMillis: config.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    types: pgTypes,
    ...(config.schema ? { options: `-c search_path=${quoteIdent(config.schema)}` } : {}),
  });
  // An idle client whose server went away emits 'error' on the pool; unhandled, it would crash the
  // process. The pool drops that client and makes a new one on the next query, which is how Keel
  // recovers by itself when the database returns.
  pool.on('error', (err) => logger.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'postgres connection lost'));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    dialect: DIALECTS.postgres,
    ping: (timeoutMs) => withTimeout(sql`select 1`.execute(db).then(() => undefined), timeoutMs),
    close: () => db.destroy(),
  };
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`database did not answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
