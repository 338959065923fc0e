import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../../../db/database.js';
import type { DB } from '../../../db/schema.js';
import { collectionFilter, isInScope, lastPerChunk, PUT_BATCH, VectorModels, type Ranked, type SearchBackend, type UnitVectorRow } from './backend.js';
import { EXCERPT_WORDS } from './highlight.js';
import type { MissingVectorChunk, SearchScope } from './index.js';
import { fts5Query } from './query-terms.js';
import { nearestByHamming, packPart, packQuery, SignBitCache, type PackedPart } from './sign-bit-cache.js';
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
/** Parts found too large for the sign-bit cache's budget (scanned in SQL instead) remembered at most. */
const OVERSIZE_MAX_PARTS = 10_000;
/**
 * Rows per query when loading a part into the sign-bit cache (~20 ms each). A part that fits in one
 * page is loaded by the query that needs it; a larger one (~200 ms per 100k vectors) page by page in
 * the background, other queries running in between, while queries scan it in SQL.
 */
const LOAD_PAGE_ROWS = 10_000;
/** A part's background load starts again no sooner than this many times its last one took after that one started. */
const LOAD_SPACING = 4;

export interface SqliteBackendOptions {
  /** Memory budget of the in-process sign-bit cache (sign-bit-cache.ts), in bytes; 256 MiB by default. */
  readonly vectorCacheBytes?: number;
  /** Rows per query when loading a part into the cache (tests make it small). */
  readonly vectorCacheLoadPageRows?: number;
}

export interface SqliteSearchBackend extends SearchBackend {
  readonly signBitCache: SignBitCache;
  /** Resolves when no part is being loaded into the cache in the background. */
  signBitCacheIdle(): Promise<void>;
}

/**
 * SQLite: FTS5's BM25 for the lexical signal. For the vector signal, a plain table beside `chunks`
 * holds each chunk's unit vector (float32) and its sign bits, filed under a *part* — one small integer
 * per (model, user, collection) — so that the index a query scans, (part, bits), is narrow. A query
 * scans the sign bits of the parts in scope, rescores the nearest few hundred exactly (cosine = dot
 * product, their float vectors read by key) and keeps the best. The scan runs in JS over an in-process
 * copy of the parts' sign bits (sign-bit-cache.ts: ~2 ms per 100k vectors, against ~15 ms in SQL),
 * kept current by each part's `version`, which triggers on `chunk_vectors` bump in the same transaction
 * as any write to the part's vectors (whoever makes it: this process, another one, a foreign-key
 * cascade), and read with the list of parts at each query. A part is scanned in SQL instead (sqlite-vec's
 * `vec_distance_hamming`, ~15 ms per 100k vectors, as everything was before the cache) while it is
 * being loaded in the background after a change (when larger than one load page), or when it is
 * larger than the cache's whole memory budget.
 * sqlite-vec's `vec0` tables were measured first and not used: with the published build (no SIMD) an
 * exact `vec0` KNN over 90k 384-d vectors took ~40 ms; a `bit[]` `vec0` KNN grows with k (~10 ms at
 * k = 100, ~19 ms at k = 200, against ~12 ms for the SQL sign-bit scan at any number of candidates); and each
 * `vec0` partition preallocates 1,024 vectors' worth of space, per user.
 *
 * Deleting a chunk deletes its vector (foreign key, on delete cascade); moving a chunk to another
 * collection or owner moves its vector to that part (trigger).
 */
