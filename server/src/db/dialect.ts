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
}

export const DIALECTS: Record<DialectName, DialectCapabilities> = {
  sqlite: { name: 'sqlite', returning: true, skipLocked: false, fullText: 'fts5', timestampType: 'text', jsonType: 'text' },
  postgres: { name: 'postgres', returning: true, skipLocked: true, fullText: 'tsvector', timestampType: 'timestamptz', jsonType: 'jsonb' },
};
