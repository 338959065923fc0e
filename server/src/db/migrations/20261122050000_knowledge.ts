import { sql, type Kysely } from 'kysely';
import { dialectOf } from '../migration-helpers.js';

/**
 * The knowledge base: collections, documents (the original upload is kept in `document_files`, so it
 * is deleted, backed up and shared across instances with its row) and their chunks, with the lexical index beside them in the same database —
 * FTS5 (external content, kept by triggers) on SQLite, a generated `tsvector` with GIN on Postgres.
 * Vectors are added at run time (their dimension comes from the embedding model): see
 * modules/knowledge/search/.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  const dialect = dialectOf(db);
  const ts = sql.raw(dialect.timestampType);
  await db.schema
    .createTable('collections')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text')
    .addColumn('created_at', ts, (c) => c.notNull())
    .addColumn('updated_at', ts, (c) => c.notNull())
    .execute();
  await db.schema.createIndex('collections_user_idx').on('collections').columns(['user_id', 'id']).execute();

  await db.schema
    .createTable('documents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('collection_id', 'text', (c) => c.references('collections.id').onDelete('cascade'))
    .addColumn('filename', 'text', (c) => c.notNull())
    // markdown | text | json | yaml | openapi | html | pdf (what the content turned out to be)
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('media_type', 'text', (c) => c.notNull())
    .addColumn('bytes', 'integer', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    // '' for "no collection", so the same content twice in one place is caught by a unique index on both dialects.
    .addColumn('dedupe_scope', 'text', (c) => c.notNull())
    // pending | processing | ready | failed
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('error', 'text')
    .addColumn('job_id', 'text')
    .addColumn('chunk_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('embedding_model', 'text')
    .addColumn('created_at', ts, (c) => c.notNull())
    .addColumn('updated_at', ts, (c) => c.notNull())
    .execute();
  await db.schema.createIndex('documents_user_idx').on('documents').columns(['user_id', 'id']).execute();
  await db.schema.createIndex('documents_collection_idx').on('documents').columns(['collection_id']).execute();
  await db.schema.createIndex('documents_dedupe_idx').unique().on('documents').columns(['user_id', 'dedupe_scope', 'sha256']).execute();

  await db.schema
    .createTable('document_files')
    .addColumn('document_id', 'text', (c) => c.primaryKey().references('documents.id').onDelete('cascade'))
    .addColumn('content', dialect.name === 'postgres' ? 'bytea' : 'blob', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('chunks')
    // `seq` is the integer key the lexical and vector indexes point at (FTS5 rowid, vec0 rowid).
    .addColumn('seq', dialect.name === 'postgres' ? 'bigserial' : 'integer', (c) => (dialect.name === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
    .addColumn('id', 'text', (c) => c.notNull().unique())
    .addColumn('document_id', 'text', (c) => c.notNull().references('documents.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('collection_id', 'text')
    .addColumn('ordinal', 'integer', (c) => c.notNull())
    // The heading path ("Guide > Install") or the OpenAPI operation ("GET /pets · listPets").
    .addColumn('heading', 'text')
    .addColumn('text', 'text', (c) => c.notNull())
    .addColumn('token_count', 'integer', (c) => c.notNull())
    .addColumn('created_at', ts, (c) => c.notNull())
    .execute();
  await db.schema.createIndex('chunks_document_idx').on('chunks').columns(['document_id', 'ordinal']).execute();
  await db.schema.createIndex('chunks_user_idx').on('chunks').columns(['user_id', 'collection_id']).execute();

  if (dialect.name === 'postgres') {
    // The heading is searchable too (an operation id or section title often names what is asked).
    await sql`alter table chunks add column tsv tsvector generated always as (to_tsvector('english', coalesce(heading, '') || ' ' || text)) stored`.execute(db);
    await sql`create index chunks_tsv_idx on chunks using gin (tsv)`.execute(db);
  } else {
    // Owner and collection of a chunk without reading its row (text and all): the lexical search looks
    // them up once per FTS5 match (modules/knowledge/search/sqlite-backend.ts names this index).
    await db.schema.createIndex('chunks_search_owner_idx').on('chunks').columns(['seq', 'user_id', 'collection_id']).execute();
    await sql`create virtual table chunks_fts using fts5(heading, text, content='chunks', content_rowid='seq', tokenize='porter unicode61')`.execute(db);
    await sql`create trigger chunks_fts_insert after insert on chunks begin
      insert into chunks_fts(rowid, heading, text) values (new.seq, new.heading, new.text);
    end`.execute(db);
    await sql`create trigger chunks_fts_delete after delete on chunks begin
      insert into chunks_fts(chunks_fts, rowid, heading, text) values ('delete', old.seq, old.heading, old.text);
    end`.execute(db);
    await sql`create trigger chunks_fts_update after update of heading, text on chunks begin
      insert into chunks_fts(chunks_fts, rowid, heading, text) values ('delete', old.seq, old.heading, old.text);
      insert into chunks_fts(rowid, heading, text) values (new.seq, new.heading, new.text);
    end`.execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  if (dialectOf(db).name === 'sqlite') await sql`drop table if exists chunks_fts`.execute(db);
  await db.schema.dropTable('chunks').execute();
  await db.schema.dropTable('document_files').execute();
  await db.schema.dropTable('documents').execute();
  await db.schema.dropTable('collections').execute();
}
