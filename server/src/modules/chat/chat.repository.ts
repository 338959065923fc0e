import type { Kysely, Selectable, Transaction } from 'kysely';
import type { ConversationsTable, DB, MessagesTable } from '../../db/schema.js';
import { uuidv7 } from '../../platform/ids.js';

export type ConversationRow = Selectable<ConversationsTable>;
export type MessageRow = Selectable<MessagesTable>;
type Db = Kysely<DB> | Transaction<DB>;

/** Every chat query; each is scoped by the owner so another user's ids look absent. */
export const chatRepository = {
  insertConversation: (db: Db, userId: string, values: { title: string | null; preset: string | null; model: string | null; system_prompt: string | null; collection_ids: string }, now: string) =>
    db.insertInto('conversations').values({ id: uuidv7(), user_id: userId, ...values, created_at: now, updated_at: now, last_activity_at: now }).returningAll().executeTakeFirstOrThrow(),

  conversation: (db: Db, userId: string, id: string) =>
    db.selectFrom('conversations').selectAll().where('id', '=', id).where('user_id', '=', userId).executeTakeFirst(),

  /** Newest activity first; the cursor is the last row's (last_activity_at, id). */
  conversations: (db: Db, userId: string, limit: number, after?: { at: string; id: string }) => {
    let q = db.selectFrom('conversations').selectAll().where('user_id', '=', userId).orderBy('last_activity_at', 'desc').orderBy('id', 'desc').limit(limit + 1);
    if (after) q = q.where((eb) => eb.or([eb('last_activity_at', '<', after.at), eb.and([eb('last_activity_at', '=', after.at), eb('id', '<', after.id)])]));
    return q.execute();
  },

  updateConversation: (db: Db, userId: string, id: string, values: Partial<Pick<ConversationRow, 'title' | 'preset' | 'model' | 'system_prompt' | 'collection_ids' | 'last_activity_at'>>, now: string) =>
    db.updateTable('conversations').set({ ...values, updated_at: now }).where('id', '=', id).where('user_id', '=', userId).returningAll().executeTakeFirst(),

  deleteConversation: async (db: Db, userId: string, id: string): Promise<boolean> => {
    const r = await db.deleteFrom('conversations').where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  },

  insertMessage: (db: Db, values: Omit<MessageRow, 'id' | 'completed_at'> & { completed_at?: string | null }) =>
    db.insertInto('messages').values({ id: uuidv7(), completed_at: null, ...values }).returningAll().executeTakeFirstOrThrow(),

  finishMessage: (db: Db, id: string, values: Pick<MessageRow, 'content' | 'status' | 'prompt_tokens' | 'completion_tokens' | 'citations' | 'error_code' | 'completed_at'>) =>
    db.updateTable('messages').set(values).where('id', '=', id).returningAll().executeTakeFirstOrThrow(),

  message: (db: Db, userId: string, conversationId: string, id: string) =>
    db.selectFrom('messages').selectAll().where('id', '=', id).where('conversation_id', '=', conversationId).where('user_id', '=', userId).executeTakeFirst(),

  /** A page of history ending before `beforeId`, newest first (the service reverses it). */
  messagesBefore: (db: Db, conversationId: string, limit: number, beforeId?: string) => {
    let q = db.selectFrom('messages').selectAll().where('conversation_id', '=', conversationId).orderBy('id', 'desc').limit(limit);
    if (beforeId) q = q.where('id', '<', beforeId);
    return q.execute();
  },

  /**
   * Messages still `generating` long after any generation could have ended belong to a process that
   * died: mark them failed. (Not every `generating` row: another instance may be streaming it now.)
   */
  failOrphanedGenerations: (db: Db, startedBefore: string, now: string) =>
    db.updateTable('messages').set({ status: 'failed', error_code: 'interrupted', completed_at: now }).where('status', '=', 'generating').where('created_at', '<', startedBefore).execute(),
};
