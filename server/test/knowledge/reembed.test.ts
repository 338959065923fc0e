import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createKnowledgeIndex } from '../../src/modules/knowledge/search/index.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeEmbeddings, type FakeEmbeddings } from '../helpers/fake-embeddings.js';
import { bearer, signUp } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';
import { ingest, search } from './helpers.js';

describeEachDatabase('knowledge: changing the embedding model', (db) => {
  let embeddings: FakeEmbeddings;
  let s: TestServer | undefined;
  beforeAll(async () => {
    embeddings = await startFakeEmbeddings();
  });
  afterAll(async () => {
    await s?.close();
    await embeddings?.close();
  });

  const start = (model: string) => startServer(db(), { EMBEDDINGS_BASE_URL: embeddings.url, EMBEDDINGS_MODEL: model, JOB_POLL_MS: '50' });

  it('re-embeds every document in the background after a restart with another model, then drops the old vectors', async () => {
    s = await start('embed-v1');
    const user = await signUp(s);
    const garage = await ingest(s, user, 'garage.md', '# Garage\n\nAutomobile servicing schedule: every twelve months.\n');
    await ingest(s, user, 'kitchen.md', '# Kitchen\n\nBake the bread at two hundred degrees.\n');
    expect(garage.embedding_model).toBe('embed-v1');
    await s.close();

    s = await start('embed-v2');
    const deadline = Date.now() + 20_000;
    for (;;) {
      const doc = await request<{ embedding_model: string | null }>(`${s.url}/documents/${garage.id}`, { headers: bearer(user.access_token) });
      if (doc.body.embedding_model === 'embed-v2') break;
      if (Date.now() > deadline) throw new Error(`still ${doc.body.embedding_model}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const job = await s.server.keel.context.database.db.selectFrom('jobs').select(['status', 'result']).where('type', '=', 'knowledge.reembed').executeTakeFirstOrThrow();
    expect(job.status).toBe('succeeded');
    const index = await createKnowledgeIndex(s.server.keel.context.database, pino({ level: 'silent' }));
    expect(await index.chunksMissingVectors('embed-v2', 100)).toEqual([]);
    // The old model's vectors are gone: every chunk lacks one under embed-v1.
    expect((await index.chunksMissingVectors('embed-v1', 100)).length).toBeGreaterThanOrEqual(2);
    // Vector search runs on the new model's vectors.
    const found = await search(s, user, { query: 'car maintenance plan', mode: 'vector' });
    expect(found.body.results[0]!.document_id).toBe(garage.id);
    expect(embeddings.requests.at(-1)!.body).toMatchObject({ model: 'embed-v2' });
  });
});