export async function createSqliteBackend(database: Database, options: SqliteBackendOptions = {}): Promise<SqliteSearchBackend> {
  const { db } = database;
  // Another process doing the same at the same time can make a step fail (a stale read snapshot); the
  // next attempt finds its work done.
  for (let attempt = 1; ; attempt++) {
    try {
      await setUp(db);
      break;
    } catch (err) {
      if (attempt >= 3) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
  const models = new VectorModels(db);
  /** Scopes (user and collections) recently found to own few of their query's best matches → when. */
  const joinFirst = new Map<string, number>();
  const cache = new SignBitCache(options.vectorCacheBytes);
  /** Parts too large for the cache → the version they had then (scanned in SQL until it changes). */
  const oversize = new Map<number, number>();

  const pageRows = Math.max(1, options.vectorCacheLoadPageRows ?? LOAD_PAGE_ROWS);
  /** Background loads in flight, by part. */
  const loading = new Map<number, Promise<void>>();
  /** Part → when its last background load started and how long it took. */
  const lastLoad = new Map<number, { start: number; ms: number }>();

  /** One page of part `id`'s sign bits, in index order, after (bits, seq) `after`. */
  async function loadPage(id: number, after: { seq: number; bits: Uint8Array } | undefined): Promise<Array<{ seq: number; bits: Uint8Array }>> {
    const from = after === undefined ? sql`` : sql` and (bits, seq) > (${after.bits}, ${sql.lit(after.seq)})`;
    const { rows } = await sql<{ seq: number; bits: Uint8Array }>`
      select seq, bits from chunk_vectors indexed by chunk_vectors_scan_idx where part = ${sql.lit(id)}${from}
      order by bits, seq limit ${sql.lit(pageRows)}`.execute(db);
    return rows;
  }

  /** Caches part `id` as loaded under `version` (read before any of its rows), unless it is too large. */
  function keep(id: number, version: number, part: PackedPart): void {
    if (cache.set(id, version, part)) {
      oversize.delete(id);
      return;
    }
    if (oversize.size >= OVERSIZE_MAX_PARTS) oversize.clear();
    oversize.set(id, version);
  }

  /**
   * Part `id` at `version` for scanning in JS, or undefined when it is scanned in SQL this time (too
   * large for the cache, or being loaded in the background). A write to the part during its load moves
   * its version, so the load is cached under a version that is already stale, and never used.
   */
  async function partForScan(id: number, version: number, bytes: number): Promise<PackedPart | undefined> {
    if (oversize.get(id) === version || loading.has(id)) return undefined;
    const last = lastLoad.get(id);
    if (last !== undefined && Date.now() - last.start < last.ms * LOAD_SPACING) return undefined;
    const first = await loadPage(id, undefined);
    if (first.length < pageRows) {
      const part = packPart(first, bytes);
      keep(id, version, part);
      return part;
    }
    const start = Date.now();
    const load = (async () => {
      const rows = first;
      for (let page = first; page.length === pageRows;) {
        page = await loadPage(id, page[page.length - 1]);
        for (const row of page) rows.push(row);
      }
      keep(id, version, packPart(rows, bytes));
    })().catch(() => {
      // A failed load (the database closing, say) leaves the part to SQL; the next query retries.
    }).finally(() => {
      loading.delete(id);
      if (lastLoad.size >= OVERSIZE_MAX_PARTS) lastLoad.clear();
      lastLoad.set(id, { start, ms: Date.now() - start });
    });
    loading.set(id, load);
    return undefined;
  }

  /** Seqs of the `count` vectors of `partIds` nearest to `bits` by Hamming distance, scanned in SQL. */
  async function scanInSql(partIds: readonly number[], bits: Uint8Array, count: number): Promise<number[]> {
    const { rows } = await sql<{ seq: number }>`
      select seq from chunk_vectors indexed by chunk_vectors_scan_idx
      where part in (${sql.join(partIds.map((id) => sql.lit(id)))})
      order by vec_distance_hamming(vec_bit(bits), vec_bit(${bits}))
      limit ${count}`.execute(db);
    return rows.map((r) => r.seq);
  }

  return {
    vectorBackend: 'sqlite-vec',
    models,
    signBitCache: cache,
    signBitCacheIdle: async () => {
      while (loading.size > 0) await Promise.all(loading.values());
    },

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
      // The versions are read before any part's bits: a part loaded after a concurrent write is at
      // least as new as the version it is cached under (at worst reloaded once more, never stale).
      const { rows: parts } = await sql<{ id: number; version: number }>`
        select id, version from chunk_vector_parts where model = ${model} and user_id = ${scope.userId}${collectionFilter('collection_key', scope)}`.execute(db);
      if (parts.length === 0) return [];
      const candidates = Math.max(limit * CANDIDATES_PER_RESULT, MIN_CANDIDATES);
      const bits = signBits(unit);
      const query = packQuery(bits);
      const packed: PackedPart[] = [];
      const inSql: number[] = [];
      for (const { id, version } of parts) {
        let part = cache.get(id, version);
        if (part !== undefined && part.words !== query.length) part = undefined;
        part ??= await partForScan(id, version, bits.length);
        if (part === undefined) inSql.push(id);
        else packed.push(part);
      }
      const seqs = nearestByHamming(packed, query, candidates);
      if (inSql.length > 0) seqs.push(...await scanInSql(inSql, bits, candidates));
      if (seqs.length === 0) return [];
      // Read by key (the seqs as one JSON array: json_each's values are integers, where a bound JS
      // number would be a REAL), and `+part` so that the part check cannot tempt SQLite into scanning
      // the parts' index instead (~30 ms at 100k vectors, against ~3 ms for 500 rows by key).
      const { rows } = await sql<{ seq: number; vector: Uint8Array }>`
        select seq, vector from chunk_vectors
        where seq in (select value from json_each(${JSON.stringify(seqs)})) and +part in (${sql.join(parts.map((p) => sql.lit(p.id)))})`.execute(db);
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
        // An upsert, not INSERT OR REPLACE: a replacement's delete fires no trigger, so the old part's
        // version would not move. (`where true`: SQLite's parser needs it before ON CONFLICT.)
        await sql`with v (seq, id, user_id, bits, vector) as (values ${sql.join(values)})
          insert into chunk_vectors (seq, part, bits, vector)
          select c.seq, p.id, v.bits, v.vector
          from v join chunks as c on c.seq = v.seq and c.id = v.id and c.user_id = v.user_id
          join chunk_vector_parts as p on p.model = ${model} and p.user_id = c.user_id and p.collection_key = coalesce(c.collection_id, '')
          where true
          on conflict (seq) do update set part = excluded.part, bits = excluded.bits, vector = excluded.vector`.execute(executor);
      }
    },

    async dropVectorsExcept(model: string): Promise<void> {
      await db.transaction().execute(async (trx) => {
        await sql`delete from chunk_vectors where part in (select id from chunk_vector_parts where model <> ${model})`.execute(trx);
        await sql`delete from chunk_vector_parts where model <> ${model}`.execute(trx);
      });
      cache.clear();
      oversize.clear();
      lastLoad.clear();
      await models.dropExcept(model);
    },

    async chunksMissingVectors(model: string, limit: number): Promise<MissingVectorChunk[]> {
      const { rows } = await sql<MissingVectorChunk>`
        select c.seq, c.id, c.user_id, c.collection_id, c.document_id, c.heading, c.text from chunks as c
        where not exists (select 1 from chunk_vectors as v join chunk_vector_parts as p on p.id = v.part where v.seq = c.seq and p.model = ${model})
        order by c.seq limit ${limit}`.execute(db);
      return rows;
    },
  };
}

