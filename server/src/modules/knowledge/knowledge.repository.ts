import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { ChunksTable, CollectionsTable, DB, DocumentsTable } from '../../db/schema.js';

export type CollectionRow = Selectable<CollectionsTable>;
export type DocumentRow = Selectable<DocumentsTable>;
export type NewChunk = Omit<Selectable<ChunksTable>, 'seq'>;
type Db = Kysely<DB> | Transaction<DB>;

/** Rows per multi-row insert: well under SQLite's 32,766 bound parameters at 9 columns a chunk. */
const CHUNK_INSERT_BATCH = 500;

/**
 * Every knowledge query. Reads and deletes a user makes are scoped by `user_id`, so another user's ids
 * look absent; the `ById` functions without an owner are for the ingestion job, which works for
 * whoever owns the document it was given.
 */
export const knowledgeRepository = {
  insertCollection: (db: Db, values: CollectionRow) => db.insertInto('collections').values(values).returningAll().executeTakeFirstOrThrow(),

  collection: (db: Db, userId: string, id: string) =>
    db.selectFrom('collections').selectAll().where('id', '=', id).where('user_id', '=', userId).executeTakeFirst(),

  /** Oldest first (ids are time-ordered); the cursor is the last id. */
  collections: (db: Db, userId: string, limit: number, afterId?: string) => {
    let q = db.selectFrom('collections').selectAll().where('user_id', '=', userId).orderBy('id').limit(limit + 1);
    if (afterId) q = q.where('id', '>', afterId);
    return q.execute();
  },

  updateCollection: (db: Db, userId: string, id: string, values: Partial<Pick<CollectionRow, 'name' | 'description'>>, now: string) =>
    db.updateTable('collections').set({ ...values, updated_at: now }).where('id', '=', id).where('user_id', '=', userId).returningAll().executeTakeFirst(),

  deleteCollection: async (db: Db, userId: string, id: string): Promise<boolean> => {
    const r = await db.deleteFrom('collections').where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  },

  documentCounts: (db: Db, collectionIds: readonly string[]) =>
    collectionIds.length === 0
      ? Promise.resolve([])
      : db.selectFrom('documents').select(['collection_id', (eb) => eb.fn.countAll<number>().as('n')]).where('collection_id', 'in', collectionIds).groupBy('collection_id').execute(),

  /** Serializes a user's uploads on Postgres (the storage quota is checked, then spent); SQLite's writer lock already does. */
  lockUser: async (db: Db, userId: string, forUpdate: boolean): Promise<void> => {
    const q = db.selectFrom('users').select('id').where('id', '=', userId);
    await (forUpdate ? q.forUpdate() : q).execute();
  },

  bytesUsed: async (db: Db, userId: string): Promise<number> => {
    const row = await db.selectFrom('documents').select((eb) => eb.fn.coalesce(eb.fn.sum<number>('bytes'), sql<number>`0`).as('bytes')).where('user_id', '=', userId).executeTakeFirstOrThrow();
    return Number(row.bytes);
  },

  documentBySha: (db: Db, userId: string, scope: string, sha256: string) =>
    db.selectFrom('documents').selectAll().where('user_id', '=', userId).where('dedupe_scope', '=', scope).where('sha256', '=', sha256).executeTakeFirst(),

  insertDocument: async (db: Db, values: DocumentRow, content: Uint8Array): Promise<DocumentRow> => {
    const row = await db.insertInto('documents').values(values).returningAll().executeTakeFirstOrThrow();
    await db.insertInto('document_files').values({ document_id: row.id, content }).execute();
    return row;
  },

  document: (db: Db, userId: string, id: string) =>
    db.selectFrom('documents').selectAll().where('id', '=', id).where('user_id', '=', userId).executeTakeFirst(),

  documentById: (db: Db, id: string) => db.selectFrom('documents').selectAll().where('id', '=', id).executeTakeFirst(),

  documents: (db: Db, userId: string, filter: { collectionId?: string; status?: string }, limit: number, afterId?: string) => {
    let q = db.selectFrom('documents').selectAll().where('user_id', '=', userId).orderBy('id').limit(limit + 1);
    if (filter.collectionId) q = q.where('collection_id', '=', filter.collectionId);
    if (filter.status) q = q.where('status', '=', filter.status);
    if (afterId) q = q.where('id', '>', afterId);
    return q.execute();
  },

  updateDocument: (db: Db, id: string, values: Partial<Pick<DocumentRow, 'status' | 'error' | 'job_id' | 'chunk_count' | 'embedding_model'>>, now: string) =>
    db.updateTable('documents').set({ ...values, updated_at: now }).where('id', '=', id).returningAll().executeTakeFirst(),

  deleteDocument: async (db: Db, userId: string, id: string): Promise<boolean> => {
    const r = await db.deleteFrom('documents').where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  },

  fileOf: async (db: Db, documentId: string): Promise<Uint8Array | undefined> =>
    (await db.selectFrom('document_files').select('content').where('document_id', '=', documentId).executeTakeFirst())?.content,

  /** Replaces a document's chunks (deleting the old ones drops their index entries too), so re-running ingestion never duplicates. */
  replaceChunks: async (db: Db, documentId: string, chunks: readonly NewChunk[]): Promise<void> => {
    await db.deleteFrom('chunks').where('document_id', '=', documentId).execute();
    for (let i = 0; i < chunks.length; i += CHUNK_INSERT_BATCH) {
      await db.insertInto('chunks').values(chunks.slice(i, i + CHUNK_INSERT_BATCH)).execute();
    }
  },

  /** The document's chunks in order, with the integer key the vector index uses. */
  chunksOf: (db: Db, documentId: string) =>
    db.selectFrom('chunks').select(['seq', 'id', 'user_id', 'collection_id', 'heading', 'text']).where('document_id', '=', documentId).orderBy('ordinal').execute(),

  /** A page of a document's chunks in order (ordinal is the cursor). */
  chunkPage: (db: Db, documentId: string, limit: number, afterOrdinal: number) =>
    db.selectFrom('chunks').select(['id', 'ordinal', 'heading', 'text', 'token_count']).where('document_id', '=', documentId).where('ordinal', '>', afterOrdinal).orderBy('ordinal').limit(limit + 1).execute(),

  /** Ready documents embedded by another model (or none), for the background re-embed. */
  documentsNotEmbeddedWith: (db: Db, model: string, limit: number) =>
    db.selectFrom('documents').select('id').where('status', '=', 'ready').where((eb) => eb.or([eb('embedding_model', 'is', null), eb('embedding_model', '!=', model)])).where('chunk_count', '>', 0).limit(limit).execute(),

  /** Counts for GET /stats: the user's, or everyone's when `userId` is undefined. */
  stats: async (db: Db, userId: string | undefined) => {
    const all = userId === undefined;
    const [collections, chunks, byStatus] = await Promise.all([
      db.selectFrom('collections').select((eb) => eb.fn.countAll<number>().as('n')).$if(!all, (q) => q.where('user_id', '=', userId!)).executeTakeFirstOrThrow(),
      db.selectFrom('chunks').select((eb) => eb.fn.countAll<number>().as('n')).$if(!all, (q) => q.where('user_id', '=', userId!)).executeTakeFirstOrThrow(),
      db.selectFrom('documents')
        .select(['status', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.coalesce(eb.fn.sum<number>('bytes'), sql<number>`0`).as('bytes')])
        .$if(!all, (q) => q.where('user_id', '=', userId!))
        .groupBy('status')
        .execute(),
    ]);
    return { collections: Number(collections.n), chunks: Number(chunks.n), byStatus: byStatus.map((r) => ({ status: r.status, n: Number(r.n), bytes: Number(r.bytes) })) };
  },
};
