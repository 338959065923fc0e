import type { Logger } from 'pino';
import type { Database } from '../../db/database.js';
import { uuidv7 } from '../../platform/ids.js';
import { PermanentJobError, type JobContext, type JobQueue } from '../../platform/jobs.js';
import type { Embedder } from './embeddings/index.js';
import { knowledgeRepository as repo, type DocumentRow, type NewChunk } from './knowledge.repository.js';
import { INGEST_JOB, REEMBED_JOB } from './knowledge.service.js';
import { chunkSections, DEFAULT_CHUNKING, ParseError, parseDocument, type DocumentKind } from './parsing/index.js';
import type { KnowledgeIndex } from './search/index.js';

export interface IngestionDeps {
  readonly database: Database;
  readonly jobs: JobQueue;
  readonly index: KnowledgeIndex;
  readonly embedder: Embedder | undefined;
  readonly logger: Logger;
  readonly chunking?: { maxTokens: number; overlapTokens: number };
}

/** Chunks embedded (and their vectors written) per round trip to the embeddings provider. */
const EMBED_ROUND = 64;

/**
 * What is embedded for a chunk: its heading path (or OpenAPI operation) above its text, so a chunk is
 * found by what its section is about even when its own words do not say it.
 */
export const embeddingInput = (chunk: { heading: string | null; text: string }): string => (chunk.heading ? `${chunk.heading}\n\n${chunk.text}` : chunk.text);

/**
 * The ingestion pipeline, as durable jobs: parse the stored original, replace the document's chunks in
 * one transaction (so a retry after a crash starts clean and never duplicates), then embed them in
 * rounds. The document's status follows: pending → processing → ready | failed.
 */
export function registerIngestion(deps: IngestionDeps): void {
  deps.jobs.register(INGEST_JOB, (payload, ctx) => ingest(deps, payload as { document_id: string }, ctx), { maxAttempts: 5 });
  deps.jobs.register(REEMBED_JOB, (_payload, ctx) => reembed(deps, ctx), { maxAttempts: 10 });
}

async function ingest(deps: IngestionDeps, payload: { document_id: string }, ctx: JobContext): Promise<unknown> {
  const db = deps.database.db;
  const doc = await repo.documentById(db, payload.document_id);
  if (!doc) return { skipped: 'the document was deleted' };
  const now = () => new Date().toISOString();
  try {
    await repo.updateDocument(db, doc.id, { status: 'processing', error: null }, now());
    const content = await repo.fileOf(db, doc.id);
    if (!content) return { skipped: 'the document was deleted' };
    const sections = await parseDocument(doc.kind as DocumentKind, content);
    const chunks = chunkSections(sections, deps.chunking ?? DEFAULT_CHUNKING);
    const created = now();
    const rows: NewChunk[] = chunks.map((c) => ({
      id: uuidv7(), document_id: doc.id, user_id: doc.user_id, collection_id: doc.collection_id, ordinal: c.ordinal, heading: c.heading, text: c.text, token_count: c.token_count, created_at: created,
    }));
    const stored = await db.transaction().execute(async (trx) => {
      // Deleted while we parsed: write nothing.
      if (!(await repo.documentById(trx, doc.id))) return false;
      await repo.replaceChunks(trx, doc.id, rows);
      await repo.updateDocument(trx, doc.id, { chunk_count: rows.length, embedding_model: null }, now());
      return true;
    });
    if (!stored) return { skipped: 'the document was deleted' };
    await ctx.progress(deps.embedder ? 0.2 : 0.9);
    if (deps.embedder && rows.length > 0) await embedDocument(deps, doc, ctx);
    await repo.updateDocument(db, doc.id, { status: 'ready', error: null }, now());
    ctx.logger.info({ documentId: doc.id, chunks: rows.length }, 'document ingested');
    return { chunks: rows.length, embedding_model: deps.embedder?.model ?? null };
  } catch (err) {
    // Shutdown or a lost lease: the job is run again (here or by whoever holds it now), which sets the
    // document's status itself — writing one here could overwrite the newer run's.
    if (ctx.signal.aborted) throw err;
    const permanent = err instanceof ParseError;
    if (permanent || ctx.job.attempts >= ctx.job.max_attempts) {
      const message = permanent ? err.message : `Ingestion failed: ${(err as Error).message}`;
      await repo.updateDocument(db, doc.id, { status: 'failed', error: message }, now()).catch((e: unknown) => ctx.logger.error({ err: e }, 'could not mark the document failed'));
      if (permanent) throw new PermanentJobError(message);
    } else {
      await repo.updateDocument(db, doc.id, { status: 'pending', error: `Retrying: ${(err as Error).message}` }, now()).catch(() => undefined);
    }
    throw err;
  }
}

