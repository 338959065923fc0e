import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import type { Database } from '../../../src/db/database.js';
import { uuidv7 } from '../../../src/platform/ids.js';

/** Rows of the knowledge tables, inserted directly (the search index reads them; no service needed). */
export function knowledgeRows(database: Database) {
  const { db } = database;
  const now = () => new Date().toISOString();
  let ordinal = 0;

  return {
    async user(): Promise<string> {
      const id = uuidv7();
      await db.insertInto('users').values({ id, email: null, name: null, password_hash: null, created_at: now(), updated_at: now() }).execute();
      return id;
    },

    async collection(userId: string, name = 'notes'): Promise<string> {
      const id = uuidv7();
      await db.insertInto('collections').values({ id, user_id: userId, name, description: null, created_at: now(), updated_at: now() }).execute();
      return id;
    },

    async document(userId: string, collectionId: string | null = null, filename = 'doc.md'): Promise<string> {
      const id = uuidv7();
      await db.insertInto('documents').values({
        id, user_id: userId, collection_id: collectionId, filename, kind: 'markdown', media_type: 'text/markdown', bytes: 1,
        sha256: createHash('sha256').update(id).digest('hex'), dedupe_scope: collectionId ?? '',
        status: 'ready', error: null, job_id: null, embedding_model: null, created_at: now(), updated_at: now(),
      }).execute();
      return id;
    },

    /** A chunk of `documentId` (owner and collection copied from the document, as the service does). */
    async chunk(documentId: string, text: string, heading: string | null = null): Promise<{ seq: number; id: string; userId: string; collectionId: string | null }> {
      const doc = await db.selectFrom('documents').select(['user_id', 'collection_id']).where('id', '=', documentId).executeTakeFirstOrThrow();
      const id = uuidv7();
      const row = await db.insertInto('chunks').values({
        id, document_id: documentId, user_id: doc.user_id, collection_id: doc.collection_id, ordinal: ordinal++, heading, text,
        token_count: text.split(/\s+/).length, created_at: now(),
      }).returning('seq').executeTakeFirstOrThrow();
      return { seq: Number(row.seq), id, userId: doc.user_id, collectionId: doc.collection_id };
    },

    /** Rows in the vector table the index uses on this database. */
    async vectorCount(table: string): Promise<number> {
      const { rows } = await sql<{ n: number }>`select count(*) as n from ${sql.table(table)}`.execute(db);
      return Number(rows[0]!.n);
    },
  };
}

/** A vector from its components. */
export const vec = (...xs: number[]): Float32Array => Float32Array.from(xs);
