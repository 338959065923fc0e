import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Database } from '../../db/database.js';
import type { Principal } from '../../platform/auth.js';
import { AppError } from '../../platform/errors.js';
import { uuidv7 } from '../../platform/ids.js';
import type { JobQueue, JobView } from '../../platform/jobs.js';
import type { Embedder } from './embeddings/index.js';
import { knowledgeRepository as repo, type CollectionRow, type DocumentRow } from './knowledge.repository.js';
import { detectKind, sanitizeFilename } from './parsing/index.js';
import type { KnowledgeIndex, SearchHit, SearchMode } from './search/index.js';

export const INGEST_JOB = 'knowledge.ingest';
export const REEMBED_JOB = 'knowledge.reembed';

export interface KnowledgeOptions {
  maxUploadBytes: number;
  allowedExtensions: readonly string[];
  /** Per-user total of stored originals; 0 = unlimited. */
  storageQuotaBytes: number;
  /** Vector hits scoring below this cosine similarity are not "relevant" (lexical hits always are). */
  minVectorScore: number;
}

export interface CollectionView {
  id: string;
  name: string;
  description: string | null;
  document_count: number;
  created_at: string;
  updated_at: string;
}

export interface DocumentView {
  id: string;
  collection_id: string | null;
  filename: string;
  kind: string;
  media_type: string;
  bytes: number;
  sha256: string;
  status: string;
  error: string | null;
  job_id: string | null;
  chunk_count: number;
  embedding_model: string | null;
  created_at: string;
  updated_at: string;
}

export interface ChunkView {
  id: string;
  ordinal: number;
  heading: string | null;
  text: string;
  token_count: number;
}

export interface UploadResult {
  document: DocumentView;
  job: JobView | null;
  /** The same content was already in this collection: `document` is the earlier upload. */
  duplicate: boolean;
}

/** A search result is the index's hit, as is. */
export type SearchResult = SearchHit;

export interface Stats {
  collections: number;
  documents: number;
  chunks: number;
  bytes: number;
  documents_by_status: Record<'pending' | 'processing' | 'ready' | 'failed', number>;
}

type Page<T> = { items: T[]; next_cursor: string | null };

/**
 * Collections, documents and search for each user. An upload is checked (size, type by content,
 * quota, duplicate), stored with its original in the database and handed to a durable ingestion job
 * in the same transaction; search runs lexical, vector or hybrid over the user's own chunks only.
 */
export class KnowledgeService {
  constructor(
    private readonly database: Database,
    private readonly jobs: JobQueue,
    private readonly index: KnowledgeIndex,
    private readonly embedder: Embedder | undefined,
    private readonly logger: Logger,
    private readonly options: KnowledgeOptions,
  ) {}

  private get db() {
    return this.database.db;
  }

  get embeddingModel(): string | undefined {
    return this.embedder?.model;
  }

  // ── collections ──────────────────────────────────────────────────────────

  async createCollection(principal: Principal, input: { name: string; description?: string | null }): Promise<CollectionView> {
    const now = new Date().toISOString();
    const row = await repo.insertCollection(this.db, { id: uuidv7(), user_id: principal.userId, name: input.name.trim(), description: input.description ?? null, created_at: now, updated_at: now });
    return toCollectionView(row, 0);
  }

  async listCollections(principal: Principal, limit: number, cursor?: string): Promise<Page<CollectionView>> {
    const rows = await repo.collections(this.db, principal.userId, limit, cursor);
    const page = rows.slice(0, limit);
    const counts = new Map((await repo.documentCounts(this.db, page.map((r) => r.id))).map((c) => [c.collection_id, Number(c.n)]));
    return { items: page.map((r) => toCollectionView(r, counts.get(r.id) ?? 0)), next_cursor: rows.length > limit ? page[page.length - 1]!.id : null };
  }

  async getCollection(principal: Principal, id: string): Promise<CollectionView> {
    const row = await repo.collection(this.db, principal.userId, id);
    if (!row) throw AppError.notFound('Collection');
    const counts = await repo.documentCounts(this.db, [id]);
    return toCollectionView(row, Number(counts[0]?.n ?? 0));
  }

  async updateCollection(principal: Principal, id: string, changes: { name?: string; description?: string | null }): Promise<CollectionView> {
    const row = await repo.updateCollection(this.db, principal.userId, id, {
      ...(changes.name !== undefined ? { name: changes.name.trim() } : {}),
      ...(changes.description !== undefined ? { description: changes.description } : {}),
    }, new Date().toISOString());
    if (!row) throw AppError.notFound('Collection');
    return this.getCollection(principal, row.id);
  }

