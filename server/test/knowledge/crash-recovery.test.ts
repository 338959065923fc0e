import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../src/db/database.js';
import { loadConfig } from '../../src/config.js';
import { createKnowledgeIndex } from '../../src/modules/knowledge/search/index.js';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeEmbeddings, type FakeEmbeddings } from '../helpers/fake-embeddings.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { spawnKeel, type KeelProcess } from '../helpers/process.js';
import { request, type TestServer } from '../helpers/server.js';

const SECTIONS = 24;
const document = Array.from({ length: SECTIONS }, (_, i) => `## Section ${i}\n\nParagraph number ${i} about lighthouse keeping and the lamp's weekly care.\n`).join('\n');

describeEachDatabase('knowledge: a process killed during ingestion', (db) => {
  let embeddings: FakeEmbeddings;
  let database: Database;
  const running: KeelProcess[] = [];

  beforeAll(async () => {
    embeddings = await startFakeEmbeddings();
    const config = loadConfig({ NODE_ENV: 'test', SECRET_KEY: 'crash-test-secret-0123456789abcdefghij', ...db().env }, { persistDevSecret: false });
    database = openDatabase(config.database, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    for (const p of running) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await database?.close();
    await embeddings?.close();
  });

  const start = async (): Promise<{ p: KeelProcess; url: string }> => {
    const p = spawnKeel(['serve'], {
      ...db().env, NODE_ENV: 'test', PORT: '0', LOG_LEVEL: 'info', SECRET_KEY: 'crash-test-secret-0123456789abcdefghij',
      EMBEDDINGS_BASE_URL: embeddings.url, EMBEDDINGS_MODEL: 'fake-embed', EMBEDDINGS_BATCH_SIZE: '8',
      JOB_LEASE_SECONDS: '2', JOB_POLL_MS: '100',
    });
    running.push(p);
    return { p, url: await p.listening() };
  };

  it('finishes the job after a restart (its lease ran out) with no duplicate chunks', async () => {
    const first = await start();
    const server = { url: first.url, config: { dataDir: db().dataDir } } as unknown as TestServer;
    const user: TestUser = await signUp(server);

    // The embeddings provider hangs, so the job is caught mid-way: chunks written, vectors not.
    embeddings.stall(true);
    const upload = await request<{ document: { id: string }; job: { id: string } }>(`${first.url}/documents`, { method: 'POST', headers: bearer(user.access_token), json: { filename: 'lighthouse.md', content: `# Lighthouse\n\n${document}` } });
    expect(upload.status).toBe(202);
    const { document: doc, job } = upload.body;
    await until(() => embeddings.requests.length > 0, 'the job to reach embedding');
    first.p.child.kill('SIGKILL');
    expect(await first.p.exited).toBe('SIGKILL');

    const chunksBefore = await countChunks(database, doc.id);
    expect(chunksBefore).toBeGreaterThanOrEqual(SECTIONS);
    const orphan = await database.db.selectFrom('jobs').selectAll().where('id', '=', job.id).executeTakeFirstOrThrow();
    expect(orphan).toMatchObject({ status: 'running', attempts: 1 });

    embeddings.stall(false);
    const second = await start();
    await until(async () => (await request<{ status: string }>(`${second.url}/documents/${doc.id}`, { headers: bearer(user.access_token) })).body.status === 'ready', 'the document to be ready', 20_000);

    const finished = await database.db.selectFrom('jobs').selectAll().where('id', '=', job.id).executeTakeFirstOrThrow();
    expect(finished).toMatchObject({ status: 'succeeded', attempts: 2 });
    // The re-run replaced the chunks: as many as one clean run makes, each with one vector.
    expect(await countChunks(database, doc.id)).toBe(chunksBefore);
    const stored = await database.db.selectFrom('documents').select('chunk_count').where('id', '=', doc.id).executeTakeFirstOrThrow();
    expect(stored.chunk_count).toBe(chunksBefore);
    const index = await createKnowledgeIndex(database, pino({ level: 'silent' }));
    expect(await index.chunksMissingVectors('fake-embed', 1000)).toEqual([]);
    const found = await request<{ results: Array<{ document_id: string }> }>(`${second.url}/search`, { method: 'POST', headers: bearer(user.access_token), json: { query: 'lighthouse lamp care', limit: 50 } });
    const ids = found.body.results.map((r) => r.document_id);
    expect(ids.length).toBeGreaterThan(0);
    expect(new Set(ids)).toEqual(new Set([doc.id]));

    second.p.child.kill('SIGTERM');
    expect(await second.p.exited).toBe(0);
  });
});

async function countChunks(database: Database, documentId: string): Promise<number> {
  const row = await database.db.selectFrom('chunks').select((eb) => eb.fn.countAll<number>().as('n')).where('document_id', '=', documentId).executeTakeFirstOrThrow();
  return Number(row.n);
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
