import { createHash } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../../../db/database.js';
import type { DB } from '../../../db/schema.js';
import { collectionFilter, lastPerChunk, PUT_BATCH, VectorModels, type Ranked, type SearchBackend, type UnitVectorRow } from './backend.js';
import { EXCERPT_WORDS, MARK_END, MARK_START } from './highlight.js';
import type { MissingVectorChunk, SearchScope, VectorBackend } from './index.js';
import { tsQuery } from './query-terms.js';
import { dot, fromBytes, TopK, toBytes } from './vector-math.js';

/** Rows fetched per round trip by the exact scan: bounds memory however many vectors a user has. */
const SCAN_PAGE = 2048;
const HEADLINE_OPTIONS = `StartSel=${MARK_START}, StopSel=${MARK_END}, MaxWords=${EXCERPT_WORDS}, MinWords=12, ShortWord=2`;

/**
 * Postgres: the generated `tsv` column (GIN) ranked by `ts_rank_cd` for the lexical signal. Vectors:
 * with the pgvector extension, a `vector` column and one HNSW index (cosine) per embedding model;
 * without it, `chunk_vectors` holds unit vectors as float32 bytes and a query reads the user's
 * vectors in pages and scores them here (measured faster than a dot product in SQL over `real[]`:
 * ~0.6 s against ~2.4 s for 90k 384-d vectors).
 *
 * Deleting a chunk deletes its vector (foreign key, on delete cascade); moving a chunk to another
 * collection or owner moves its vector (trigger).
 */
export async function createPostgresBackend(database: Database, logger: Logger): Promise<SearchBackend> {
  const { db } = database;
  const pgvector = await setUp(db, logger);
  const models = new VectorModels(db);
  const vectors = pgvector ? pgvectorStore(db, pgvector.iterativeScan) : exactStore(db);
  if (!pgvector) {
    logger.warn('knowledge search: the pgvector extension is not available, so vector search scans every vector in scope exactly (fine for tens of thousands of chunks per user; install pgvector for more)');
  }

  return {
    vectorBackend: vectors.kind,
    models,

    async lexical(scope: SearchScope, terms: readonly string[], limit: number): Promise<Ranked[]> {
      const { rows } = await sql<Ranked>`
        select c.seq, ts_rank_cd(c.tsv, q.query) as score
        from chunks as c, to_tsquery('english', ${tsQuery(terms)}) as q (query)
        where c.tsv @@ q.query and c.user_id = ${scope.userId}${collectionFilter('c.collection_id', scope)}
        order by score desc, c.seq limit ${limit}`.execute(db);
      return rows.map((r) => ({ seq: r.seq, score: Number(r.score) }));
    },

    async excerpts(terms: readonly string[], seqs: readonly number[]): Promise<Map<number, string>> {
      if (seqs.length === 0) return new Map();
      const { rows } = await sql<{ seq: number; s: string }>`
        select c.seq, ts_headline('english', c.text, to_tsquery('english', ${tsQuery(terms)}), ${HEADLINE_OPTIONS}) as s
        from chunks as c where c.seq in (${sql.join(seqs)})`.execute(db);
      return new Map(rows.map((r) => [r.seq, r.s]));
    },

    vector: (scope, model, unit, limit) => vectors.search(scope, model, unit, limit),
    putVectors: (executor, model, rows) => vectors.put(executor, model, lastPerChunk(rows)),

    async dropVectorsExcept(model: string): Promise<void> {
      await vectors.dropExcept(model);
      await models.dropExcept(model);
    },

    async chunksMissingVectors(model: string, limit: number): Promise<MissingVectorChunk[]> {
      const { rows } = await sql<MissingVectorChunk>`
        select c.seq, c.id, c.user_id, c.collection_id, c.document_id, c.heading, c.text from chunks as c
        where not exists (select 1 from ${sql.table(vectors.table)} as v where v.chunk_seq = c.seq and v.model = ${model})
        order by c.seq limit ${limit}`.execute(db);
      return rows;
    },
  };
}

interface VectorStore {
  readonly kind: VectorBackend;
  readonly table: string;
  search(scope: SearchScope, model: string, unit: Float32Array, limit: number): Promise<Ranked[]>;
  put(executor: Kysely<DB> | Transaction<DB>, model: string, rows: readonly UnitVectorRow[]): Promise<void>;
  dropExcept(model: string): Promise<void>;
}

/**
 * Creates what the search needs beside the migrated tables, once per database, under an advisory
 * lock so instances starting together do not race on the catalog. Returns pgvector's details when the
 * extension is (or could be) installed and visible from this schema.
 */
