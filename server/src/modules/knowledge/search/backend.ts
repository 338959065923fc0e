import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import type { DB } from '../../../db/schema.js';
import type { MissingVectorChunk, SearchScope, VectorBackend } from './index.js';

/** A chunk (by `chunks.seq`) with one signal's score, higher = better. */
export interface Ranked {
  readonly seq: number;
  readonly score: number;
}

/** A vector ready to store: unit length, owner and chunk id as the caller gave them (checked against `chunks`). */
export interface UnitVectorRow {
  readonly seq: number;
  readonly chunkId: string;
  readonly userId: string;
  readonly unit: Float32Array;
}

/** What one database does for the search index; index.ts fuses, hydrates and highlights. */
export interface SearchBackend {
  readonly vectorBackend: VectorBackend;
  readonly models: VectorModels;
  /** The user's chunks matching any of `terms`, best first. */
  lexical(scope: SearchScope, terms: readonly string[], limit: number): Promise<Ranked[]>;
  /** Excerpts of the given chunks with the terms' matches between MARK_START and MARK_END (highlight.ts). */
  excerpts(terms: readonly string[], seqs: readonly number[]): Promise<Map<number, string>>;
  /** The user's chunks nearest to `unit` under `model`, by cosine similarity, best first. */
  vector(scope: SearchScope, model: string, unit: Float32Array, limit: number): Promise<Ranked[]>;
  /** Upserts; rows whose chunk does not exist (or has another id or owner) are skipped. */
  putVectors(db: Kysely<DB> | Transaction<DB>, model: string, rows: readonly UnitVectorRow[]): Promise<void>;
  dropVectorsExcept(model: string): Promise<void>;
  chunksMissingVectors(model: string, limit: number): Promise<MissingVectorChunk[]>;
}

/** `and <column> in (…)` when the scope names collections; nothing when it does not. */
export function collectionFilter(column: string, scope: SearchScope): RawBuilder<unknown> {
  const ids = scope.collectionIds ?? [];
  return ids.length === 0 ? sql`` : sql` and ${sql.ref(column)} in (${sql.join(ids)})`;
}

/** Whether a chunk with this owner and collection may be returned for `scope`. */
export function isInScope(chunk: { user_id: string; collection_id: string | null }, scope: SearchScope): boolean {
  const ids = scope.collectionIds ?? [];
  return chunk.user_id === scope.userId && (ids.length === 0 || (chunk.collection_id !== null && ids.includes(chunk.collection_id)));
}

/** Rows per INSERT when storing vectors (well under both dialects' bound-parameter limits). */
export const PUT_BATCH = 500;

/** The last row per chunk wins, as if the rows had been put one after another. */
export function lastPerChunk(rows: readonly UnitVectorRow[]): UnitVectorRow[] {
  const bySeq = new Map<number, UnitVectorRow>();
  for (const row of rows) bySeq.set(row.seq, row);
  return [...bySeq.values()];
}

/**
 * Which embedding model made the stored vectors, and their dimension: `chunk_vector_models`, created
 * by each backend's setup. A query vector of another dimension is a configuration error, reported as
 * such instead of as a distance function failing.
 */
export class VectorModels {
  private readonly known = new Map<string, number>();
  constructor(private readonly db: Kysely<DB>) {}

  /** The dimension of `model`'s stored vectors, or undefined when none were ever stored. */
  async dims(model: string, fresh = false): Promise<number | undefined> {
    const cached = this.known.get(model);
    if (cached !== undefined && !fresh) return cached;
    const { rows } = await sql<{ dims: number }>`select dims from chunk_vector_models where model = ${model}`.execute(this.db);
    const dims = rows[0] === undefined ? undefined : Number(rows[0].dims);
    if (dims === undefined) this.known.delete(model);
    else this.known.set(model, dims);
    return dims;
  }

  /** Throws when `dims` differs from what `model` was stored with. Runs on `db` (the caller's transaction). */
  async register(db: Kysely<DB> | Transaction<DB>, model: string, dims: number): Promise<void> {
    if (this.known.get(model) === dims) return;
    await sql`insert into chunk_vector_models (model, dims) values (${model}, ${dims}) on conflict (model) do nothing`.execute(db);
    const { rows } = await sql<{ dims: number }>`select dims from chunk_vector_models where model = ${model}`.execute(db);
    const stored = Number(rows[0]?.dims);
    if (stored !== dims) throw new Error(`vectors of model "${model}" are stored with ${stored} dimensions, not ${dims}: use another model name for another dimension`);
    this.known.set(model, dims);
  }

  /** Throws when a query vector's dimension differs from the stored vectors'; false when `model` has none. */
  async check(model: string, dims: number): Promise<boolean> {
    let stored = await this.dims(model);
    if (stored !== undefined && stored !== dims) stored = await this.dims(model, true);
    if (stored === undefined) return false;
    if (stored !== dims) throw new Error(`query vector has ${dims} dimensions; vectors of model "${model}" have ${stored}`);
    return true;
  }

  async dropExcept(model: string): Promise<void> {
    await sql`delete from chunk_vector_models where model <> ${model}`.execute(this.db);
    for (const name of this.known.keys()) if (name !== model) this.known.delete(name);
  }
}