  /** Deletes the collection with its documents, their originals, chunks and vectors (cascades). */
  async deleteCollection(principal: Principal, id: string): Promise<void> {
    if (!(await repo.deleteCollection(this.db, principal.userId, id))) throw AppError.notFound('Collection');
  }

  // ── documents ────────────────────────────────────────────────────────────

  async upload(principal: Principal, input: { filename: string; bytes: Uint8Array; collectionId?: string | null }): Promise<UploadResult> {
    const { maxUploadBytes, allowedExtensions, storageQuotaBytes } = this.options;
    if (input.bytes.byteLength > maxUploadBytes) throw tooLarge(maxUploadBytes);
    if (input.bytes.byteLength === 0) throw AppError.badRequest('The file is empty.', [{ field: 'file', message: 'is empty' }]);
    const filename = sanitizeFilename(input.filename);
    const { kind, mediaType } = detectKind(filename, input.bytes, allowedExtensions);
    const collectionId = input.collectionId ?? null;
    if (collectionId && !(await repo.collection(this.db, principal.userId, collectionId))) throw AppError.notFound('Collection');
    const sha256 = createHash('sha256').update(input.bytes).digest('hex');
    const scope = collectionId ?? '';

    const existing = await repo.documentBySha(this.db, principal.userId, scope, sha256);
    if (existing) return this.duplicateOf(principal, existing);

    try {
      const { document, job } = await this.db.transaction().execute(async (trx) => {
        await repo.lockUser(trx, principal.userId, this.database.dialect.name === 'postgres');
        if (storageQuotaBytes > 0) {
          const used = await repo.bytesUsed(trx, principal.userId);
          if (used + input.bytes.byteLength > storageQuotaBytes) {
            throw new AppError('storage_quota_exceeded', `This upload would take your stored documents past your quota of ${formatMb(storageQuotaBytes)} (${formatMb(used)} used). Delete documents to make room.`, 413);
          }
        }
        const now = new Date().toISOString();
        const id = uuidv7();
        const job = await this.jobs.enqueue(trx, { type: INGEST_JOB, ownerId: principal.userId, payload: { document_id: id } });
        const document = await repo.insertDocument(trx, {
          id, user_id: principal.userId, collection_id: collectionId, filename, kind, media_type: mediaType, bytes: input.bytes.byteLength, sha256,
          dedupe_scope: scope, status: 'pending', error: null, job_id: job.id, chunk_count: 0, embedding_model: null, created_at: now, updated_at: now,
        }, input.bytes);
        return { document, job };
      });
      this.logger.info({ documentId: document.id, kind, bytes: document.bytes, jobId: job.id }, 'document accepted');
      return { document: toDocumentView(document), job: (await this.jobs.view(principal.userId, job.id)) ?? null, duplicate: false };
    } catch (err) {
      // Two uploads of the same content raced: the unique index let one in; answer with it.
      const winner = isUniqueViolation(err) ? await repo.documentBySha(this.db, principal.userId, scope, sha256) : undefined;
      if (winner) return this.duplicateOf(principal, winner);
      throw err;
    }
  }

  private async duplicateOf(principal: Principal, row: DocumentRow): Promise<UploadResult> {
    const job = row.job_id ? await this.jobs.view(principal.userId, row.job_id) : undefined;
    return { document: toDocumentView(row), job: job ?? null, duplicate: true };
  }

  async listDocuments(principal: Principal, filter: { collectionId?: string; status?: string }, limit: number, cursor?: string): Promise<Page<DocumentView>> {
    const rows = await repo.documents(this.db, principal.userId, filter, limit, cursor);
    const page = rows.slice(0, limit);
    return { items: page.map(toDocumentView), next_cursor: rows.length > limit ? page[page.length - 1]!.id : null };
  }

  async getDocument(principal: Principal, id: string): Promise<DocumentView> {
    return toDocumentView(await this.ownedDocument(principal, id));
  }

  /** The original upload, as stored. */
  async documentFile(principal: Principal, id: string): Promise<{ document: DocumentView; content: Uint8Array }> {
    const row = await this.ownedDocument(principal, id);
    const content = await repo.fileOf(this.db, id);
    if (!content) throw AppError.notFound('Document');
    return { document: toDocumentView(row), content };
  }

