import type { Kysely, Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../../../db/database.js';
import type { DB } from '../../../db/schema.js';
import { isInScope, type Ranked, type SearchBackend } from './backend.js';
import { highlightText, markedToHtml } from './highlight.js';
import { createPostgresBackend } from './postgres-backend.js';
import { queryTerms } from './query-terms.js';
import { createSqliteBackend } from './sqlite-backend.js';
import { normalize } from './vector-math.js';

/** Whose chunks a search may return: always one user's; `collectionIds` (when non-empty) narrows to those collections. */
export interface SearchScope {
  userId: string;
  collectionIds?: readonly string[];
}

export interface SearchHit {
  chunk_id: string;
  document_id: string;
  filename: string;
  heading: string | null;
  text: string;
  /** A short excerpt, HTML-escaped, with the query's words between `<mark>` and `</mark>`. */
  highlight: string;
  /** The mode's score, higher = better: −BM25 (SQLite) or ts_rank_cd (Postgres); cosine similarity; RRF. */
  score: number;
  /** Each signal's score, where that signal found the chunk. */
  scores: { lexical?: number; vector?: number };
}

export type SearchMode = 'lexical' | 'vector' | 'hybrid';

export interface VectorRow {
  chunkSeq: number;
  chunkId: string;
  userId: string;
  collectionId: string | null;
  vector: Float32Array;
}

export type VectorBackend = 'sqlite-vec' | 'pgvector' | 'exact';

export interface MissingVectorChunk {
  seq: number;
  id: string;
  user_id: string;
  collection_id: string | null;
  document_id: string;
  heading: string | null;
  text: string;
}

export interface KnowledgeIndex {
  readonly vectorBackend: VectorBackend;
  /**
   * The query's words (never its syntax: quotes, operators and the like are punctuation), OR-ed and
   * ranked by BM25 (SQLite) or ts_rank_cd (Postgres). No searchable words (only stopwords or
   * punctuation) → no hits. Limits are cut to 0…1000.
   */
  lexical(scope: SearchScope, query: string, limit: number): Promise<SearchHit[]>;
  /**
   * Nearest chunks by cosine similarity among the vectors stored under `query.model` (none → no hits).
   * Throws when the query vector's dimension differs from those vectors'.
   */
  vector(scope: SearchScope, query: { model: string; vector: Float32Array }, limit: number): Promise<SearchHit[]>;
  /**
   * Reciprocal rank fusion (k = 60) of the lexical and vector candidate lists (each max(limit × 4, 50)
   * long); either list may be empty (no searchable words, no vectors of the model).
   */
  hybrid(scope: SearchScope, query: string, queryVector: { model: string; vector: Float32Array }, limit: number): Promise<SearchHit[]>;
  /**
   * Stores vectors for chunks under `model` (idempotent: re-putting a chunk replaces its vector, whatever
   * model made the old one). `db` may be a transaction. The owner and collection stored with a vector are
   * the chunk's own; a row whose chunk does not exist, or whose chunk has another id or owner, is skipped.
   * All rows of a model must have one dimension.
   */
  putVectors(db: Kysely<DB> | Transaction<DB>, model: string, rows: readonly VectorRow[]): Promise<void>;
  /** Drops every stored vector not made by `model` (after a model change finished re-embedding). */
  dropVectorsExcept(model: string): Promise<void>;
  /** Chunks (of any user) with no vector under `model`, oldest first, for the background re-embed. */
  chunksMissingVectors(model: string, limit: number): Promise<MissingVectorChunk[]>;
}

/** Reciprocal rank fusion's constant: a chunk ranked r-th (from 1) in a list scores 1 / (60 + r). */
export const RRF_K = 60;
/** Larger limits are cut to this. */
export const MAX_LIMIT = 1000;

/**
 * The knowledge base's search index on `database`: lexical (FTS5 BM25 / tsvector), vector (see
 * sqlite-backend.ts and postgres-backend.ts) and hybrid search over `chunks`, every query confined
 * to one user's chunks in SQL and checked against `chunks` again before a hit is returned. Creates
 * the vector tables it needs on first use of a database (after migrations); safe to run from several
 * processes at once.
 */
export async function createKnowledgeIndex(database: Database, logger: Logger): Promise<KnowledgeIndex> {
  const backend: SearchBackend = database.dialect.fullText === 'fts5'
    ? await createSqliteBackend(database)
    : await createPostgresBackend(database, logger);
  const { db } = database;

  /** The chunks behind `seqs` that are still the user's (and in scope), as hits in the given order. */
  async function hits(scope: SearchScope, terms: readonly string[], found: readonly Found[]): Promise<SearchHit[]> {
    if (found.length === 0) return [];
    // Looked up by key only, and the owner and collections checked here: a filter on user_id in SQL
    // tempts SQLite into scanning the user's index instead of fetching a few rows by key.
    const query = db
      .selectFrom('chunks as c')
      .innerJoin('documents as d', 'd.id', 'c.document_id')
      .select(['c.seq', 'c.id', 'c.user_id', 'c.collection_id', 'c.document_id', 'd.filename', 'c.heading', 'c.text'])
      .where('c.seq', 'in', found.map((f) => f.seq));
    const lexicalSeqs = terms.length === 0 ? [] : found.filter((f) => f.scores.lexical !== undefined).map((f) => f.seq);
    const [rows, excerpts] = await Promise.all([query.execute(), backend.excerpts(terms, lexicalSeqs)]);
    const bySeq = new Map(rows.filter((r) => isInScope(r, scope)).map((r) => [Number(r.seq), r]));
    const out: SearchHit[] = [];
    for (const f of found) {
      const row = bySeq.get(f.seq);
      if (!row) continue;
      const excerpt = excerpts.get(f.seq);
      out.push({
        chunk_id: row.id,
        document_id: row.document_id,
        filename: row.filename,
        heading: row.heading,
        text: row.text,
        highlight: excerpt !== undefined ? markedToHtml(excerpt) : highlightText(row.text, terms),
        score: f.score,
        scores: f.scores,
      });
    }
    return out;
  }

  /** The query vector at unit length, or undefined when no vectors of its model are stored. */
  async function unitQuery(query: { model: string; vector: Float32Array }): Promise<Float32Array | undefined> {
    if (query.vector.length === 0) throw new Error('query vector is empty');
    return (await backend.models.check(query.model, query.vector.length)) ? normalize(query.vector) : undefined;
  }

  return {
    vectorBackend: backend.vectorBackend,

    async lexical(scope, query, limit) {
      const n = clampLimit(limit);
      const terms = queryTerms(query);
      if (n === 0 || terms.length === 0) return [];
      const ranked = await backend.lexical(scope, terms, n);
      return hits(scope, terms, ranked.map((r) => ({ seq: r.seq, score: r.score, scores: { lexical: r.score } })));
    },

    async vector(scope, query, limit) {
      const n = clampLimit(limit);
      const unit = await unitQuery(query);
      if (n === 0 || unit === undefined) return [];
      const ranked = await backend.vector(scope, query.model, unit, n);
      return hits(scope, [], ranked.map((r) => ({ seq: r.seq, score: r.score, scores: { vector: r.score } })));
    },

    async hybrid(scope, query, queryVector, limit) {
      const n = clampLimit(limit);
      const terms = queryTerms(query);
      const unit = await unitQuery(queryVector);
      if (n === 0) return [];
      const pool = Math.max(n * 4, 50);
      const [lexical, vector] = await Promise.all([
        terms.length > 0 ? backend.lexical(scope, terms, pool) : Promise.resolve([]),
        unit !== undefined ? backend.vector(scope, queryVector.model, unit, pool) : Promise.resolve([]),
      ]);
      return hits(scope, terms, fuse(lexical, vector).slice(0, n));
    },

    async putVectors(executor, model, rows) {
      if (rows.length === 0) return;
      const dims = rows[0]!.vector.length;
      if (dims === 0 || rows.some((r) => r.vector.length !== dims)) throw new Error('putVectors: every vector of one call must have the same, non-zero dimension');
      await backend.models.register(executor, model, dims);
      await backend.putVectors(executor, model, rows.map((r) => ({ seq: r.chunkSeq, chunkId: r.chunkId, userId: r.userId, unit: normalize(r.vector) })));
    },

    dropVectorsExcept: (model) => backend.dropVectorsExcept(model),

    chunksMissingVectors: (model, limit) => backend.chunksMissingVectors(model, Math.max(0, Math.floor(limit) || 0)),
  };
}

interface Found {
  seq: number;
  score: number;
  scores: { lexical?: number; vector?: number };
}

/** Reciprocal rank fusion of two best-first lists; each chunk keeps the signal scores it had. */
export function fuse(lexical: readonly Ranked[], vector: readonly Ranked[]): Found[] {
  const bySeq = new Map<number, Found>();
  const add = (list: readonly Ranked[], signal: 'lexical' | 'vector') => {
    list.forEach((r, i) => {
      let f = bySeq.get(r.seq);
      if (!f) bySeq.set(r.seq, (f = { seq: r.seq, score: 0, scores: {} }));
      f.score += 1 / (RRF_K + i + 1);
      f.scores[signal] = r.score;
    });
  };
  add(lexical, 'lexical');
  add(vector, 'vector');
  return [...bySeq.values()].sort((a, b) => b.score - a.score || a.seq - b.seq);
}

function clampLimit(limit: number): number {
  return Number.isFinite(limit) ? Math.min(MAX_LIMIT, Math.max(0, Math.floor(limit))) : 0;
}
