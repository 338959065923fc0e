import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeEachDatabase } from '../helpers/databases.js';
import { startFakeEmbeddings, type FakeEmbeddings } from '../helpers/fake-embeddings.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { startFakeSearxng, type FakeSearxng } from '../helpers/fake-searxng.js';
import { bearer, signUp, type TestUser } from '../helpers/factories.js';
import { request, startServer, type TestServer } from '../helpers/server.js';
import { ingest, search } from './helpers.js';

const unique = () => `zx${randomBytes(5).toString('hex')}`;

interface AnswerBody {
  answer: string;
  citations: Array<{ n: number; chunk_id: string; document_id: string; filename: string; text: string }>;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
}

describeEachDatabase('knowledge: hybrid search with an embedder, and answers with citations', (db) => {
  let llm: FakeOpenAI;
  let embeddings: FakeEmbeddings;
  let s: TestServer;
  let user: TestUser;

  beforeAll(async () => {
    llm = await startFakeOpenAI();
    embeddings = await startFakeEmbeddings();
    s = await startServer(db(), {
      LLM_BASE_URL: llm.url, LLM_MODEL: 'fake-model',
      EMBEDDINGS_BASE_URL: embeddings.url, EMBEDDINGS_MODEL: 'fake-embed', EMBEDDINGS_API_KEY: 'embed-secret-key-123',
      JOB_POLL_MS: '50',
    });
    user = await signUp(s);
  });
  afterAll(async () => {
    await s?.close();
    await embeddings?.close();
    await llm?.close();
  });

  it('hybrid search finds a paraphrase that lexical search alone misses', async () => {
    const doc = await ingest(s, user, 'garage.md', '# Garage\n\nAutomobile servicing schedule: every twelve months.\n');
    await ingest(s, user, 'kitchen.md', '# Kitchen\n\nBake the bread at two hundred degrees.\n');
    expect(doc.embedding_model).toBeTruthy();
    // A chunk is embedded with its heading path above its text.
    const inputs = embeddings.requests.flatMap((r) => ((r.body as { input?: unknown }).input as string[] | undefined) ?? []);
    expect(inputs).toContain('Garage\n\nAutomobile servicing schedule: every twelve months.');

    const lexical = await search(s, user, { query: 'car maintenance plan', mode: 'lexical' });
    expect(lexical.body.mode).toBe('lexical');
    expect(lexical.body.results.map((r) => r.document_id)).not.toContain(doc.id);

    const hybrid = await search(s, user, { query: 'car maintenance plan' });
    expect(hybrid.body.mode).toBe('hybrid');
    expect(hybrid.body.results[0]!.document_id).toBe(doc.id);
    expect(hybrid.body.results[0]!.scores.vector).toBeGreaterThan(0);

    const vector = await search(s, user, { query: 'car maintenance plan', mode: 'vector' });
    expect(vector.body.mode).toBe('vector');
    expect(vector.body.results[0]!.document_id).toBe(doc.id);
    // The provider key is sent to the provider, never shown to the client.
    expect(embeddings.requests.at(-1)!.headers.authorization).toBe('Bearer embed-secret-key-123');
  });

  it('POST /search/llm answers from the documents and cites them as [n]', async () => {
    const word = unique();
    const doc = await ingest(s, user, 'oslo.md', `# Norway\n\nThe capital of Norway is Oslo, codename ${word}.\n`);
    llm.behave({ reply: 'The capital is Oslo [1].' });
    const res = await request<AnswerBody>(`${s.url}/search/llm`, { method: 'POST', headers: bearer(user.access_token), json: { query: `What is the capital of Norway ${word}?` } });
    expect(res.status).toBe(200);
    expect(res.body.answer).toBe('The capital is Oslo [1].');
    expect(res.body.citations[0]).toMatchObject({ n: 1, document_id: doc.id, filename: 'oslo.md' });
    expect(res.body.citations[0]!.text).toContain('Oslo');
    expect(res.body.usage!.completion_tokens).toBeGreaterThan(0);
    // The passages were given to the model, numbered, under an instruction to cite and not to invent.
    const system = (llm.requests.at(-1)!.body as { messages: Array<{ role: string; content: string }> }).messages[0]!;
    expect(system.role).toBe('system');
    expect(system.content).toContain('[1] oslo.md');
    expect(system.content).toMatch(/do not guess/);
    // Metered like any gateway call, under its own endpoint.
    const usage = await s.server.keel.context.database.db.selectFrom('usage_events').select(['endpoint', 'user_id']).where('user_id', '=', user.id).where('endpoint', '=', '/search/llm').execute();
    expect(usage).toHaveLength(1);
  });

  it('streams citations, deltas and done over SSE', async () => {
    const word = unique();
    await ingest(s, user, 'tides.md', `# Tides\n\nSpring tides ${word} happen at new and full moon.\n`);
    llm.behave({ reply: 'At new and full moon [1].' });
    const res = await fetch(`${s.url}/search/llm`, { method: 'POST', headers: { ...bearer(user.access_token), 'content-type': 'application/json' }, body: JSON.stringify({ query: `When do spring tides ${word} happen?`, stream: true }) });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const text = await res.text();
    const events = [...text.matchAll(/event: (\w+)\ndata: (.*)\n/g)].map((m) => ({ event: m[1]!, data: JSON.parse(m[2]!) as Record<string, unknown> }));
    expect(events[0]!.event).toBe('citations');
    expect(events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('')).toBe('At new and full moon [1].');
    expect(events.at(-1)).toMatchObject({ event: 'done', data: { answer: 'At new and full moon [1].' } });
  });

  it('says plainly when nothing relevant was found, without calling a model', async () => {
    const fresh = await signUp(s);
    await ingest(s, fresh, 'bread.md', '# Bread\n\nKnead the dough for ten minutes.\n');
    const calls = llm.requests.length;
    const res = await request<AnswerBody>(`${s.url}/search/llm`, { method: 'POST', headers: bearer(fresh.access_token), json: { query: 'quantum chromodynamics lattice' } });
    expect(res.status).toBe(200);
    expect(res.body.citations).toEqual([]);
    expect(res.body.answer).toMatch(/could not find anything relevant/);
    expect(res.body.usage).toBeNull();
    expect(llm.requests.length).toBe(calls);
  });

  it('grounds a chat conversation in its collections, citing real chunks', async () => {
    const word = unique();
    const col = await request<{ id: string }>(`${s.url}/collections`, { method: 'POST', headers: bearer(user.access_token), json: { name: 'travel' } });
    const doc = await ingest(s, user, 'fjords.md', `# Fjords\n\nThe Geirangerfjord ${word} is in Norway.\n`, col.body.id);
    llm.behave({ reply: 'It is in Norway [1].' });
    const conv = await request<{ id: string }>(`${s.url}/conversations`, { method: 'POST', headers: bearer(user.access_token), json: { collection_ids: [col.body.id] } });
    const sent = await request<{ citations: Array<{ document_id: string }> }>(`${s.url}/conversations/${conv.body.id}/messages`, { method: 'POST', headers: bearer(user.access_token), json: { content: `Where is the Geirangerfjord ${word}?` } });
    expect(sent.status).toBe(200);
    expect(sent.body.citations.map((c) => c.document_id)).toContain(doc.id);
  });
});

