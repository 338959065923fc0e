import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../../../db/database.js';
import type { DB } from '../../../db/schema.js';
import { collectionFilter, isInScope, lastPerChunk, PUT_BATCH, VectorModels, type Ranked, type SearchBackend, type UnitVectorRow } from './backend.js';
import { EXCERPT_WORDS } from './highlight.js';
import type { MissingVectorChunk, SearchScope } from './index.js';
import { fts5Query } from './query-terms.js';
import { dot, fromBytes, signBits, TopK, toBytes } from './vector-math.js';

/**
 * Candidates the coarse (sign-bit Hamming) scan hands to the exact rescoring, at least. The scan
 * costs about the same for any number of candidates; rescoring a few hundred vectors is well under a
 * millisecond. With fewer vectors than this in scope, the search is exact.
 */
const MIN_CANDIDATES = 400;
const CANDIDATES_PER_RESULT = 10;
/** How long a scope whose matches were mostly someone else's is searched with the owner join directly. */
const JOIN_FIRST_MS = 10 * 60_000;
const JOIN_FIRST_MAX_SCOPES = 10_000;

/**
 * SQLite: FTS5's BM25 for the lexical signal. For the vector signal, a plain table beside `chunks`
 * holds each chunk's unit vector (float32) and its sign bits, filed under a *part* — one small integer
 * per (model, user, collection) — so that the index a query scans, (part, bits), is narrow. A query
 * scans the sign bits of the parts in scope (sqlite-vec's `vec_distance_hamming`; the float vectors
 * are not read), rescores the nearest few hundred exactly (cosine = dot product) and keeps the best.
 * sqlite-vec's `vec0` tables were measured first and not used: with the published build (no SIMD) an
 * exact `vec0` KNN over 90k 384-d vectors took ~40 ms; a `bit[]` `vec0` KNN grows with k (~10 ms at
 * k = 100, ~19 ms at k = 200, against ~12 ms for this scan at any number of candidates); and each
 * `vec0` partition preallocates 1,024 vectors' worth of space, per user.
 *
 * Deleting a chunk deletes its vector (foreign key, on delete cascade); moving a chunk to another
 * collection or owner moves its vector to that part (trigger).
 */
