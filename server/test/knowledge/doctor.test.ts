import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteDatabase, type TestDatabase } from '../helpers/databases.js';
import { startFakeEmbeddings, type FakeEmbeddings } from '../helpers/fake-embeddings.js';
import { runKeel } from '../helpers/process.js';

const SECRET_KEY = 'doctor-secret-0123456789abcdefghijklmnopqrstuvwxyz';

describe('keel doctor checks the embeddings provider', () => {
  let db: TestDatabase;
  let fake: FakeEmbeddings;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    fake = await startFakeEmbeddings();
  });
  afterAll(async () => {
    await fake?.close();
    await db?.cleanup();
  });

  const doctor = (env: Record<string, string>) => runKeel(['doctor'], { ...db.env, SECRET_KEY, ...env });

  it('says when none is configured (lexical search only), without failing', async () => {
    const r = await doctor({});
    expect(r.stdout).toMatch(/no embeddings configured .*lexical only/);
    expect(r.code).toBe(0);
  });

  it('reports a provider that answers', async () => {
    const r = await doctor({ EMBEDDINGS_BASE_URL: fake.url, EMBEDDINGS_MODEL: 'fake-embed' });
    expect(r.stdout).toContain('✓ embeddings fake-embed');
    expect(r.code).toBe(0);
  });

  it('fails on a provider that does not answer', async () => {
    const r = await doctor({ EMBEDDINGS_BASE_URL: 'http://127.0.0.1:1/v1', EMBEDDINGS_MODEL: 'fake-embed' });
    expect(r.stdout).toContain('✗ embeddings fake-embed do not answer');
    expect(r.code).toBe(1);
  });
});
