import { sql, type RawBuilder } from 'kysely';

/**
 * What each SQL dialect can do, named once here so the rest of the code asks for a capability
 * ("can I skip locked rows?") instead of checking which database it is talking to.
 */
export type DialectName = 'sqlite' | 'postgres';

export interface DialectCapabilities {
  readonly name: DialectName;
  /** `INSERT … RETURNING` (SQLite ≥ 3.35 and Postgres). */
  readonly returning: true;
  /** `SELECT … FOR UPDATE SKIP LOCKED` for job claiming across processes. */
  readonly skipLocked: boolean;
  /** Built-in full-text search engine. */
  readonly fullText: 'fts5' | 'tsvector';
  /** Column type used for timestamps; both are read back as ISO 8601 strings. */
  readonly timestampType: 'text' | 'timestamptz';
  /** Column type used for JSON documents. */
  readonly jsonType: 'text' | 'jsonb';
  /**
   * The UTC calendar day (`YYYY-MM-DD`) of a timestamp column, for grouping by day. Built from
   * literals only, so the same expression can appear in both `select` and `group by` on Postgres.
   */
  readonly utcDay: (column: string) => RawBuilder<string>;
}

export const DIALECTS: Record<DialectName, DialectCapabilities> = {
  sqlite: {
    name: 'sqlite', returning: true, skipLocked: false, fullText: 'fts5', timestampType: 'text', jsonType: 'text',
    // Timestamps are stored as ISO 8601 UTC text, so the day is its first ten characters.
    utcDay: (column) => sql<string>`substr(${sql.ref(column)}, 1, 10)`,
  },
  postgres: {
    name: 'postgres', returning: true, skipLocked: true, fullText: 'tsvector', timestampType: 'timestamptz', jsonType: 'jsonb',
    utcDay: (column) => sql<string>`to_char(${sql.ref(column)} at time zone 'UTC', 'YYYY-MM-DD')`,
  },
};