describeEachDatabase('knowledge: search without an embedder', (db) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer(db(), { JOB_POLL_MS: '50' });
  });
  afterAll(async () => {
    await s?.close();
  });

  it('runs lexically whatever mode is asked, and says so', async () => {
    const user = await signUp(s);
    const word = unique();
    await ingest(s, user, 'a.md', `# A\n\n${word}`);
    for (const mode of ['hybrid', 'vector', undefined]) {
      const res = await search(s, user, { query: word, ...(mode ? { mode } : {}) });
      expect(res.body.mode).toBe('lexical');
      expect(res.body.results).toHaveLength(1);
    }
  });
});

describeEachDatabase('knowledge: the web-search fallback (SearXNG)', (db) => {
  let llm: FakeOpenAI;
  let searx: FakeSearxng;
  let s: TestServer;
  beforeAll(async () => {
    llm = await startFakeOpenAI();
    searx = await startFakeSearxng();
    s = await startServer(db(), { LLM_BASE_URL: llm.url, LLM_MODEL: 'fake-model', WEB_SEARCH_URL: searx.url, WEB_SEARCH_MAX_RESULTS: '3', JOB_POLL_MS: '50' });
  });
  afterAll(async () => {
    await s?.close();
    await searx?.close();
    await llm?.close();
  });

  it('answers from web results when the documents have nothing relevant, citing their urls', async () => {
    const user = await signUp(s);
    llm.behave({ reply: 'From the web [1].' });
    const res = await request<AnswerBody & { citations: Array<{ url?: string; chunk_id: string | null }> }>(`${s.url}/search/llm`, { method: 'POST', headers: bearer(user.access_token), json: { query: 'aurora forecast tonight' } });
    expect(res.status).toBe(200);
    expect(res.body.answer).toBe('From the web [1].');
    expect(res.body.citations).toHaveLength(3);
    expect(res.body.citations[0]).toMatchObject({ n: 1, chunk_id: null, url: 'https://example.com/aurora-forecast-tonight/1' });
    expect(searx.requests.at(-1)!.query.q).toBe('aurora forecast tonight');
  });

  it('uses the documents first, and a web search that fails means "nothing found", not an error', async () => {
    const user = await signUp(s);
    const word = unique();
    await ingest(s, user, 'local.md', `# Local\n\nThe ${word} is documented here.`);
    const before = searx.requests.length;
    llm.behave({ reply: 'Documented [1].' });
    const local = await request<AnswerBody>(`${s.url}/search/llm`, { method: 'POST', headers: bearer(user.access_token), json: { query: `What is the ${word}?` } });
    expect(local.body.citations[0]!.filename).toBe('local.md');
    expect(searx.requests.length).toBe(before);

    searx.failNext(1, 500);
    const down = await request<AnswerBody>(`${s.url}/search/llm`, { method: 'POST', headers: bearer(user.access_token), json: { query: 'volcanic ash advisories' } });
    expect(down.status).toBe(200);
    expect(down.body.citations).toEqual([]);
    expect(down.body.answer).toMatch(/could not find anything relevant/);
  });
});