async function setUp(db: Kysely<DB>, logger: Logger): Promise<{ iterativeScan: boolean } | undefined> {
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ':keel:knowledge-search'))`.execute(trx);
    await sql`create table if not exists chunk_vector_models (model text primary key, dims integer not null)`.execute(trx);
    let version = await vectorExtensionVersion(trx);
    if (version === undefined) {
      const { rows } = await sql`select 1 from pg_available_extensions where name = 'vector'`.execute(trx);
      if (rows.length > 0) {
        await sql`savepoint create_vector_extension`.execute(trx);
        try {
          await sql`create extension if not exists vector`.execute(trx);
          version = await vectorExtensionVersion(trx);
        } catch (err) {
          await sql`rollback to savepoint create_vector_extension`.execute(trx);
          logger.warn({ err: { message: (err as Error).message } }, 'knowledge search: could not create the pgvector extension');
        }
      }
    }
    const table = version === undefined ? 'chunk_vectors' : 'chunk_vectors_pgvector';
    const embedding = version === undefined ? sql`bytea` : sql`vector`;
    await sql`create table if not exists ${sql.table(table)} (
      chunk_seq bigint primary key references chunks(seq) on delete cascade,
      model text not null,
      user_id text not null,
      collection_id text,
      embedding ${embedding} not null
    )`.execute(trx);
    await sql`create index if not exists ${sql.id(`${table}_scan_idx`)} on ${sql.table(table)} (user_id, model, chunk_seq)`.execute(trx);
    const follow = `${table}_follow_chunk`;
    await sql`create or replace function ${sql.id(follow)}() returns trigger language plpgsql as ${sql.lit(
      `begin update ${table} set user_id = new.user_id, collection_id = new.collection_id where chunk_seq = new.seq; return null; end`,
    )}`.execute(trx);
    const { rows: triggers } = await sql`select 1 from pg_trigger where tgrelid = 'chunks'::regclass and tgname = ${follow}`.execute(trx);
    if (triggers.length === 0) {
      await sql`create trigger ${sql.id(follow)} after update of user_id, collection_id on chunks for each row
        when (old.user_id is distinct from new.user_id or old.collection_id is distinct from new.collection_id)
        execute function ${sql.id(follow)}()`.execute(trx);
    }
    return version === undefined ? undefined : { iterativeScan: versionAtLeast(version, [0, 8]) };
  });
}

/** The installed pgvector's version, when its `vector` type is visible from this schema. */
async function vectorExtensionVersion(db: Kysely<DB> | Transaction<DB>): Promise<string | undefined> {
  const { rows } = await sql<{ v: string }>`
    select extversion as v from pg_extension where extname = 'vector' and to_regtype('vector') is not null`.execute(db);
  return rows[0]?.v;
}

function versionAtLeast(version: string, min: readonly number[]): boolean {
  const parts = version.split('.').map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < min.length; i++) {
    if ((parts[i] ?? 0) !== min[i]) return (parts[i] ?? 0) > min[i]!;
  }
  return true;
}

/** No pgvector: unit vectors as float32 bytes, every vector in scope scored here. */
function exactStore(db: Kysely<DB>): VectorStore {
  return {
    kind: 'exact',
    table: 'chunk_vectors',

    async search(scope, model, unit, limit) {
      const top = new TopK<number>(limit);
      // Keyset pages along the (user_id, model, chunk_seq) index; the next page is fetched while
      // this one is scored.
      type Page = Promise<{ rows: Array<{ seq: number; embedding: Uint8Array }> }>;
      const page = (after: number): Page => sql<{ seq: number; embedding: Uint8Array }>`
        select chunk_seq as seq, embedding from chunk_vectors
        where user_id = ${scope.userId} and model = ${model}${collectionFilter('collection_id', scope)} and chunk_seq > ${after}
        order by chunk_seq limit ${SCAN_PAGE}`.execute(db);
      let next: Page | undefined = page(0);
      try {
        while (next) {
          const { rows }: Awaited<Page> = await next;
          next = rows.length === SCAN_PAGE ? page(rows[rows.length - 1]!.seq) : undefined;
          for (const row of rows) top.push(dot(fromBytes(row.embedding), unit), row.seq);
        }
      } finally {
        // A page still in flight when scoring failed: its outcome no longer matters.
        void next?.catch(() => undefined);
      }
      return top.sorted().map(({ score, item }) => ({ seq: item, score }));
    },

    async put(executor, model, rows) {
      for (let i = 0; i < rows.length; i += PUT_BATCH) {
        const values = rows.slice(i, i + PUT_BATCH).map((r) => sql`(${r.seq}::bigint, ${r.chunkId}::text, ${r.userId}::text, ${toBytes(r.unit)}::bytea)`);
        await sql`insert into chunk_vectors (chunk_seq, model, user_id, collection_id, embedding)
          select c.seq, ${model}, c.user_id, c.collection_id, v.embedding
          from (values ${sql.join(values)}) as v (seq, id, user_id, embedding)
          join chunks as c on c.seq = v.seq and c.id = v.id and c.user_id = v.user_id
          on conflict (chunk_seq) do update set model = excluded.model, user_id = excluded.user_id,
            collection_id = excluded.collection_id, embedding = excluded.embedding`.execute(executor);
      }
    },

    async dropExcept(model) {
      await sql`delete from chunk_vectors where model <> ${model}`.execute(db);
    },
  };
}

/**
 * pgvector (not exercised by the test suite: the test database has no pgvector). One untyped
 * `vector` column; per model, a partial HNSW index over the column cast to the model's dimension,
 * which queries name in the same form so the planner can use it.
 */
function pgvectorStore(db: Kysely<DB>, iterativeScan: boolean): VectorStore {
  const indexed = new Set<string>();
  const indexName = (model: string) => `chunk_vectors_pgvector_hnsw_${createHash('sha256').update(model).digest('hex').slice(0, 16)}`;
  const literal = (v: Float32Array) => `[${Array.from(v).join(',')}]`;

  return {
    kind: 'pgvector',
    table: 'chunk_vectors_pgvector',

    async search(scope, model, unit, limit) {
      const dims = sql.lit(unit.length);
      const distance = sql`embedding::vector(${dims}) <=> ${literal(unit)}::vector(${dims})`;
      const rows = await db.transaction().execute(async (trx) => {
        // HNSW returns ef_search candidates before the owner filter; iterative scans (0.8+) go on
        // until `limit` rows pass it.
        await sql`set local hnsw.ef_search = ${sql.lit(Math.min(1000, Math.max(40, limit * 2)))}`.execute(trx);
        if (iterativeScan) await sql`set local hnsw.iterative_scan = relaxed_order`.execute(trx);
        const { rows } = await sql<{ seq: number; distance: number }>`
          select chunk_seq as seq, ${distance} as distance from chunk_vectors_pgvector
          where model = ${sql.lit(model)} and user_id = ${scope.userId}${collectionFilter('collection_id', scope)}
          order by ${distance} limit ${limit}`.execute(trx);
        return rows;
      });
      return rows.map((r) => ({ seq: r.seq, score: 1 - Number(r.distance) })).sort((a, b) => b.score - a.score);
    },

    async put(executor, model, rows) {
      const dims = rows[0]?.unit.length;
      if (dims === undefined) return;
      if (!indexed.has(model)) {
        const create = async (trx: Kysely<DB> | Transaction<DB>) => {
          await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ':keel:knowledge-search'))`.execute(trx);
          await sql`create index if not exists ${sql.id(indexName(model))} on chunk_vectors_pgvector
            using hnsw ((embedding::vector(${sql.lit(dims)})) vector_cosine_ops) where model = ${sql.lit(model)}`.execute(trx);
        };
        if (executor.isTransaction) await create(executor);
        else await executor.transaction().execute(create);
        // Only remembered once committed; in the caller's transaction it is checked again next time.
        if (!executor.isTransaction) indexed.add(model);
      }
      for (let i = 0; i < rows.length; i += PUT_BATCH) {
        const values = rows.slice(i, i + PUT_BATCH).map((r) => sql`(${r.seq}::bigint, ${r.chunkId}::text, ${r.userId}::text, ${literal(r.unit)}::text)`);
        await sql`insert into chunk_vectors_pgvector (chunk_seq, model, user_id, collection_id, embedding)
          select c.seq, ${model}, c.user_id, c.collection_id, v.embedding::vector
          from (values ${sql.join(values)}) as v (seq, id, user_id, embedding)
          join chunks as c on c.seq = v.seq and c.id = v.id and c.user_id = v.user_id
          on conflict (chunk_seq) do update set model = excluded.model, user_id = excluded.user_id,
            collection_id = excluded.collection_id, embedding = excluded.embedding`.execute(executor);
      }
    },

    async dropExcept(model) {
      await sql`delete from chunk_vectors_pgvector where model <> ${model}`.execute(db);
      const keep = indexName(model);
      const { rows } = await sql<{ name: string }>`
        select indexname as name from pg_indexes
        where schemaname = current_schema() and tablename = 'chunk_vectors_pgvector' and indexname like 'chunk_vectors_pgvector_hnsw_%'`.execute(db);
      for (const { name } of rows) if (name !== keep) await sql`drop index if exists ${sql.id(name)}`.execute(db);
      for (const name of indexed) if (name !== model) indexed.delete(name);
    },
  };
}