/** Embeds a document's chunks in rounds, writing each round's vectors as it goes. */
async function embedDocument(deps: IngestionDeps, doc: DocumentRow, ctx: JobContext): Promise<void> {
  const embedder = deps.embedder!;
  const db = deps.database.db;
  const chunks = await repo.chunksOf(db, doc.id);
  for (let i = 0; i < chunks.length; i += EMBED_ROUND) {
    ctx.signal.throwIfAborted();
    const round = chunks.slice(i, i + EMBED_ROUND);
    const vectors = await embedder.embed(round.map(embeddingInput), { purpose: 'document', signal: ctx.signal });
    await deps.index.putVectors(db, embedder.model, round.map((c, j) => ({ chunkSeq: c.seq, chunkId: c.id, userId: c.user_id, collectionId: c.collection_id, vector: vectors[j]! })));
    await ctx.progress(0.2 + (0.8 * Math.min(chunks.length, i + EMBED_ROUND)) / chunks.length);
  }
  await repo.updateDocument(db, doc.id, { embedding_model: embedder.model }, new Date().toISOString());
}

/**
 * After the embedding model changed: embeds every chunk that has no vector from the current model,
 * in the background, then drops the old model's vectors. Until it ends, hybrid search still has BM25.
 */
async function reembed(deps: IngestionDeps, ctx: JobContext): Promise<unknown> {
  const embedder = deps.embedder;
  if (!embedder) return { skipped: 'no embedder is configured' };
  const db = deps.database.db;
  let embedded = 0;
  for (;;) {
    ctx.signal.throwIfAborted();
    const batch = await deps.index.chunksMissingVectors(embedder.model, EMBED_ROUND);
    if (batch.length === 0) break;
    const vectors = await embedder.embed(batch.map(embeddingInput), { purpose: 'document', signal: ctx.signal });
    await deps.index.putVectors(db, embedder.model, batch.map((c, j) => ({ chunkSeq: c.seq, chunkId: c.id, userId: c.user_id, collectionId: c.collection_id, vector: vectors[j]! })));
    embedded += batch.length;
    await ctx.progress(0.5);
  }
  for (;;) {
    const docs = await repo.documentsNotEmbeddedWith(db, embedder.model, 500);
    if (docs.length === 0) break;
    await db.updateTable('documents').set({ embedding_model: embedder.model, updated_at: new Date().toISOString() }).where('id', 'in', docs.map((d) => d.id)).execute();
  }
  await deps.index.dropVectorsExcept(embedder.model);
  ctx.logger.info({ embedded, model: embedder.model }, 're-embedding finished');
  return { embedded, model: embedder.model };
}

/**
 * At start: when ready documents were embedded by another model (or before an embedder was
 * configured), queue one background re-embed — unless one is already queued or running.
 */
export async function scheduleReembedIfNeeded(deps: IngestionDeps): Promise<boolean> {
  const embedder = deps.embedder;
  if (!embedder) return false;
  const db = deps.database.db;
  const stale = await repo.documentsNotEmbeddedWith(db, embedder.model, 1);
  if (stale.length === 0) return false;
  if (await deps.jobs.hasActive(REEMBED_JOB)) return false;
  await deps.jobs.enqueue(db, { type: REEMBED_JOB, ownerId: null, payload: { model: embedder.model } });
  deps.logger.info({ model: embedder.model }, 'the embedding model changed: re-embedding documents in the background');
  return true;
}