/** Creates the vector tables, indexes and triggers where missing. */
async function setUp(db: Kysely<DB>): Promise<void> {
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
    // Each part's version moves with every write to its vectors, in the same transaction (the sign-bit
    // cache's check). A new part starts at a random version, so a part id reused after its part was
    // dropped is not mistaken for the dropped one.
    const partColumns = await sql<{ name: string }>`select name from pragma_table_info('chunk_vector_parts')`.execute(trx);
    if (!partColumns.rows.some((c) => c.name === 'version')) {
      await sql`alter table chunk_vector_parts add column version integer not null default 0`.execute(trx);
    }
    await sql`create trigger if not exists chunk_vector_parts_version_start after insert on chunk_vector_parts begin
      update chunk_vector_parts set version = random() >> 12 where id = new.id;
    end`.execute(trx);
    await sql`create trigger if not exists chunk_vectors_version_insert after insert on chunk_vectors begin
      update chunk_vector_parts set version = version + 1 where id = new.part;
    end`.execute(trx);
    await sql`create trigger if not exists chunk_vectors_version_update after update on chunk_vectors begin
      update chunk_vector_parts set version = version + 1 where id in (old.part, new.part);
    end`.execute(trx);
    await sql`create trigger if not exists chunk_vectors_version_delete after delete on chunk_vectors begin
      update chunk_vector_parts set version = version + 1 where id = old.part;
    end`.execute(trx);
  });
}