  /** The document's chunks as ingestion made them (heading path or operation, text, tokens). */
  async documentChunks(principal: Principal, id: string, limit: number, cursor?: string): Promise<Page<ChunkView>> {
    await this.ownedDocument(principal, id);
    const after = cursor !== undefined && /^\d+$/.test(cursor) ? Number(cursor) : -1;
    const rows = await repo.chunkPage(this.db, id, limit, after);
    const page = rows.slice(0, limit);
    return { items: page, next_cursor: rows.length > limit ? String(page[page.length - 1]!.ordinal) : null };
  }

  /** Deletes the document, its original, chunks and vectors. A job still queued for it finds nothing and ends. */
  async deleteDocument(principal: Principal, id: string): Promise<void> {
    if (!(await repo.deleteDocument(this.db, principal.userId, id))) throw AppError.notFound('Document');
  }

  private async ownedDocument(principal: Principal, id: string): Promise<DocumentRow> {
    const row = await repo.document(this.db, principal.userId, id);
    if (!row) throw AppError.notFound('Document');
    return row;
  }

  // ── search ───────────────────────────────────────────────────────────────

  /**
   * Searches the caller's chunks. Without an embedder every mode runs lexically, and the reply's `mode`
   * says so; otherwise `hybrid` (the default) fuses BM25 and vector ranks.
   */
  async search(principal: Principal, input: { query: string; collectionIds?: readonly string[]; limit: number; mode?: SearchMode }, signal?: AbortSignal): Promise<{ results: SearchResult[]; mode: SearchMode }> {
    const scope = { userId: principal.userId, ...(input.collectionIds && input.collectionIds.length > 0 ? { collectionIds: input.collectionIds } : {}) };
    const wanted = input.mode ?? 'hybrid';
    if (!this.embedder || wanted === 'lexical') {
      return { results: await this.index.lexical(scope, input.query, input.limit), mode: 'lexical' };
    }
    const [vector] = await this.embedder.embed([input.query], { purpose: 'query', ...(signal ? { signal } : {}) });
    const queryVector = { model: this.embedder.model, vector: vector! };
    const hits = wanted === 'vector' ? await this.index.vector(scope, queryVector, input.limit) : await this.index.hybrid(scope, input.query, queryVector, input.limit);
    return { results: hits, mode: wanted };
  }

  /**
   * The passages worth showing a model: a search, minus vector-only hits too far from the query
   * (a nearest neighbour always exists, relevant or not). Lexical matches always count.
   */
  async relevant(principal: Principal, query: string, collectionIds: readonly string[], limit: number, signal?: AbortSignal): Promise<SearchResult[]> {
    const { results } = await this.search(principal, { query, collectionIds, limit }, signal);
    return results.filter((r) => r.scores.lexical !== undefined || (r.scores.vector ?? 0) >= this.options.minVectorScore);
  }

  // ── stats ────────────────────────────────────────────────────────────────

  async stats(principal: Principal, scope: 'mine' | 'all'): Promise<Stats> {
    if (scope === 'all' && principal.role !== 'admin') throw AppError.forbidden('Only admins can see statistics for all users.');
    const raw = await repo.stats(this.db, scope === 'all' ? undefined : principal.userId);
    const byStatus = { pending: 0, processing: 0, ready: 0, failed: 0 };
    let documents = 0;
    let bytes = 0;
    for (const r of raw.byStatus) {
      if (r.status in byStatus) byStatus[r.status as keyof typeof byStatus] = r.n;
      documents += r.n;
      bytes += r.bytes;
    }
    return { collections: raw.collections, documents, chunks: raw.chunks, bytes, documents_by_status: byStatus };
  }
}

export function tooLarge(maxBytes: number): AppError {
  return new AppError('payload_too_large', `The file is larger than the ${formatMb(maxBytes)} upload limit (MAX_UPLOAD_SIZE_MB).`, 413);
}

function formatMb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes % (1024 * 1024) === 0 ? 0 : 1)} MB`;
}

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === '23505' || e.code === 'SQLITE_CONSTRAINT_UNIQUE' || /UNIQUE constraint failed/.test(e.message ?? '');
}

function toCollectionView(row: CollectionRow, documentCount: number): CollectionView {
  return { id: row.id, name: row.name, description: row.description, document_count: documentCount, created_at: row.created_at, updated_at: row.updated_at };
}

export function toDocumentView(row: DocumentRow): DocumentView {
  return {
    id: row.id, collection_id: row.collection_id, filename: row.filename, kind: row.kind, media_type: row.media_type, bytes: row.bytes, sha256: row.sha256,
    status: row.status, error: row.error, job_id: row.job_id, chunk_count: row.chunk_count, embedding_model: row.embedding_model, created_at: row.created_at, updated_at: row.updated_at,
  };
}