export async function createSqliteBackend(database: Database): Promise<SearchBackend> {
  const { db } = database;
  await db.transaction().execute(async (trx) => {
    // Every statement is idempotent, and SQLite's write lock serializes two processes doing this.
    await sql`create table if not exists chunk_vector_models (model text primary key, dims integer not null)`.execute(trx);
    // collection_key: the collection id, '' for none (so the unique constraint sees it).
    await sql`create table if not exists chunk_vector_parts (
      id integer primary key,
      model text not null,
      user_id text not null,
      collection_key text not null,
      unique (model, user_id, collection_key)
    )`.execute(trx);
    await sql`create table if not exists chunk_vectors (
      seq integer primary key references chunks(seq) on delete cascade,
      part integer not null references chunk_vector_parts(id),
      bits blob not null,
      vector blob not null
    )`.execute(trx);
    await sql`create index if not exists chunk_vectors_scan_idx on chunk_vectors (part, bits)`.execute(trx);
    await sql`create trigger if not exists chunk_vectors_follow_chunk after update of user_id, collection_id on chunks begin
      insert or ignore into chunk_vector_parts (model, user_id, collection_key)
        select p.model, new.user_id, coalesce(new.collection_id, '') from chunk_vectors as v join chunk_vector_parts as p on p.id = v.part where v.seq = new.seq;
      update chunk_vectors set part = (
        select np.id from chunk_vector_parts as op join chunk_vector_parts as np
          on np.model = op.model and np.user_id = new.user_id and np.collection_key = coalesce(new.collection_id, '')
        where op.id = chunk_vectors.part)
      where seq = new.seq;
    end`.execute(trx);
    // Owner and collection of a chunk without reading its row (text and all): the lexical query
    // looks them up once per FTS5 match.
    await sql`create index if not exists chunks_search_owner_idx on chunks (seq, user_id, collection_id)`.execute(trx);
  });
  const models = new VectorModels(db);
  /** Scopes (user and collections) recently found to own few of their query's best matches → when. */
  const joinFirst = new Map<string, number>();

  return {
    vectorBackend: 'sqlite-vec',
    models,

    async lexical(scope: SearchScope, terms: readonly string[], limit: number): Promise<Ranked[]> {
      const match = fts5Query(terms);
      // On SQLite one person or team usually owns most chunks. The global best matches, ranked without
      // looking up each match's owner, then filtered, are then the same list for about half the cost
      // (any chunk of the user's that ranks higher is in the global list before it). When too few of
      // them are the user's, the owner join below gives the answer, and is used first for that scope
      // for a while.
      const key = `${scope.userId}\u0000${(scope.collectionIds ?? []).join(',')}`;
      const since = joinFirst.get(key);
      if (since === undefined || Date.now() - since > JOIN_FIRST_MS) {
        const global = limit * 2 + 20;
        const { rows } = await sql<{ seq: number; rank: number }>`
          select rowid as seq, bm25(chunks_fts) as rank from chunks_fts
          where chunks_fts match ${match} order by rank limit ${global}`.execute(db);
        const owners = rows.length === 0 ? [] : await db.selectFrom('chunks').select(['seq', 'user_id', 'collection_id']).where('seq', 'in', rows.map((r) => r.seq)).execute();
        const inScope = new Set(owners.filter((o) => isInScope(o, scope)).map((o) => Number(o.seq)));
        const mine = rows.filter((r) => inScope.has(r.seq));
        if (mine.length >= limit || rows.length < global) {
          joinFirst.delete(key);
          return mine.slice(0, limit).map((r) => ({ seq: r.seq, score: -r.rank }));
        }
        if (joinFirst.size >= JOIN_FIRST_MAX_SCOPES) joinFirst.clear();
        joinFirst.set(key, Date.now());
      }
      // FTS5's bm25() is lower = better. CROSS JOIN keeps FTS5 as the outer loop; INDEXED BY makes
      // the owner check read the narrow index rather than the chunk row (SQLite prefers the rowid).
      const { rows } = await sql<{ seq: number; rank: number }>`
        select f.rowid as seq, bm25(chunks_fts) as rank
        from chunks_fts as f cross join chunks as c indexed by chunks_search_owner_idx on c.seq = f.rowid
        where chunks_fts match ${match} and c.user_id = ${scope.userId}${collectionFilter('c.collection_id', scope)}
        order by rank limit ${limit}`.execute(db);
      return rows.map((r) => ({ seq: r.seq, score: -r.rank }));
    },

    async excerpts(terms: readonly string[], seqs: readonly number[]): Promise<Map<number, string>> {
      const out = new Map<number, string>();
      const match = fts5Query(terms);
      // One lookup per chunk, so FTS5 seeks to the rowid instead of walking every match. The cast
      // matters: better-sqlite3 binds a JS number as a REAL, and FTS5 only seeks to an INTEGER rowid.
      for (const seq of seqs) {
        const { rows } = await sql<{ s: string | null }>`
          select snippet(chunks_fts, 1, char(1), char(2), '…', ${sql.lit(EXCERPT_WORDS)}) as s
          from chunks_fts where chunks_fts match ${match} and rowid = cast(${seq} as integer)`.execute(db);
        if (rows[0]?.s != null) out.set(seq, rows[0].s);
      }
      return out;
    },

    async vector(scope: SearchScope, model: string, unit: Float32Array, limit: number): Promise<Ranked[]> {
      const { rows: parts } = await sql<{ id: number }>`
        select id from chunk_vector_parts where model = ${model} and user_id = ${scope.userId}${collectionFilter('collection_key', scope)}`.execute(db);
      if (parts.length === 0) return [];
      const candidates = Math.max(limit * CANDIDATES_PER_RESULT, MIN_CANDIDATES);
      const { rows } = await sql<{ seq: number; vector: Uint8Array }>`
        select v.seq, v.vector from chunk_vectors as v where v.seq in (
          select seq from chunk_vectors indexed by chunk_vectors_scan_idx
          where part in (${sql.join(parts.map((p) => sql.lit(p.id)))})
          order by vec_distance_hamming(vec_bit(bits), vec_bit(${signBits(unit)}))
          limit ${candidates})`.execute(db);
      const top = new TopK<number>(limit);
      for (const row of rows) top.push(dot(fromBytes(row.vector), unit), row.seq);
      return top.sorted().map(({ score, item }) => ({ seq: item, score }));
    },

    async putVectors(executor: Kysely<DB> | Transaction<DB>, model: string, rows: readonly UnitVectorRow[]): Promise<void> {
      const unique = lastPerChunk(rows);
      for (let i = 0; i < unique.length; i += PUT_BATCH) {
        const batch = unique.slice(i, i + PUT_BATCH);
        // The part (and so owner and collection) comes from the chunk itself; a row naming another id
        // or owner than the chunk has is not stored.
        const keys = batch.map((r) => sql`(${r.seq}, ${r.chunkId}, ${r.userId})`);
        await sql`with v (seq, id, user_id) as (values ${sql.join(keys)})
          insert or ignore into chunk_vector_parts (model, user_id, collection_key)
          select distinct ${model}, c.user_id, coalesce(c.collection_id, '')
          from v join chunks as c on c.seq = v.seq and c.id = v.id and c.user_id = v.user_id`.execute(executor);
        const values = batch.map((r) => sql`(${r.seq}, ${r.chunkId}, ${r.userId}, ${signBits(r.unit)}, ${toBytes(r.unit)})`);
        await sql`with v (seq, id, user_id, bits, vector) as (values ${sql.join(values)})
          insert or replace into chunk_vectors (seq, part, bits, vector)
          select c.seq, p.id, v.bits, v.vector
          from v join chunks as c on c.seq = v.seq and c.id = v.id and c.user_id = v.user_id
          join chunk_vector_parts as p on p.model = ${model} and p.user_id = c.user_id and p.collection_key = coalesce(c.collection_id, '')`.execute(executor);
      }
    },

    async dropVectorsExcept(model: string): Promise<void> {
      await db.transaction().execute(async (trx) => {
        await sql`delete from chunk_vectors where part in (select id from chunk_vector_parts where model <> ${model})`.execute(trx);
        await sql`delete from chunk_vector_parts where model <> ${model}`.execute(trx);
      });
      await models.dropExcept(model);
    },

    async chunksMissingVectors(model: string, limit: number): Promise<MissingVectorChunk[]> {
      const { rows } = await sql<MissingVectorChunk>`
        select c.seq, c.id, c.user_id, c.collection_id, c.document_id, c.text from chunks as c
        where not exists (select 1 from chunk_vectors as v join chunk_vector_parts as p on p.id = v.part where v.seq = c.seq and p.model = ${model})
        order by c.seq limit ${limit}`.execute(db);
      return rows;
    },
  };
}
