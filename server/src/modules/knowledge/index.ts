import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { Database } from '../../db/database.js';
import type { Principal } from '../../platform/auth.js';
import type { JobQueue } from '../../platform/jobs.js';
import type { KeelModule } from '../../platform/module.js';
import type { LlmGateway } from '../llm/llm.service.js';
import { AnswerService } from './answer.js';
import { createEmbedder, type Embedder } from './embeddings/index.js';
import { registerIngestion, scheduleReembedIfNeeded, type IngestionDeps } from './ingestion.js';
import { knowledgeRoutes } from './knowledge.routes.js';
import { KnowledgeService } from './knowledge.service.js';
import { createKnowledgeIndex } from './search/index.js';
import { createWebSearch } from './web-search/index.js';

export interface Knowledge {
  readonly service: KnowledgeService;
  readonly module: KeelModule;
  readonly embedder: Embedder | undefined;
  /** For chat's grounding: the caller's relevant passages. */
  retrieve(principal: Principal, query: string, collectionIds: readonly string[], limit: number): Promise<Array<{ chunk_id: string; document_id: string; filename: string; text: string }>>;
  /** After the job workers start: queue a re-embed if the embedding model changed. */
  afterStart(): Promise<void>;
}

/**
 * The knowledge base (issue #6): its search index and embedder, the ingestion jobs registered on the
 * shared queue, the service and the routes.
 */
export async function createKnowledge(deps: { config: Config; database: Database; jobs: JobQueue; gateway: LlmGateway; logger: Logger }): Promise<Knowledge> {
  const { config, database, jobs, logger } = deps;
  const index = await createKnowledgeIndex(database, logger);
  const embedder = createEmbedder(config.knowledge.embeddings, logger);
  const webSearch = createWebSearch(config.knowledge.webSearch, logger);
  const service = new KnowledgeService(database, jobs, index, embedder, logger, {
    maxUploadBytes: config.maxUploadSizeMb * 1024 * 1024,
    allowedExtensions: config.allowedExtensions,
    storageQuotaBytes: config.knowledge.storageQuotaMb * 1024 * 1024,
    minVectorScore: config.knowledge.minVectorScore,
  });
  const answers = new AnswerService(service, deps.gateway, webSearch ? { client: webSearch, maxResults: config.knowledge.webSearch.maxResults } : undefined, config.knowledge.answerPreset, logger);
  const ingestion: IngestionDeps = { database, jobs, index, embedder, logger, chunking: config.knowledge.chunking };
  registerIngestion(ingestion);
  return {
    service,
    embedder,
    module: async (app, ctx) => knowledgeRoutes(app, ctx, service, answers),
    retrieve: async (principal, query, collectionIds, limit) =>
      (await service.relevant(principal, query, collectionIds, limit)).map((r) => ({ chunk_id: r.chunk_id, document_id: r.document_id, filename: r.filename, text: r.text })),
    afterStart: async () => {
      await scheduleReembedIfNeeded(ingestion).catch((err: unknown) => logger.error({ err }, 'could not check whether documents need re-embedding'));
    },
  };
}
